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
           "register_base_retriever", "use_embedder", "clear_cache", "rerank_order", "BASE_RETRIEVER", "FUSIONS"]

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
#: How a reranker's scores become the final order: ``none`` (by the reranker's score alone) or
#: ``rrf`` (reciprocal-rank fusion of the retriever's and the reranker's ranks, k=60).
FUSIONS = ("none", "rrf")
RRF_K = 60


@runtime_checkable
class Reranker(Protocol):
    """Scores (query, document) pairs; higher is more relevant. An optional ``fusion``
    attribute (one of :data:`FUSIONS`, default ``none``) says how :func:`rerank_order` uses them."""

    name: str

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray: ...


def rerank_order(reranker_scores: Sequence[float], fusion: str = "none") -> np.ndarray:
    """Indices of candidates (given in the retriever's order, best first) in the final order.

    ``rrf`` ranks by 1/(60 + retriever rank) + 1/(60 + reranker rank): why — a cross-encoder
    trained for minutes on CPU is sharp where its training data was (product names, here)
    and blunt elsewhere, while a fine-tuned bi-encoder is the reverse; fusing the two
    *ranks* (not their incomparable scores) keeps what each gets right, without a weight to
    tune (benchmarks/results/retrieval.json: on the held-out queries the cross-encoder alone
    lowered MRR 0.869 -> 0.754, fused it raised it). Ties keep the retriever's order.

    >>> rerank_order([0.1, 3.0, 2.0]).tolist()          # reranker alone
    [1, 2, 0]
    >>> rerank_order([0.1, 3.0, 2.0], "rrf").tolist()   # retriever's #1 keeps its place over #3
    [1, 0, 2]
    """
    scores = np.asarray(reranker_scores, dtype=np.float64)
    if fusion == "none":
        return np.argsort(-scores, kind="stable")
    if fusion != "rrf":
        raise ConfigError(f"unknown rerank fusion {fusion!r}; use one of {list(FUSIONS)}", field="fusion")
    n = len(scores)
    rr_rank = np.empty(n, dtype=np.float64)
    rr_rank[np.argsort(-scores, kind="stable")] = np.arange(1, n + 1)
    fused = 1.0 / (RRF_K + np.arange(1, n + 1)) + 1.0 / (RRF_K + rr_rank)
    return np.argsort(-fused, kind="stable")


class CrossEncoderReranker:
    """A cross-encoder folder (BERT-like, one output logit), e.g. from :mod:`tuneloop.train.reranker`.

    >>> rr = CrossEncoderReranker("runs/reranker-1/model")   # doctest: +SKIP
    >>> rr.score("reset password", ["How to reset a password", "Shipping times"])  # doctest: +SKIP
    array([ 4.1, -3.2], dtype=float32)
    """

    def __init__(self, path: str | os.PathLike, *, name: str | None = None, max_length: int = 256,
                 batch_size: int = 32, fusion: str = "none") -> None:
        if fusion not in FUSIONS:
            raise ConfigError(f"unknown rerank fusion {fusion!r}; use one of {list(FUSIONS)}", field="fusion")
        self.fusion = fusion
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
    """A reranker by version id, ``champion``, or folder (cached); None stays None.

    A registered version's ``params["fusion"]`` (``none`` | ``rrf``) becomes its ``fusion``."""
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
        rr = CrossEncoderReranker(found.model_path, name=found.id, fusion=(found.params or {}).get("fusion", "none"))
    else:
        rr = CrossEncoderReranker(key[1])
    with _cache_lock:
        _cache[key] = rr
    return rr


def clear_cache() -> None:
    """Forget loaded models (tests, or after retraining into the same folder)."""
    with _cache_lock:
        _cache.clear()
