"""UsageLogger in local mode, on real SQLite and PostgreSQL."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import sqlalchemy as sa

from capture_helpers import count, wait_until, write_lock
from tuneloop.capture import UsageLogger
from tuneloop.errors import ConfigError, ValidationError
from tuneloop.store import schema

I = schema.interactions


def test_import_pulls_no_heavy_dependencies():
    code = ("import sys, tuneloop.capture; "
            "heavy = [m for m in ('torch', 'numpy', 'transformers', 'fastapi', 'starlette') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_four_threads_of_ten_thousand_logs_leave_exactly_forty_thousand_rows(db_url, db, make_logger):
    lg = make_logger(url=db_url)
    ids: list[list[str]] = [[] for _ in range(4)]

    def work(k):
        for i in range(10_000):
            ids[k].append(lg.log(query=f"t{k} q{i}", response="r", model=f"m{k}", latency_ms=float(i % 100)))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert lg.flush(timeout=120)
    assert count(db) == 40_000
    assert len({i for part in ids for i in part}) == 40_000
    assert lg.dropped == 0 and lg.queued == 0
    assert lg.get_statistics()["models"] == {"m0": 10_000, "m1": 10_000, "m2": 10_000, "m3": 10_000}


def test_same_id_twice_is_one_row(db_url, db, make_logger):
    lg = make_logger(url=db_url)
    assert lg.log(query="a", response="first", id="my-id") == "my-id"
    assert lg.log(query="a", response="second", id="my-id") == "my-id"  # same batch
    lg.flush()
    lg.log(query="a", response="third", id="my-id")  # a later batch
    lg.flush()
    rows = db.fetch_all(sa.select(I.c.id, I.c.response))
    assert rows == [{"id": "my-id", "response": "first"}]


def test_feedback_is_recorded_and_counted(db_url, db, make_logger):
    lg = make_logger(url=db_url)
    a, b, c, d = (lg.log(query=q, response="r", model="m", quality_score=0.5) for q in "abcd")
    lg.record_feedback(a, feedback=1)
    lg.record_feedback(b, feedback=-1, text="wrong")
    lg.record_feedback(c, kind="rating", value=5)
    lg.record_feedback(c, text="lovely")  # text alone: a comment
    lg.record_feedback(d, kind="dwell", value=42.0, source="implicit")
    stats = lg.get_statistics()
    assert stats["total"] == 4 and stats["feedback_count"] == 5
    assert stats["feedback_rate"] == pytest.approx(3 / 4)
    assert stats["positive_rate"] == pytest.approx(2 / 3)
    assert stats["feedback_kinds"] == {"thumbs": 2, "rating": 1, "comment": 1, "dwell": 1}
    assert stats["avg_quality_score"] == pytest.approx(0.5)
    assert stats["dropped"] == 0 and stats["queued"] == 0
    row = db.fetch_one(sa.select(schema.feedback).where(schema.feedback.c.interaction_id == b))
    assert (row["kind"], row["value"], row["text"], row["source"]) == ("thumbs", -1.0, "wrong", "user")


@pytest.mark.parametrize("kwargs, field", [
    ({"feedback": 2}, "value"),
    ({"feedback": 1, "value": 1}, "value"),
    ({"kind": "rating", "value": 7}, "value"),
    ({"kind": "rating", "value": 0}, "value"),
    ({"kind": "nope", "value": 1}, "kind"),
    ({"feedback": 1, "source": "someone"}, "source"),
])
def test_bad_feedback_raises_at_once_and_queues_nothing(db_url, make_logger, kwargs, field):
    lg = make_logger(url=db_url)
    with pytest.raises(ValidationError) as err:
        lg.record_feedback("some-id", **kwargs)
    assert err.value.details["field"] == field
    assert lg.queued == 0
    with pytest.raises(ValidationError, match="query"):
        lg.log(query=42)


def test_bad_configuration_is_named(tmp_path):
    with pytest.raises(ConfigError, match="on_full"):
        UsageLogger(db_path=tmp_path / "x.db", on_full="explode")
    with pytest.raises(ConfigError, match="batch_size"):
        UsageLogger(db_path=tmp_path / "x.db", batch_size=0)
    with pytest.raises(ConfigError, match="endpoint"):
        UsageLogger(db_path=tmp_path / "x.db", endpoint="http://localhost:1")


def test_log_never_waits_on_the_database(db_url, db, make_logger):
    lg = make_logger(url=db_url, flush_interval=0.01)
    with write_lock(db):
        t0 = time.perf_counter()
        for i in range(2000):
            lg.log(query=f"q{i}")
        assert time.perf_counter() - t0 < 2.0
        assert not lg.flush(timeout=0.2)  # nothing can be committed while the lock is held
    assert lg.flush(timeout=60) and count(db) == 2000


def _stall_writer(lg, db):
    """Log one row and wait until the writer has taken it and is stuck behind the lock."""
    lg.log(query="first")
    wait_until(lambda: lg.queued == 0, what="writer to take the first row")
    time.sleep(0.05)


def test_drop_policy_counts_and_reports_every_drop(db_url, db, make_logger, caplog):
    lg = make_logger(url=db_url, batch_size=5, max_queue=10, on_full="drop", flush_interval=0.01)
    with caplog.at_level(logging.WARNING, logger="tuneloop.capture"), write_lock(db):
        _stall_writer(lg, db)
        returned = [lg.log(query=f"q{i}") for i in range(17)]
        assert lg.queued == 10 and lg.dropped == 7
        assert len(set(returned)) == 17  # the caller still gets an id for every call
    assert lg.flush(timeout=60)
    assert count(db) == 11 and lg.get_statistics()["dropped"] == 7
    assert any("dropped so far" in r.getMessage() for r in caplog.records)


def test_block_policy_waits_then_drops(db_url, db, make_logger):
    lg = make_logger(url=db_url, batch_size=5, max_queue=10, on_full="block", block_timeout=0.3,
                     flush_interval=0.01)
    with write_lock(db):
        _stall_writer(lg, db)
        for i in range(10):
            lg.log(query=f"q{i}")
        t0 = time.perf_counter()
        lg.log(query="waits and is dropped")
        assert time.perf_counter() - t0 >= 0.25 and lg.dropped == 1
    assert lg.flush(timeout=60)
    lg.block_timeout = 30.0
    with write_lock(db):
        _stall_writer(lg, db)
        for i in range(10):
            lg.log(query=f"r{i}")
        release = threading.Event()
        blocker = threading.Thread(target=lambda: (lg.log(query="waits for room"), release.set()))
        blocker.start()
        time.sleep(0.2)
        assert not release.is_set()  # still blocked: the queue is full
    blocker.join(30)
    assert release.is_set() and lg.dropped == 1
    assert lg.flush(timeout=60) and count(db) == 1 + 10 + 1 + 10 + 1


def test_database_outage_is_retried_and_loses_nothing(db_url, db, make_logger, caplog):
    lg = make_logger(url=db_url, flush_interval=0.01)
    lg.log(query="warm-up")
    assert lg.flush(timeout=30)
    with db.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE interactions RENAME TO interactions_away")
    try:
        with caplog.at_level(logging.WARNING, logger="tuneloop.capture"):
            ids = [lg.log(query=f"q{i}") for i in range(50)]  # never raises
            assert not lg.flush(timeout=0.5)  # cannot be committed yet
            assert any("retrying" in r.getMessage() for r in caplog.records)
    finally:
        with db.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE interactions_away RENAME TO interactions")
    assert lg.flush(timeout=60)
    assert count(db) == 51 and count(db, where=I.c.id.in_(ids)) == 50
    assert lg.rejected == 0 and lg.spooled == 0


def test_rows_the_database_refuses_are_isolated_and_kept(db_url, db, make_logger, caplog):
    lg = make_logger(url=db_url, flush_interval=5.0)
    good = [lg.log(query=f"good{i}") for i in range(3)]
    from tuneloop.capture.records import prepare_interaction

    bad = prepare_interaction(query="q")
    bad["query"] = None  # violates NOT NULL: the database itself refuses this row
    lg._put(bad)
    good += [lg.log(query=f"good{i}") for i in range(3, 6)]
    with caplog.at_level(logging.ERROR, logger="tuneloop.capture"):
        assert lg.flush(timeout=60)
    assert count(db) == 6 and count(db, where=I.c.id.in_(good)) == 6
    assert lg.rejected == 1
    kept = [json.loads(line) for line in lg._rejects.path.read_text().splitlines()]
    assert [k["r"]["id"] for k in kept] == [bad["id"]]
    assert any("rejected 1 row" in r.getMessage() for r in caplog.records)


def test_close_flushes_and_later_logs_are_counted_drops(db_url, db, tmp_path):
    with UsageLogger(url=db_url, flush_interval=60, spool_path=tmp_path / "s.jsonl") as lg:
        for i in range(300):
            lg.log(query=f"q{i}")
    assert count(db) == 300
    lg.log(query="too late")  # no exception into the host
    assert lg.dropped == 1


def _child(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=os.getcwd())


def test_sigkill_right_after_flush_loses_nothing_flushed(db_url, db, tmp_path):
    proc = _child("""
        import sys, time
        from tuneloop.capture import UsageLogger
        lg = UsageLogger(url=sys.argv[1], batch_size=97, flush_interval=5, spool_path=sys.argv[2])
        for i in range(3000):
            lg.log(query=f"q{i}", response="r" * 200, model="before-kill")
        assert lg.flush(timeout=120)
        print("flushed", flush=True)
        while True:  # keep the writer busy mid-transaction when the kill lands
            lg.log(query="after", model="after-flush")
    """, db_url, str(tmp_path / "child.jsonl"))
    try:
        line = proc.stdout.readline()
        assert line.strip() == "flushed", proc.stderr.read()
        time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert count(db, where=I.c.model == "before-kill") == 3000


def test_exit_without_close_flushes(db_url, db, tmp_path):
    proc = _child("""
        import sys
        from tuneloop.capture import UsageLogger
        lg = UsageLogger(url=sys.argv[1], flush_interval=60, spool_path=sys.argv[2])
        for i in range(500):
            lg.log(query=f"q{i}", model="at-exit")
    """, db_url, str(tmp_path / "child.jsonl"))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert count(db, where=I.c.model == "at-exit") == 500


def test_iter_interactions_flushes_first(db_url, make_logger):
    lg = make_logger(url=db_url, flush_interval=60)
    for i in range(20):
        lg.log(query=f"q{i}", model="a" if i % 2 else "b", ts=1000.0 + i)
    rows = list(lg.iter_interactions(start=1005.0, end=1015.0, model="a"))
    assert [r["query"] for r in rows] == [f"q{i}" for i in range(5, 15) if i % 2]


def test_log_takes_other_columns_and_keeps_unknown_keywords_as_metadata(db_url, db, make_logger):
    lg = make_logger(url=db_url)
    rid = lg.log(messages=[{"role": "user", "content": "hi"}], response="hello", ts=1234.5, prompt_tokens=3,
                 completion_tokens=4, cost=0.01, trace_id="t1", tenant="acme", metadata={"app": "x"})
    lg.flush()
    row = db.fetch_one(sa.select(I).where(I.c.id == rid))
    assert (row["query"], row["ts"], row["token_count"], row["cost"], row["trace_id"]) == ("hi", 1234.5, 7, 0.01, "t1")
    assert row["meta"] == {"app": "x", "tenant": "acme"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_own_writer(db_url, db, make_logger):
    lg = make_logger(url=db_url)
    lg.log(query="parent", model="parent")
    assert lg.flush(timeout=30)
    pid = os.fork()
    if pid == 0:  # the child: the at-fork hook started a fresh writer thread
        code = 1
        try:
            for i in range(25):
                lg.log(query=f"child{i}", model="child")
            code = 0 if lg.flush(timeout=30) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert count(db, where=I.c.model == "child") == 25 and count(db, where=I.c.model == "parent") == 1


def test_public_surface():
    import tuneloop.capture as capture

    assert {"UsageLogger", "statistics", "iter_interactions", "write_interactions", "write_feedback"} <= set(
        capture.__all__)
    assert all(hasattr(capture, name) for name in capture.__all__)
