"""Vector engines behind :class:`tuneloop.retrieval.index.EmbeddedIndex`: integer labels in,
inner-product scores out. Private: the public surface is the string-id ``VectorIndex``.

Each engine keeps unit vectors under 63-bit integer labels and answers top-k by inner
product (= cosine for unit vectors). ``add`` takes labels that are not in the engine;
``remove`` takes labels that are. The embedded index turns upserts into remove + add.

    usearch   HNSW, removal by tombstone (slot reused), f16 vectors (half the memory, same recall): the default
    hnswlib   HNSW, removal by tombstone with slot reuse (``allow_replace_deleted``)
    numpy     exact search by one matrix product: no dependency, linear in the corpus
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np

from tuneloop.errors import ConfigError

__all__ = ["Engine", "ENGINES", "available_engines", "make_engine", "load_engine"]

# HNSW settings chosen by benchmarks/bench_retrieval.py at 100,000 x 384 (recall@10 >= 0.99):
# M=16 links per node, efConstruction=128, efSearch=64 (raised to k when k is larger).
M, EF_ADD, EF_SEARCH = 16, 128, 64


class Engine(Protocol):
    name: str
    dim: int

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None: ...
    def remove(self, labels: np.ndarray) -> None: ...
    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...
    def __len__(self) -> int: ...
    def save(self, path: Path) -> None: ...


def _empty(q: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((q, k), -1, dtype=np.int64), np.full((q, k), -np.inf, dtype=np.float32)


class NumpyEngine:
    """Exact inner-product search over a growing float32 matrix (deleted rows zeroed and reused)."""

    name = "numpy"
    threads = 1

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self._vectors = np.zeros((capacity, dim), dtype=np.float32)
        self._labels = np.full(capacity, -1, dtype=np.int64)
        self._row: dict[int, int] = {}
        self._free: list[int] = []
        self._end = 0  # rows [0, _end) were used at least once

    def __len__(self) -> int:
        return len(self._row)

    def _slot(self) -> int:
        if self._free:
            return self._free.pop()
        if self._end == len(self._labels):
            grow = max(1024, len(self._labels))
            self._vectors = np.concatenate([self._vectors, np.zeros((grow, self.dim), np.float32)])
            self._labels = np.concatenate([self._labels, np.full(grow, -1, np.int64)])
        self._end += 1
        return self._end - 1

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        for label, vec in zip(labels.tolist(), vectors):
            row = self._slot()
            self._vectors[row], self._labels[row], self._row[label] = vec, label, row

    def remove(self, labels: np.ndarray) -> None:
        for label in labels.tolist():
            row = self._row.pop(label, None)
            if row is not None:
                self._vectors[row], self._labels[row] = 0.0, -1
                self._free.append(row)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = self._end
        out_l, out_s = _empty(len(vectors), k)
        if not self._row:
            return out_l, out_s
        scores = vectors @ self._vectors[:n].T
        scores[:, self._labels[:n] < 0] = -np.inf
        kk = min(k, n)
        top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < n else np.tile(np.arange(n), (len(vectors), 1))
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top, top_scores = np.take_along_axis(top, order, 1), np.take_along_axis(top_scores, order, 1)
        labels = self._labels[top]
        labels[~np.isfinite(top_scores)] = -1
        out_l[:, :kk], out_s[:, :kk] = labels, top_scores
        return out_l, out_s

    def save(self, path: Path) -> None:
        rows = np.fromiter(self._row.values(), dtype=np.int64, count=len(self._row))
        with open(path, "wb") as fh:
            np.savez(fh, labels=self._labels[rows], vectors=self._vectors[rows])

    @classmethod
    def load(cls, path: Path, dim: int, labels: np.ndarray) -> "NumpyEngine":
        data = np.load(path)
        eng = cls(dim, capacity=max(1024, len(data["labels"])))
        eng.add(data["labels"], data["vectors"])
        return eng


class UsearchEngine:
    """usearch HNSW (inner product, f16 storage)."""

    name = "usearch"
    threads = 1  # for adds; a bulk build (re-embed job) raises it, a serving process keeps 1

    def __init__(self, dim: int, dtype: str = "f16", _index=None) -> None:
        from usearch.index import Index

        self.dim, self.dtype = dim, dtype
        self._ix = _index if _index is not None else Index(
            ndim=dim, metric="ip", dtype=dtype, connectivity=M, expansion_add=EF_ADD, expansion_search=EF_SEARCH)

    def __len__(self) -> int:
        return len(self._ix)

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        if len(labels):
            self._ix.add(labels.astype(np.uint64), vectors, threads=self.threads)

    def remove(self, labels: np.ndarray) -> None:
        if len(labels):
            self._ix.remove(labels.astype(np.uint64))

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        out_l, out_s = _empty(len(vectors), k)
        if len(self._ix) == 0:
            return out_l, out_s
        self._ix.expansion_search = max(EF_SEARCH, k)
        res = self._ix.search(vectors, k, threads=1)
        keys = np.asarray(res.keys).reshape(len(vectors), -1)
        dist = np.asarray(res.distances, dtype=np.float32).reshape(len(vectors), -1)
        # one query gives Matches (no counts), several give BatchMatches
        counts = np.atleast_1d(np.asarray(res.counts)) if hasattr(res, "counts") else np.array([len(res.keys)])
        for i, c in enumerate(counts.tolist()):
            out_l[i, :c] = keys[i, :c].astype(np.int64)
            out_s[i, :c] = np.minimum(1.0 - dist[i, :c], 1.0)  # usearch's "ip" distance is 1 - ip; f16 rounds past 1
        return out_l, out_s

    def save(self, path: Path) -> None:
        self._ix.save(str(path))

    @classmethod
    def load(cls, path: Path, dim: int, labels: np.ndarray) -> "UsearchEngine":
        from usearch.index import Index

        ix = Index.restore(str(path))
        if ix is None:
            raise ConfigError(f"{path} is not a usearch index")
        return cls(dim, dtype=str(ix.dtype).split(".")[-1].lower(), _index=ix)


class HnswlibEngine:
    """hnswlib HNSW (inner product); deleted slots are reused by later adds."""

    name = "hnswlib"
    threads = 1  # for adds; a bulk build (re-embed job) raises it, a serving process keeps 1

    def __init__(self, dim: int, capacity: int = 1024, _index=None, _live: set[int] | None = None) -> None:
        import hnswlib

        self.dim = dim
        if _index is None:
            _index = hnswlib.Index(space="ip", dim=dim)
            _index.init_index(max_elements=capacity, ef_construction=EF_ADD, M=M, allow_replace_deleted=True)
        self._ix = _index
        self._ix.set_num_threads(1)
        self._live: set[int] = _live or set()

    def __len__(self) -> int:
        return len(self._live)

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        if not len(labels):
            return
        need = self._ix.element_count + len(labels)
        if need > self._ix.get_max_elements():
            self._ix.resize_index(max(need, 2 * self._ix.get_max_elements()))
        known = set(self._ix.get_ids_list())  # live and tombstoned labels
        old = np.array([lab in known for lab in labels.tolist()], dtype=bool)
        for label in labels[old].tolist():
            if label not in self._live:
                self._ix.unmark_deleted(label)
        if old.any():
            # Update in place. replace_deleted=True here would put the label in another
            # vacant slot and leave the old slot answering with the old vector.
            self._ix.add_items(vectors[old], labels[old].astype(np.uint64), replace_deleted=False)
        if (~old).any():
            self._ix.set_num_threads(self.threads)
            self._ix.add_items(vectors[~old], labels[~old].astype(np.uint64), replace_deleted=True)
            self._ix.set_num_threads(1)
        self._live.update(labels.tolist())

    def remove(self, labels: np.ndarray) -> None:
        for label in labels.tolist():
            if label in self._live:
                self._ix.mark_deleted(label)
                self._live.discard(label)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        out_l, out_s = _empty(len(vectors), k)
        kk = min(k, len(self._live))
        if kk == 0:
            return out_l, out_s
        self._ix.set_ef(max(EF_SEARCH, kk))
        labels, dist = self._ix.knn_query(vectors, k=kk)
        out_l[:, :kk], out_s[:, :kk] = labels.astype(np.int64), 1.0 - dist
        return out_l, out_s

    def save(self, path: Path) -> None:
        self._ix.save_index(str(path))

    @classmethod
    def load(cls, path: Path, dim: int, labels: np.ndarray) -> "HnswlibEngine":
        import hnswlib

        ix = hnswlib.Index(space="ip", dim=dim)
        ix.load_index(str(path), allow_replace_deleted=True)
        return cls(dim, _index=ix, _live=set(labels.tolist()))  # hnswlib cannot list its tombstones


ENGINES = {"usearch": UsearchEngine, "hnswlib": HnswlibEngine, "numpy": NumpyEngine}
_MODULES = {"usearch": "usearch", "hnswlib": "hnswlib", "numpy": "numpy"}
#: ``auto`` takes the first installed (why usearch first: see tuneloop.retrieval.index).
AUTO_ORDER = ("usearch", "hnswlib", "numpy")


def available_engines() -> tuple[str, ...]:
    """Installed engines, best first.

    >>> "numpy" in available_engines()
    True
    """
    return tuple(n for n in AUTO_ORDER if importlib.util.find_spec(_MODULES[n]) is not None)


def resolve_engine(name: str = "auto") -> str:
    if name == "auto":
        return available_engines()[0]
    if name not in ENGINES:
        raise ConfigError(f"unknown index engine {name!r}; use auto, {', '.join(ENGINES)}", field="engine")
    if name not in available_engines():
        raise ConfigError(f"index engine {name!r} is not installed: pip install 'tuneloop[ann]' "
                          f"(or pip install {name})", field="engine")
    return name


def make_engine(name: str, dim: int) -> Engine:
    return ENGINES[resolve_engine(name)](dim)


def load_engine(name: str, path: Path, dim: int, labels: np.ndarray) -> Engine:
    """Load an engine file; ``labels`` are the live labels the snapshot's keys list."""
    return ENGINES[resolve_engine(name)].load(path, dim, labels)
