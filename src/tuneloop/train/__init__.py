"""Trainer backends behind one protocol: each turns a dataset file into a candidate model.

    Trainer, TrainResult      the protocol (base.py)
    TRLTrainer, TRLConfig     LoRA SFT / DPO / KTO with TRL (trl_trainer.py, trl_config.py)
    CommandTrainer            any command line with placeholders (command.py)
    llamafactory_trainer      llamafactory-cli train with a generated YAML (llamafactory.py)
    CallableTrainer           seed 002's train_fn(data_path) (callable.py)
    RetrieverTrainer          all-MiniLM-L6-v2 on (query, positive, negative) triplets (retriever.py)
    PromptTrainer             a candidate prompt from a YAML list or a model's rewrite (prompt.py)
    TrainingRunner            runs any of them in a subprocess, records train_runs (runner.py)

Names load lazily, so ``import tuneloop.train`` does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Trainer": "base", "TrainResult": "base", "TRLTrainer": "trl_trainer", "TRLConfig": "trl_config",
    "CommandTrainer": "command", "llamafactory_trainer": "llamafactory",
    "write_llamafactory_config": "llamafactory", "CallableTrainer": "callable", "TrainingRunner": "runner",
    "RetrieverTrainer": "retriever", "RetrieverConfig": "retriever",
    "PromptTrainer": "prompt", "PromptTrainerConfig": "prompt",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"tuneloop.train.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tuneloop.train' has no attribute {name!r}")
