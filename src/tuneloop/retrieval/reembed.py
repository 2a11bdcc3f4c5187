"""Re-embed the corpus into a new index for an embedder version: resumable, throttled, then switch.

    python -m tuneloop.retrieval.reembed --embedder V [--db URL] [--switch] [--max-docs-per-s N]

1. Find this version's unfinished build (``building``) and resume after its ``cursor``,
   or start a new build (its folder holds ``chunks/`` of embedded vectors).
2. Walk the live documents in id order, ``batch_size`` at a time: embed, write the chunk
   (fsynced), then advance ``cursor`` and ``done`` in ``index_builds``. A crash loses at
   most the batch in flight; a rerun skips everything before the cursor.
3. Throttle: at most ``max_docs_per_s``, and one torch thread by default, so the
   process that serves searches keeps its CPU.
4. Assemble the index from the chunks, then catch up with every change made since the
   build started (updates re-embedded, deletions dropped), save a snapshot, mark ``ready``.
5. With ``switch=True``, make it the active build (the old one stays as standby).

>>> from tuneloop.store import Database
>>> from tuneloop.retrieval.documents import DocumentStore
>>> import tempfile
>>> db = Database.open("sqlite:///:memory:")
>>> _ = DocumentStore(db).upsert([{"id": "a", "text": "alpha"}, {"id": "b", "text": "beta"}])
>>> build = reembed(db, "hashing-32", root=tempfile.mkdtemp(), engine="numpy", progress=False, switch=True)
>>> build.status, build.done
('active', 2)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tuneloop.errors import TuneloopError, ValidationError
from tuneloop.retrieval import _engines
from tuneloop.retrieval.builds import (IndexBuild, create_build, get_build, list_builds, switch_to,
                                       update_build)
from tuneloop.retrieval.documents import DocumentStore, changes_since
from tuneloop.retrieval.index import EmbeddedIndex, VectorIndex
from tuneloop.retrieval.versions import load_embedder, version_name
from tuneloop.store import Database

__all__ = ["reembed", "catch_up", "start_reembed", "LAG_S"]

DB_ENV = "TUNELOOP_DB_URL"

#: Changes are re-read this many seconds before the watermark: rows committed late by another
#: process (or stamped by a clock slightly behind) are not missed; re-reading costs a hash check.
LAG_S = 5.0


def _embed(embedder: Any, texts: list[str]) -> np.ndarray:
    vectors = np.asarray(embedder.encode(texts), dtype=np.float32)
    if vectors.shape != (len(texts), embedder.dim):
        raise ValidationError(f"embedder {version_name(embedder)} returned shape {vectors.shape} "
                              f"for {len(texts)} texts", field="embedder")
    return vectors


def catch_up(db: Database, index: VectorIndex, embedder: Any, *, batch_size: int = 128,
             since: float | None = None) -> dict[str, int]:
    """Apply every document change after the index's watermark (or ``since``) to ``index``.

    Deleted documents leave; new or changed texts (by hash) are embedded; the rest is
    skipped. Returns counts ``{"embedded", "deleted", "seen"}``.
    """
    start = since if since is not None else index.watermark
    cutoff = None if start is None else start - LAG_S
    counts = {"embedded": 0, "deleted": 0, "seen": 0}
    pending: list[dict[str, Any]] = []
    high = index.watermark
    for row in changes_since(db, cutoff):
        counts["seen"] += 1
        high = row["updated_at"] if high is None else max(high, row["updated_at"])
        if row["deleted"]:
            counts["deleted"] += index.delete([row["id"]])
        elif index.content_hashes([row["id"]]).get(row["id"]) != row["content_hash"]:
            pending.append(row)
        if len(pending) >= batch_size:
            counts["embedded"] += _embed_rows(db, index, embedder, pending)
            pending = []
    if pending:
        counts["embedded"] += _embed_rows(db, index, embedder, pending)
    index.watermark = high
    return counts


def _embed_rows(db: Database, index: VectorIndex, embedder: Any, rows: list[dict[str, Any]]) -> int:
    """Embed the current text of ``rows`` (re-read: it may have changed since) into ``index``."""
    live = DocumentStore(db).rows([r["id"] for r in rows])
    if not live:
        return 0
    index.upsert([r["id"] for r in live], _embed(embedder, [r["text"] for r in live]),
                 [r["content_hash"] for r in live])
    return len(live)


class _Throttle:
    """Sleeps so that no more than ``rate`` documents per second go through."""

    def __init__(self, rate: float | None) -> None:
        if rate is not None and rate <= 0:
            raise ValidationError(f"max_docs_per_s must be positive, not {rate}", field="max_docs_per_s")
        self.rate, self.t0, self.n = rate, time.monotonic(), 0

    def __call__(self, n: int) -> None:
        self.n += n
        if self.rate:
            ahead = self.n / self.rate - (time.monotonic() - self.t0)
            if ahead > 0:
                time.sleep(ahead)


def _resume_or_create(db: Database, version: str, engine: str, dim: int, root: Any, total: int) -> IndexBuild:
    for build in list_builds(db, version, ("building",)):
        if build.engine == engine and build.dim == dim and build.path and Path(build.path).is_dir():
            update_build(db, build.id, total=total)
            return get_build(db, build.id)
    return create_build(db, version, engine=engine, dim=dim, root=root, total=total)


def _write_chunk(folder: Path, seq: int, rows: list[dict[str, Any]], vectors: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{seq:08d}.npz.tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, ids=np.array([r["id"] for r in rows], dtype=str),
                 hashes=np.array([r["content_hash"] for r in rows], dtype=str), vectors=vectors)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, folder / f"{seq:08d}.npz")


def _scan(db: Database, build: IndexBuild, embedder: Any, batch_size: int, throttle: _Throttle,
          bar: Any, stop_after: int | None) -> int:
    """Embed live documents after the build's cursor into chunk files; returns how many this run did."""
    chunks = Path(build.path) / "chunks"
    seq = len(list(chunks.glob("*.npz"))) if chunks.is_dir() else 0
    done, embedded = build.done, 0
    for rows in DocumentStore(db).iter_live(build.cursor, batch_size):
        vectors = _embed(embedder, [r["text"] for r in rows])
        _write_chunk(chunks, seq, rows, vectors)
        seq, done, embedded = seq + 1, done + len(rows), embedded + len(rows)
        update_build(db, build.id, cursor=rows[-1]["id"], done=done)  # after the chunk is on disk
        if bar is not None:
            bar.update(len(rows))
        throttle(len(rows))
        if stop_after is not None and embedded >= stop_after:
            break
    return embedded


