"""Re-embedding into a new index: a killed job resumes after its cursor; switch and instant rollback."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tuneloop.errors import ConflictError
from tuneloop.retrieval import builds as B
from tuneloop.retrieval.index import EmbeddedIndex
from tuneloop.retrieval.reembed import reembed
from tuneloop.retrieval.search import RetrievalIndex

from retrieval_helpers import DOCS, CountingEmbedder

N = 600


def _corpus(n=N):
    return [{"id": f"doc-{i:04d}", "text": f"document {i} about topic {i % 17} and item {i * 7 % 101}"}
            for i in range(n)]


def _wait(pred, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_a_killed_reembed_resumes_after_its_cursor(db, db_url, index_root, embedder):
    idx = RetrievalIndex(db, embedder=embedder, root=index_root)
    idx.upsert(_corpus())
    cmd = [sys.executable, "-m", "tuneloop.retrieval.reembed", "--db", db_url, "--embedder", "hashing-64",
           "--root", str(index_root), "--batch-size", "20", "--max-docs-per-s", "150", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        def started():
            builds = B.list_builds(db, "hashing-64")
            return bool(builds) and builds[0].done >= 100
        assert _wait(started), proc.stderr.read().decode() if proc.poll() is not None else "no progress"
        os.killpg(proc.pid, signal.SIGKILL)  # a crash: no cleanup, no final write
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (build,) = B.list_builds(db, "hashing-64")
    assert build.status == "building" and 100 <= build.done < N and build.cursor is not None
    # changes while it was down: behind the cursor, and ahead of it
    idx.upsert([{"id": "doc-0001", "text": "a completely rewritten first document"}])
    idx.delete(["doc-0002", "doc-0590"])
    counting = CountingEmbedder(64)
    done = reembed(db, counting, root=index_root, batch_size=50, progress=False)
    assert done.id == build.id and done.status == "ready"
    embedded = set(counting.texts)
    assert len(counting.texts) <= N - build.done + 1  # the part before the cursor was not redone
    assert "a completely rewritten first document" in embedded
    ix = EmbeddedIndex.load(done.path)
    assert len(ix) == N - 2 and "doc-0002" not in ix and "doc-0590" not in ix
    assert done.done == N - 2 and done.progress == 1.0
    assert not list((index_root / build.id / "chunks").glob("*.npz"))


def test_switch_then_rollback_serves_the_old_index_at_once(db, index_root, embedder):
    from tuneloop.retrieval.versions import use_embedder

    use_embedder("hashing-256", embedder)  # count what the serving index embeds
    idx = RetrievalIndex(db, root=index_root, engine="auto")  # no pin: serves the active build
    B.switch_to(db, reembed(db, embedder, root=index_root, progress=False).id)
    idx.upsert(DOCS)
    assert idx.version == "hashing-256"
    new = reembed(db, "hashing-128", root=index_root, progress=False)
    assert new.status == "ready" and idx.version == "hashing-256"  # ready is not serving
    idx.switch("hashing-128")
    assert idx.version == "hashing-128" and idx.search("password", k=1).retriever_version == "hashing-128"
    idx.upsert([{"id": "gift", "text": "Gift cards never expire"}])
    n = len(embedder.texts)
    t0 = time.perf_counter()
    back = idx.rollback()
    res = idx.search("gift cards expire", k=1)
    elapsed = time.perf_counter() - t0
    assert back.embedder_version == "hashing-256" and res.retriever_version == "hashing-256"
    assert res.ids == ["gift"]  # the change made meanwhile reached the old index
    assert embedder.texts[n:] == ["Gift cards never expire", "gift cards expire"]  # nothing else re-embedded
    assert elapsed < 5.0
    statuses = {b.embedder_version: b.status for b in B.list_builds(db)}
    assert statuses == {"hashing-256": "active", "hashing-128": "ready"}
    with pytest.raises(ConflictError, match="no standby"):
        idx.rollback()


def test_old_standbys_are_retired_and_their_folders_removed(db, index_root):
    ids = []
    for dim in (16, 32, 48):
        b = reembed(db, f"hashing-{dim}", root=index_root, progress=False, switch=True)
        ids.append(b.id)
    s = {b.id: b.status for b in B.list_builds(db)}
    assert [s[i] for i in ids] == ["retired", "standby", "active"]
    assert not (index_root / ids[0]).exists() and (index_root / ids[1]).exists()
    with pytest.raises(ConflictError, match="is active"):
        B.retire_build(db, ids[2])


def test_background_reembed_builds_and_switches(db, db_url, index_root, embedder):
    from tuneloop.retrieval.reembed import start_reembed

    RetrievalIndex(db, embedder=embedder, root=index_root).upsert(DOCS)
    proc = start_reembed(db_url, "hashing-32", root=str(index_root), switch=True, max_docs_per_s=1000)
    assert proc.wait(timeout=120) == 0
    assert "--db" not in proc.args  # the URL (and any password) is not in argv
    active = B.active_build(db)
    assert active.embedder_version == "hashing-32" and active.done == len(DOCS)
    idx = RetrievalIndex(db, root=index_root)
    assert idx.search("reset your account password", k=1).retriever_version == "hashing-32"
