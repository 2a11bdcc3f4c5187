"""Model backends behind one protocol (see base.py), default-model resolution, embedders.

    ModelBackend, Completion          the protocol (base.py)
    LocalBackend, LocalModelPool      transformers + LoRA adapters sharing one base (local.py)
    OpenAIBackend                     any OpenAI-compatible upstream (openai_backend.py)
    ScriptedBackend                   deterministic answers, tests only (scripted.py)
    backend_for_version               a model_versions row -> its backend (factory.py)
    resolve_model, build_tiny_model   'smollm2' / 'tiny' / a path -> a local folder
    MiniLMEmbedder, HashingEmbedder   text -> unit vectors (embed.py)
    merge_adapter                     base + LoRA adapter -> one exportable model (merge.py)

Names load lazily, so ``import tuneloop.models`` does not import torch, numpy or httpx.
"""
from __future__ import annotations

import importlib
from typing import Any

from tuneloop.models.base import Completion, Message, ModelBackend

_LAZY = {
    "LocalBackend": "local", "LocalModelPool": "local", "OpenAIBackend": "openai_backend",
    "ScriptedBackend": "scripted", "backend_for_version": "factory", "apply_prompt": "factory",
    "PromptedBackend": "factory", "resolve_model": "resolve", "build_tiny_model": "tiny",
    "merge_adapter": "merge", "Embedder": "embed", "MiniLMEmbedder": "embed", "HashingEmbedder": "embed", "get_embedder": "embed",
}

__all__ = ["Completion", "Message", "ModelBackend", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"tuneloop.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tuneloop.models' has no attribute {name!r}")
