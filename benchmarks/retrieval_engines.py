"""The five embedded vector engines of issue 10, side by side, for ``bench_retrieval --phase index``.

Each :class:`Candidate` wraps one library at one setting with the same few calls (build,
save/load, query one vector, add, remove), so the benchmark can build each once, query
them interleaved, and then apply the same churn to each:

    hnswlib         HNSW, M=16, efConstruction=128
    usearch_f32/f16/i8  HNSW, M=16, efConstruction=128, vectors stored as f32, f16 or int8
    faiss_hnsw      faiss IndexHNSWFlat (M=16, efConstruction=128)
    faiss_ivf1024   faiss IndexIVFFlat, 1,024 lists (trained k-means)
    lancedb_hnsw_sq LanceDB IVF_HNSW_SQ (m=16, ef_construction=128), on disk
    lancedb_ivf_pq  LanceDB IVF_PQ (256 lists, 48 sub-vectors, refine x5): LanceDB's default
    sqlite_vec      sqlite-vec ``vec0`` table (exact scan), through apsw: this Python's sqlite3
                    cannot load extensions

Absent libraries are skipped. Nothing here is used by tuneloop itself: the engines it
serves with are in ``tuneloop.retrieval._engines``.
"""
from __future__ import annotations

import ctypes
import gc
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

M, EF_ADD = 16, 128
Query = Callable[[Any, np.ndarray], np.ndarray]


@dataclass
class Candidate:
    """One engine at one build setting; ``queries`` maps a search setting to ``fn(index, q) -> ids``."""

    name: str
    library: str
    build: Callable[[np.ndarray, Path], Any]      # builds (and, for on-disk engines, writes) at path
    save: Callable[[Any, Path], None]
    load: Callable[[Path], Any]
    queries: dict[str, Query]
    add: Callable[[Any, np.ndarray, np.ndarray], Any] | None = None      # (index, labels, vectors)
    remove: Callable[[Any, np.ndarray], Any] | None = None               # (index, labels)
    notes: str = ""
    on_disk: bool = False  # the index lives in files it reads on demand (RSS says little)
    extra: dict[str, Any] = field(default_factory=dict)


