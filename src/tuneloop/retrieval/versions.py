"""What a retriever or reranker version name means: an embedder or a cross-encoder to load.

A retriever version is either a registered version of kind ``retriever`` (its
``model_path`` is a sentence-embedding folder, or ``params["embedder"]`` names an
embedder) or an embedder name that :func:`tuneloop.models.embed.get_embedder` knows
(``minilm``, ``hashing-64``, a folder). A reranker version is a registered version of
kind ``reranker`` (its ``model_path`` is a cross-encoder folder), ``reranker:champion``
(or just ``champion``), or a folder.

Loaded models are cached per process: loading all-MiniLM-L6-v2 takes seconds.

>>> from tuneloop.store import Database
>>> emb = load_embedder(Database.open("sqlite:///:memory:"), "hashing-32")
>>> emb.dim, version_name(emb)
(32, 'hashing-32')
"""
from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tuneloop.errors import ConfigError, NotFoundError, ValidationError
from tuneloop.models.embed import Embedder, get_embedder
from tuneloop.store import Database

__all__ = ["Reranker", "CrossEncoderReranker", "load_embedder", "load_reranker", "version_name",
           "register_base_retriever", "use_embedder", "clear_cache", "BASE_RETRIEVER"]

BASE_RETRIEVER = "all-MiniLM-L6-v2"
_cache: dict[tuple[str, str], Any] = {}
_cache_lock = threading.Lock()


def version_name(embedder: Any) -> str:
    """The version string an embedder object stands for (its ``version`` or ``name``)."""
    return str(getattr(embedder, "version", None) or getattr(embedder, "name", None) or type(embedder).__name__)


def _registered(db: Database, name: str, kind: str):
    from tuneloop.registry.versions import Registry, alias_for

    reg = Registry(db)
    found = reg.find(name)
    if found is None and name in ("champion", alias_for("champion", kind)):
        found = reg.champion(kind)
        if found is None:
            raise NotFoundError(f"no {kind} champion is set", kind=kind)
    if found is not None and found.kind != kind:
        raise ValidationError(f"version {name!r} is a {found.kind}, not a {kind}", field="version")
    return found


def load_embedder(db: Database, version: str | Embedder) -> Embedder:
    """The embedder of a retriever ``version`` (cached); an Embedder object is returned as is."""
    if not isinstance(version, str):
        if not hasattr(version, "encode") or not hasattr(version, "dim"):
            raise ValidationError("an embedder needs encode(texts) and dim", field="embedder")
        return version
    with _cache_lock:
        if ("embedder", version) in _cache:  # registered with use_embedder (or loaded before)
            return _cache[("embedder", version)]
    found = _registered(db, version, "retriever")  # resolve aliases first: the champion changes
    key = ("embedder", found.id if found is not None else version)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    if found is None:
        emb = get_embedder(version)
    elif found.model_path:
        from tuneloop.models.embed import MiniLMEmbedder

        emb = MiniLMEmbedder(found.model_path, name=found.id)
    elif (found.params or {}).get("embedder"):
        emb = get_embedder(found.params["embedder"])
    else:
        raise ConfigError(f"retriever version {found.id!r} has neither a model_path nor params.embedder",
                          version_id=found.id)
    emb.version = key[1]  # type: ignore[attr-defined]  # the name builds and logs record
    with _cache_lock:
        _cache[key] = emb
    return emb


def use_embedder(version: str, embedder: Embedder) -> None:
    """Make ``version`` load ``embedder`` in this process (a custom or remote embedder, or a test double).

    >>> from tuneloop.models.embed import HashingEmbedder
    >>> use_embedder("my-embedder-v1", HashingEmbedder(dim=8))
    >>> load_embedder(None, "my-embedder-v1").dim
    8
    """
    if not hasattr(embedder, "encode") or not hasattr(embedder, "dim"):
        raise ValidationError("an embedder needs encode(texts) and dim", field="embedder")
    embedder.version = version  # type: ignore[attr-defined]
    with _cache_lock:
        _cache[("embedder", version)] = embedder


def register_base_retriever(db: Database, version_id: str = "minilm-base", *, promote: bool = True,
                            embedder: str = "minilm"):
    """Register the base retriever (all-MiniLM-L6-v2 from its wheel) and make it the champion.

    Idempotent: an existing version of that id is returned as it is.
    """
    from tuneloop.registry.versions import Registry

    reg = Registry(db, actor="retrieval")
    found = reg.find(version_id)
    if found is None:
        found = reg.register(version_id, kind="retriever", backend="local", base_model=BASE_RETRIEVER,
                             params={"embedder": embedder}, lineage={"source": "base", "embedder": embedder})
    if promote and reg.champion("retriever") is None:
        found = reg.promote(version_id, reason="base retriever")
    return found


# ---------------------------------------------------------------- rerankers
@runtime_checkable
class Reranker(Protocol):
    """Scores (query, document) pairs; higher is more relevant."""

    name: str

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray: ...


class CrossEncoderReranker:
    """A cross-encoder folder (BERT-like, one output logit), e.g. from :mod:`tuneloop.train.reranker`.

    >>> rr = CrossEncoderReranker("runs/reranker-1/model")   # doctest: +SKIP
    >>> rr.score("reset password", ["How to reset a password", "Shipping times"])  # doctest: +SKIP
    array([ 4.1, -3.2], dtype=float32)
    """

    def __init__(self, path: str | os.PathLike, *, name: str | None = None, max_length: int = 256,
                 batch_size: int = 32) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
            self.model = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
        except Exception as exc:  # noqa: BLE001 - name the folder that failed
            raise ConfigError(f"cannot load a cross-encoder from {path}: {exc}") from exc
        self.name = name or os.path.basename(str(path).rstrip("/"))
        self.max_length, self.batch_size = max_length, batch_size
        self._lock = threading.Lock()

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = np.zeros(len(texts), dtype=np.float32)
        with self._lock, torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                chunk = list(texts[i:i + self.batch_size])
                enc = self.tokenizer([query] * len(chunk), chunk, padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
                out[i:i + len(chunk)] = self.model(**enc).logits[:, 0].float().numpy()
        return out


def load_reranker(db: Database, version: str | Reranker | None) -> Reranker | None:
    """A reranker by version id, ``champion``, or folder (cached); None stays None."""
    if version is None or not isinstance(version, str):
        return version
    found = _registered(db, version, "reranker")  # resolve aliases first: the champion changes
    if found is None and not os.path.isdir(os.path.expanduser(version)):
        raise NotFoundError(f"reranker {version!r} is neither a registered reranker version nor a folder",
                            reranker=version)
    key = ("reranker", found.id if found is not None else os.path.abspath(os.path.expanduser(version)))
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    if found is not None:
        if not found.model_path:
            raise ConfigError(f"reranker version {found.id!r} has no model_path", version_id=found.id)
        rr = CrossEncoderReranker(found.model_path, name=found.id)
    else:
        rr = CrossEncoderReranker(key[1])
    with _cache_lock:
        _cache[key] = rr
    return rr


def clear_cache() -> None:
    """Forget loaded models (tests, or after retraining into the same folder)."""
    with _cache_lock:
        _cache.clear()
