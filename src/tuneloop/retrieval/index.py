"""The vector index protocol, and the embedded default that needs no server.

A :class:`VectorIndex` maps document ids to unit vectors and remembers which text (its
content hash) each vector was made from, so a caller can tell stale entries from current
ones. Anything with these methods can serve — an external vector database (Qdrant,
pgvector, ...) implements the same few calls, keeping the hash as payload.

The embedded default, :class:`EmbeddedIndex`, is an HNSW graph from **usearch** (f16
vectors) when it is installed (``pip install 'tuneloop[retrieval]'``), else hnswlib, else
exact numpy search (no dependency; fine up to ~20,000 documents).

Why usearch — the five embedded libraries measured at 100,000 x 384 on this project's
2-core CPU (shared, load ~7), 1,000 held-out queries one at a time, HNSW M=16,
efConstruction=128, efSearch=64 (``python -m benchmarks.bench_retrieval --phase index``;
``benchmarks/results/retrieval.json``):

    engine               recall@10  CPU p50/p99 ms  build CPU-s  memory  deletes   after 5% churn
    usearch f16          0.9995     0.25 / 0.45     60           98 MB   tombstone recall 0.999
    hnswlib              1.0        0.14 / 0.23     42           173 MB  tombstone recall 1.0
    faiss HNSWFlat       0.9994     0.17 / 0.28     43           161 MB  no        113 deleted hits
    faiss IVFFlat 1024   1.0 (*)    0.22 / 0.32     11           180 MB  yes       recall 1.0
    LanceDB IVF_HNSW_SQ  0.977      4.5 / 16        42           on disk yes       (new rows unindexed)
    LanceDB IVF_PQ       0.994      6.6 / 35        81           on disk yes       (new rows unindexed)
    sqlite-vec (exact)   1.0        48 / 51         1            on disk yes       exact scan
    numpy exact          1.0        ~4-10 / 22      -            147 MB  yes       -

- Only the in-memory HNSW libraries meet the targets (recall@10 >= 0.95, p99 <= 5 ms):
  LanceDB answers in 4-10 ms at p50 with 16-35 ms CPU at p99; sqlite-vec 0.1 has no ANN
  index (and needs a sqlite3 that loads extensions, which this Python's lacks).
- hnswlib is the fastest, but every search first embeds its query with all-MiniLM-L6-v2
  (~9-10 ms of CPU here), so 0.2 ms in the index does not show; faiss HNSW cannot delete,
  and a continuously updated index must. (usearch and hnswlib both delete by tombstone and
  reuse the slot; searches skip it, and recall held after replacing 5% of the corpus.)
- Memory decides between usearch and hnswlib: f16 vectors hold the index in 98 MB instead
  of 173 MB at the same recall, and the previous retriever's index stays loaded for an
  instant rollback, so each index counts twice. usearch also ships wheels for every
  platform; hnswlib is source-only on PyPI (a C++ compiler at install time). usearch i8
  would be smaller still (61 MB) but loses recall (0.89).

(*) only because the synthetic vectors are tightly clustered; its k-means lists are trained
on the corpus and must be retrained as the corpus drifts.

Pick another engine with ``engine="hnswlib"`` where query CPU matters more than memory.

>>> import numpy as np
>>> ix = EmbeddedIndex(dim=3, engine="numpy")
>>> ix.upsert(["a", "b"], np.eye(3, dtype=np.float32)[:2], ["h1", "h2"])
>>> [hit[0] for hit in ix.search(np.array([[0.9, 0.1, 0.0]], np.float32), k=2)[0]]
['a', 'b']
>>> ix.delete(["a"]), len(ix)
(1, 1)
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from tuneloop.errors import ConfigError, StoreError, ValidationError
from tuneloop.retrieval import _engines

__all__ = ["VectorIndex", "EmbeddedIndex", "label_of", "available_engines"]

available_engines = _engines.available_engines
Hits = list[list[tuple[str, float]]]


@runtime_checkable
class VectorIndex(Protocol):
    """What the retrieval SDK needs from a vector store.

    ``watermark`` is the ``documents.updated_at`` up to which the index has applied
    changes; :meth:`flush` makes the current state durable (a no-op for a server).
    """

    dim: int
    watermark: float | None

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, hashes: Sequence[str]) -> None: ...
    def delete(self, ids: Sequence[str]) -> int: ...
    def search(self, vectors: np.ndarray, k: int) -> Hits: ...
    def content_hashes(self, ids: Sequence[str]) -> dict[str, str]: ...
    def __len__(self) -> int: ...
    def flush(self) -> None: ...


def label_of(doc_id: str) -> int:
    """The engine label of a document id: 63 bits of its BLAKE2b hash (stable across processes).

    >>> label_of("doc-1") == label_of("doc-1"), 0 <= label_of("x") < 2**63
    (True, True)
    """
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little") >> 1


def _unit(vectors: np.ndarray, dim: int) -> np.ndarray:
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.shape[1] != dim:
        raise ValidationError(f"vectors have shape {v.shape}; this index holds {dim}-d vectors", field="vectors")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


class EmbeddedIndex:
    """An in-process vector index saved as snapshots in a folder.

    Layout of ``path``: ``CURRENT`` names the newest complete snapshot folder
    (``snap-000007/`` holding ``index.bin``, ``keys.npz`` and ``meta.json``). A save
    writes a new snapshot, then replaces ``CURRENT`` atomically, so a crash mid-save
    leaves the previous snapshot in force and a reader never sees half a file.
    """

    def __init__(self, dim: int, *, engine: str = "auto", path: str | os.PathLike | None = None) -> None:
        if dim <= 0:
            raise ConfigError(f"dim must be positive, not {dim}")
        self.dim, self.path = dim, Path(path) if path else None
        self._engine = _engines.make_engine(engine, dim)
        self.engine = self._engine.name
        self._ids: dict[int, str] = {}
        self._hashes: dict[str, str] = {}
        self.watermark: float | None = None
        self._lock = threading.RLock()
        self.dirty = 0  # changes since the last save

    def __len__(self) -> int:
        return len(self._hashes)

    @property
    def threads(self) -> int:
        """Threads a bulk add may use (1 by default: a serving process leaves the CPU to queries)."""
        return self._engine.threads

    @threads.setter
    def threads(self, n: int) -> None:
        self._engine.threads = max(1, int(n))

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._hashes

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._hashes)

    def content_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        with self._lock:
            return {i: self._hashes[i] for i in ids if i in self._hashes}

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, hashes: Sequence[str]) -> None:
        """Add or replace the vectors of ``ids`` (unit-normalised here)."""
        ids = list(ids)
        if len(ids) != len(hashes) or len(set(ids)) != len(ids):
            raise ValidationError("upsert needs one hash per id and no repeated ids", field="ids")
        vecs = _unit(vectors, self.dim)
        if len(vecs) != len(ids):
            raise ValidationError(f"{len(ids)} ids but {len(vecs)} vectors", field="vectors")
        labels = np.fromiter((label_of(i) for i in ids), dtype=np.int64, count=len(ids))
        with self._lock:
            for label, doc_id in zip(labels.tolist(), ids):
                other = self._ids.get(label)
                if other is not None and other != doc_id:  # 2^-63 per pair; loud rather than silent
                    raise StoreError(f"document ids {doc_id!r} and {other!r} share an index label")
            present = np.array([lab for lab, i in zip(labels.tolist(), ids) if i in self._hashes], dtype=np.int64)
            self._engine.remove(present)
            self._engine.add(labels, vecs)
            for label, doc_id, h in zip(labels.tolist(), ids, hashes):
                self._ids[label], self._hashes[doc_id] = doc_id, h
            self.dirty += len(ids)

    def delete(self, ids: Sequence[str]) -> int:
        """Remove ``ids`` (absent ones are skipped); returns how many were removed."""
        with self._lock:
            gone = [i for i in dict.fromkeys(ids) if i in self._hashes]
            labels = np.array([label_of(i) for i in gone], dtype=np.int64)
            self._engine.remove(labels)
            for doc_id, label in zip(gone, labels.tolist()):
                del self._hashes[doc_id]
                self._ids.pop(label, None)
            self.dirty += len(gone)
            return len(gone)

    def search(self, vectors: np.ndarray, k: int) -> Hits:
        """For each query vector, up to ``k`` ``(id, score)`` pairs, best first (score = cosine)."""
        if k < 1:
            raise ValidationError(f"k must be at least 1, got {k}", field="k")
        q = _unit(vectors, self.dim)
        with self._lock:
            labels, scores = self._engine.search(q, k)
            out: Hits = []
            for row_l, row_s in zip(labels.tolist(), scores.tolist()):
                out.append([(self._ids[lab], float(s)) for lab, s in zip(row_l, row_s)
                            if lab >= 0 and lab in self._ids])
        return out

    # ------------------------------------------------------------ persistence
    def flush(self) -> None:
        """Save when there are unsaved changes (and a path)."""
        if self.path is not None and self.dirty:
            self.save()

    def save(self, path: str | os.PathLike | None = None, *, keep: int = 2) -> Path:
        """Write a new snapshot under ``path`` and point ``CURRENT`` at it; returns the snapshot folder."""
        root = Path(path or self.path or "")
        if not str(root):
            raise ConfigError("this index has no path to save to")
        root.mkdir(parents=True, exist_ok=True)
        with self._lock:
            snap = root / f"snap-{time.time_ns():020d}-{os.getpid()}"
            snap.mkdir()
            self._engine.save(snap / "index.bin")
            ids = np.array(list(self._hashes), dtype=object)
            with open(snap / "keys.npz", "wb") as fh:
                np.savez(fh, ids=np.array(ids, dtype=str), hashes=np.array(list(self._hashes.values()), dtype=str))
            meta = {"engine": self.engine, "dim": self.dim, "count": len(self), "watermark": self.watermark}
            (snap / "meta.json").write_text(json.dumps(meta))
            _fsync_dir(snap)
            tmp = root / f"CURRENT.{os.getpid()}.tmp"
            tmp.write_text(snap.name)
            os.replace(tmp, root / "CURRENT")
            self.dirty = 0
        _prune(root, keep)
        return snap

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EmbeddedIndex":
        """The snapshot ``CURRENT`` names under ``path`` (StoreError when there is none)."""
        root = Path(path)
        try:
            snap = root / (root / "CURRENT").read_text().strip()
            meta = json.loads((snap / "meta.json").read_text())
            keys = np.load(snap / "keys.npz")
        except (OSError, ValueError) as exc:
            raise StoreError(f"no readable index snapshot in {root}: {exc}", path=str(root)) from exc
        ix = cls.__new__(cls)
        ix.dim, ix.path, ix.engine = int(meta["dim"]), root, meta["engine"]
        ids, hashes = keys["ids"].tolist(), keys["hashes"].tolist()
        labels = np.fromiter((label_of(i) for i in ids), dtype=np.int64, count=len(ids))
        ix._engine = _engines.load_engine(meta["engine"], snap / "index.bin", ix.dim, labels)
        ix._hashes = dict(zip(ids, hashes))
        ix._ids = {label_of(i): i for i in ids}
        ix.watermark, ix.dirty, ix._lock = meta.get("watermark"), 0, threading.RLock()
        return ix

    @staticmethod
    def exists(path: str | os.PathLike) -> bool:
        return (Path(path) / "CURRENT").is_file()


def _fsync_dir(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb+") as fh:
            os.fsync(fh.fileno())


def _prune(root: Path, keep: int) -> None:
    """Drop all but the newest ``keep`` snapshots (never the one CURRENT names)."""
    try:
        current = (root / "CURRENT").read_text().strip()
    except OSError:
        return
    snaps = sorted(p for p in root.glob("snap-*") if p.is_dir())
    for old in snaps[:-keep] if keep > 0 else snaps:
        if old.name != current:
            shutil.rmtree(old, ignore_errors=True)


def index_stats(index: VectorIndex) -> Mapping[str, object]:
    return {"count": len(index), "dim": index.dim, "watermark": index.watermark,
            "engine": getattr(index, "engine", type(index).__name__)}