def rss_bytes() -> int:
    """Resident memory of this process now (after giving freed heap back to the OS)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _hnswlib(dim: int, threads: int) -> list[Candidate]:
    import hnswlib

    def build(x, _path):
        ix = hnswlib.Index(space="ip", dim=dim)
        ix.init_index(max_elements=len(x), ef_construction=EF_ADD, M=M, allow_replace_deleted=True)
        ix.set_num_threads(threads)
        ix.add_items(x, np.arange(len(x)))
        ix.set_num_threads(1)
        return ix

    def load(p):
        ix = hnswlib.Index(space="ip", dim=dim)
        ix.load_index(str(p), allow_replace_deleted=True)
        ix.set_num_threads(1)
        return ix

    def add(ix, labels, v):
        ix.resize_index(ix.get_current_count() + len(labels))
        ix.add_items(v, labels, replace_deleted=True)

    def remove(ix, labels):
        for lab in labels.tolist():
            ix.mark_deleted(lab)

    def q(ef):
        return lambda ix, v: (ix.set_ef(ef), ix.knn_query(v, 10)[0][0])[1]

    return [Candidate("hnswlib", "hnswlib", build, lambda ix, p: ix.save_index(str(p)), load,
                      {f"ef{ef}": q(ef) for ef in (32, 64, 128)}, add, remove,
                      "deletions are tombstones whose slots later adds reuse; capacity resized by hand")]


def _usearch(dim: int, threads: int) -> list[Candidate]:
    from usearch.index import Index

    def q(ef):
        return lambda ix, v: (setattr(ix, "expansion_search", ef), ix.search(v, 10, threads=1).keys)[1]

    out = []
    for dt in ("f32", "f16", "i8"):
        def build(x, _path, dt=dt):
            ix = Index(ndim=dim, metric="ip", dtype=dt, connectivity=M, expansion_add=EF_ADD)
            ix.add(np.arange(len(x), dtype=np.uint64), x, threads=threads)
            return ix

        out.append(Candidate(
            f"usearch_{dt}", "usearch", build, lambda ix, p: ix.save(str(p)), lambda p: Index.restore(str(p)),
            {f"ef{ef}": q(ef) for ef in (32, 64, 128)},
            lambda ix, labels, v: ix.add(labels.astype(np.uint64), v, threads=1),
            lambda ix, labels: ix.remove(labels.astype(np.uint64)),
            "removal marks a tombstone (slot reused; compact=True unlinks); grows without a capacity"))
    return out


def _faiss(dim: int, threads: int) -> list[Candidate]:
    import faiss

    def hnsw_build(x, _path):
        faiss.omp_set_num_threads(threads)
        ix = faiss.IndexHNSWFlat(dim, M, faiss.METRIC_INNER_PRODUCT)
        ix.hnsw.efConstruction = EF_ADD
        ix.add(x)
        faiss.omp_set_num_threads(1)
        return ix

    def ivf_build(x, _path):
        faiss.omp_set_num_threads(threads)
        ix = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, 1024, faiss.METRIC_INNER_PRODUCT)
        ix.train(x)
        ix.add(x)
        faiss.omp_set_num_threads(1)
        return ix

    def hnsw_q(ef):
        return lambda ix, v: (setattr(ix.hnsw, "efSearch", ef), ix.search(v[None], 10)[1][0])[1]

    def ivf_q(nprobe):
        return lambda ix, v: (setattr(ix, "nprobe", nprobe), ix.search(v[None], 10)[1][0])[1]

    def ivf_add(ix, labels, v):  # IndexIVFFlat numbers rows itself: new rows take the next numbers
        ix.add(v)

    def remove(ix, labels):
        ix.remove_ids(labels.astype(np.int64))

    save = lambda ix, p: faiss.write_index(ix, str(p))  # noqa: E731
    load = lambda p: faiss.read_index(str(p))  # noqa: E731
    return [Candidate("faiss_hnsw", "faiss-cpu", hnsw_build, save, load,
                      {f"ef{ef}": hnsw_q(ef) for ef in (32, 64, 128)},
                      lambda ix, labels, v: ix.add(v), remove, "HNSW rows are numbered 0..n-1; no custom ids"),
            Candidate("faiss_ivf1024", "faiss-cpu", ivf_build, save, load, {f"nprobe{p}": ivf_q(p) for p in (8, 32)},
                      ivf_add, remove, "k-means trained on the corpus: retrain as it drifts")]


def _lancedb(dim: int, threads: int) -> list[Candidate]:
    import lancedb
    import pyarrow as pa
    from lancedb.index import IvfHnswSq, IvfPq

    os.environ.setdefault("RUST_LOG", "error")  # one deprecation line per query otherwise
    warnings.filterwarnings("ignore", module="lancedb")

    def table(labels, v):
        return pa.table({"id": pa.array(labels, pa.int64()),
                         "vector": pa.FixedSizeListArray.from_arrays(pa.array(v.ravel(), pa.float32()), dim)})

    def builder(config):
        def build(x, path):
            shutil.rmtree(path, ignore_errors=True)
            tb = lancedb.connect(str(path)).create_table("v", data=table(np.arange(len(x)), x))
            tb.create_index("vector", config=config)
            return tb
        return build

    def load(path):
        return lancedb.connect(str(path)).open_table("v")

    def q(nprobes, refine=None, ef=None):
        def run(tb, v):
            s = tb.search(v).distance_type("dot").limit(10).nprobes(nprobes)
            if refine:
                s = s.refine_factor(refine)
            if ef:
                s = s.ef(ef)
            return np.asarray(s.select(["id", "_distance"]).to_arrow()["id"])
        return run

    add = lambda tb, labels, v: tb.add(table(labels, v))  # noqa: E731
    remove = lambda tb, labels: tb.delete(f"id IN ({','.join(map(str, labels.tolist()))})")  # noqa: E731
    note = "rows added after the index was built are scanned exactly until optimize() re-indexes them"
    return [Candidate("lancedb_hnsw_sq", "lancedb", builder(IvfHnswSq(distance_type="dot", num_partitions=1, m=M,
                                                                      ef_construction=EF_ADD)),
                      lambda tb, p: None, load, {f"ef{ef}": q(1, ef=ef) for ef in (64, 128)}, add, remove, note,
                      on_disk=True),
            Candidate("lancedb_ivf_pq", "lancedb", builder(IvfPq(distance_type="dot", num_partitions=256,
                                                                 num_sub_vectors=48)),
                      lambda tb, p: None, load, {"nprobes20_refine5": q(20, refine=5)}, add, remove, note,
                      on_disk=True)]


def _sqlite_vec(dim: int, threads: int) -> list[Candidate]:
    import apsw
    import sqlite_vec

    def connect(path):
        conn = apsw.Connection(str(path))
        conn.enable_load_extension(True)
        conn.load_extension(sqlite_vec.loadable_path())
        return conn

    def build(x, path):
        path.unlink(missing_ok=True)
        conn = connect(path)
        conn.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{dim}] distance_metric=cosine)")
        with conn:
            conn.executemany("INSERT INTO v(rowid, embedding) VALUES (?, ?)",
                             ((i, x[i].tobytes()) for i in range(len(x))))
        return conn

    def query(conn, v):
        rows = conn.execute("SELECT rowid FROM v WHERE embedding MATCH ? AND k = 10 ORDER BY distance",
                            (v.astype(np.float32).tobytes(),))
        return np.array([r[0] for r in rows], dtype=np.int64)

    def add(conn, labels, v):
        with conn:
            conn.executemany("INSERT INTO v(rowid, embedding) VALUES (?, ?)",
                             ((int(i), vec.tobytes()) for i, vec in zip(labels, v)))

    def remove(conn, labels):
        with conn:
            conn.executemany("DELETE FROM v WHERE rowid = ?", ((int(i),) for i in labels))

    return [Candidate("sqlite_vec", "sqlite-vec", build, lambda c, p: None, connect, {"exact": query}, add, remove,
                      "brute-force scan (no ANN index in sqlite-vec 0.1); needs a sqlite3 that loads extensions",
                      on_disk=True)]


def candidates(dim: int, threads: int) -> tuple[list[Candidate], dict[str, str]]:
    """The installed candidates, and ``library -> why it was skipped`` for the others."""
    out: list[Candidate] = []
    skipped: dict[str, str] = {}
    for lib, make in (("hnswlib", _hnswlib), ("usearch", _usearch), ("faiss-cpu", _faiss),
                      ("lancedb", _lancedb), ("sqlite-vec", _sqlite_vec)):
        try:
            out.extend(make(dim, threads))
        except ImportError as exc:
            skipped[lib] = f"not installed ({exc}); pip install 'tuneloop[ann]'"
    return out, skipped


def cache_path(cache: Path, c: Candidate) -> Path:
    suffix = {"lancedb": ".lance", "sqlite-vec": ".sqlite"}.get(c.library, ".bin")
    return cache / f"{c.name}{suffix}"