def _assemble(build: IndexBuild, threads: int) -> EmbeddedIndex:
    index = EmbeddedIndex(build.dim or 0, engine=build.engine or "auto", path=build.path)
    index.threads = threads
    for f in sorted((Path(build.path) / "chunks").glob("*.npz")):
        data = np.load(f)
        ids = data["ids"].tolist()
        index.upsert(ids, data["vectors"], data["hashes"].tolist())  # a later chunk wins over an older one
    index.threads = 1
    return index


def reembed(db: Database, embedder_version: Any, *, root: str | os.PathLike | None = None, engine: str = "auto",
            batch_size: int = 128, max_docs_per_s: float | None = None, num_threads: int | None = 1,
            switch: bool = False, progress: bool = True, stop_after: int | None = None,
            index_threads: int = 1, on_progress: Callable[[IndexBuild], None] | None = None) -> IndexBuild:
    """Build (or resume building) the index of ``embedder_version``; returns the build row.

    ``stop_after`` ends the run after about that many documents, leaving the build
    resumable (for tests and for slicing the work into slots). ``index_threads`` builds
    the graph with more threads (the background job's own process may use them).
    """
    if batch_size < 1:
        raise ValidationError(f"batch_size must be at least 1, not {batch_size}", field="batch_size")
    if num_threads:
        import torch

        torch.set_num_threads(num_threads)
    embedder = load_embedder(db, embedder_version)
    version = version_name(embedder)
    engine = _engines.resolve_engine(engine)
    build = _resume_or_create(db, version, engine, int(embedder.dim), root, DocumentStore(db).count())
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=build.total, initial=build.done, desc=f"re-embed {version}", unit="doc", dynamic_ncols=True)
    try:
        _scan(db, build, embedder, batch_size, _Throttle(max_docs_per_s), bar, stop_after)
    except Exception as exc:  # recorded for `tuneloop docs builds`; the build stays resumable
        update_build(db, build.id, error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if bar is not None:
            bar.close()
    build = get_build(db, build.id)
    if on_progress is not None:
        on_progress(build)
    if stop_after is not None and next(DocumentStore(db).iter_live(build.cursor, 1), None) is not None:
        return build  # more to do: a later call resumes after the cursor
    return _finish(db, build, embedder, batch_size, switch, index_threads)


def _finish(db: Database, build: IndexBuild, embedder: Any, batch_size: int, switch: bool,
            index_threads: int) -> IndexBuild:
    index = _assemble(build, index_threads)
    # Everything changed since the scan began: updates behind the cursor, deletions, new docs.
    catch_up(db, index, embedder, batch_size=batch_size, since=build.created_at)
    index.save()
    for f in (Path(build.path) / "chunks").glob("*.npz"):
        f.unlink()
    update_build(db, build.id, status="ready", done=len(index), total=len(index), error=None,
                 meta={**(build.meta or {}), "watermark": index.watermark})
    return switch_to(db, build.id) if switch else get_build(db, build.id)


def start_reembed(db_url: str, embedder_version: str, *, root: str | None = None, engine: str = "auto",
                  batch_size: int = 128, max_docs_per_s: float | None = None, switch: bool = False,
                  log_path: str | os.PathLike | None = None) -> subprocess.Popen:
    """Run :func:`reembed` in a background process (its own session: it outlives a CLI)."""
    # The URL travels in the environment, not argv: argv (and a password in it) is visible to `ps`.
    cmd = [sys.executable, "-m", "tuneloop.retrieval.reembed", "--embedder", embedder_version,
           "--engine", engine, "--batch-size", str(batch_size), "--no-progress"]
    if root:
        cmd += ["--root", str(root)]
    if max_docs_per_s:
        cmd += ["--max-docs-per-s", str(max_docs_per_s)]
    if switch:
        cmd.append("--switch")
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    env = {**os.environ, DB_ENV: db_url, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tuneloop.retrieval.reembed", description=__doc__.split("\n")[0])
    p.add_argument("--db", default=None, help=f"database URL or SQLite path (default: ${DB_ENV})")
    p.add_argument("--embedder", required=True, help="retriever version id or embedder name")
    p.add_argument("--root", default=None, help="index folder root")
    p.add_argument("--engine", default="auto")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--max-docs-per-s", type=float, default=None)
    p.add_argument("--index-threads", type=int, default=1, help="threads that build the graph at the end")
    p.add_argument("--switch", action="store_true", help="serve the new index when it is ready")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    url = a.db or os.environ.get(DB_ENV)
    if not url:
        print(f"error: give --db or set ${DB_ENV}", file=sys.stderr)
        return 2
    db = Database.open(url)
    try:
        build = reembed(db, a.embedder, root=a.root, engine=a.engine, batch_size=a.batch_size,
                        max_docs_per_s=a.max_docs_per_s, switch=a.switch, progress=not a.no_progress,
                        index_threads=a.index_threads)
    except TuneloopError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        db.close()
    print(f"index build {build.id} for {build.embedder_version}: {build.status}, {build.done} documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
