"""The database locked or gone for a while: logging buffers and retries, nothing acknowledged is lost.

- SQLite: another connection holds the write lock (``BEGIN IMMEDIATE``) for 5 s while a
  ``UsageLogger`` logs, once with the default busy timeout (the writer waits) and once with
  a 100 ms one (the writer fails, backs off and retries with its rows kept).
- PostgreSQL: the logger's connections are killed with ``pg_terminate_backend`` again and
  again while it logs; and the server's ingestion API loses its connections while the SDK
  posts to it in remote mode.

"Acknowledged" = ``log()`` returned an id and ``flush()`` returned True: every such id
must be in the database exactly once.
"""
from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from tuneloop.capture import UsageLogger
from tuneloop.store import Database, schema

BACKEND_IS_PG = __import__("os").environ.get("TUNELOOP_TEST_DB", "sqlite") == "postgres"


def stored_ids(db) -> list[str]:
    return [r["id"] for r in db.fetch_all(sa.select(schema.interactions.c.id))]


@contextlib.contextmanager
def held_write_lock(path: str, seconds: float):
    """Another process-like connection holding SQLite's write lock for ``seconds``."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO trigger_events (id, \"trigger\", fired, ts) VALUES ('lock', 'x', 0, 0)")
    released = threading.Event()

    def release():
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()
        released.set()

    t = threading.Thread(target=release, daemon=True)
    t.start()
    try:
        yield released
    finally:
        t.join(seconds + 5)


def _log_during(logger: UsageLogger, n: int, seconds: float) -> tuple[list[str], float]:
    ids, worst = [], 0.0
    for i in range(n):
        t0 = time.perf_counter()
        ids.append(logger.log(query=f"q{i}", response="a", model="m"))
        worst = max(worst, time.perf_counter() - t0)
        time.sleep(seconds / n)
    return ids, worst


@pytest.mark.parametrize("busy_ms", [None, 100])
def test_sqlite_locked_for_two_seconds_loses_nothing(tmp_path, busy_ms, caplog):
    path = str(tmp_path / "locked.db")
    db = Database.open(path=path)
    if busy_ms is not None:  # shorter than the lock: the writer's transaction fails and is retried
        sa.event.listen(db.engine, "connect", lambda c, _r: c.execute(f"PRAGMA busy_timeout={busy_ms}"))
        db.engine.dispose()
    logger = UsageLogger(db=db, batch_size=50, flush_interval=0.05, spool_path=tmp_path / "spool.jsonl")
    try:
        logger.log(query="warm", response="up")
        assert logger.flush(timeout=10)
        with held_write_lock(path, 5.0) as released:  # longer than the logging below, even on a loaded machine
            ids, worst = _log_during(logger, 300, 1.5)
            assert not released.is_set()
            assert len(stored_ids(db)) == 1          # nothing could be written while locked
        assert logger.flush(timeout=30)
        assert worst < 0.5, f"log() blocked for {worst:.3f}s while the database was locked"
        stored = stored_ids(db)
        assert set(ids) <= set(stored) and len(stored) == len(set(stored)) == 301
        assert logger.counters()["dropped"] == 0 and logger.counters()["rejected"] == 0
        if busy_ms is not None:  # the fault really reached the writer, which retried
            assert any("retrying" in r.getMessage() for r in caplog.records)
    finally:
        logger.close()
        db.close()


# ---------------------------------------------------------------- PostgreSQL
def _pg(db_url: str, app_name: str) -> str:
    sep = "&" if "?" in db_url else "?"
    return f"{db_url}{sep}application_name={app_name}"


def _terminate(admin: Database, app_name: str) -> int:
    with admin.connect() as conn:
        rows = conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    "WHERE application_name = :a AND pid <> pg_backend_pid()"), {"a": app_name}).all()
        conn.commit()
    return len(rows)


@pytest.mark.skipif(not BACKEND_IS_PG, reason="needs TUNELOOP_TEST_DB=postgres")
def test_postgres_connections_killed_during_logging_lose_nothing(db, db_url, tmp_path):
    name = f"tuneloop-fault-logger-{uuid.uuid4().hex[:8]}"
    ldb = Database.open(_pg(db_url, name))
    logger = UsageLogger(db=ldb, batch_size=100, flush_interval=0.02, spool_path=tmp_path / "spool.jsonl")
    ids: list[str] = []
    stop = threading.Event()

    def produce():
        i = 0
        while not stop.is_set():
            ids.append(logger.log(query=f"q{i}", response="a" * 200, model="m"))
            i += 1
            time.sleep(0.0005)

    producer = threading.Thread(target=produce)
    producer.start()
    killed = 0
    try:
        for _ in range(8):  # kill the logger's connections every 0.25 s, mid-COPY more often than not
            time.sleep(0.25)
            killed += _terminate(db, name)
        stop.set()
        producer.join()
        assert logger.flush(timeout=60)
    finally:
        stop.set()
        logger.close()
        ldb.close()
    assert killed >= 3, "the fault was not injected"
    stored = stored_ids(db)
    assert len(ids) > 500
    assert set(ids) <= set(stored) and len(stored) == len(set(stored)) == len(ids)


@contextlib.contextmanager
def live_server(app):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive()
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.skipif(not BACKEND_IS_PG, reason="needs TUNELOOP_TEST_DB=postgres")
def test_postgres_restart_under_the_ingestion_api_loses_nothing(db, db_url, tmp_path):
    """SDK (remote) -> server -> PostgreSQL whose connections die: 5xx, SDK retries/spools, all arrive."""
    from tuneloop.server.app import create_app

    name = f"tuneloop-fault-server-{uuid.uuid4().hex[:8]}"
    sdb = Database.open(_pg(db_url, name))
    app = create_app(db=sdb, insecure_dev=True)
    with live_server(app) as url:
        logger = UsageLogger(endpoint=url, batch_size=50, flush_interval=0.02, max_attempts=2,
                             spool_path=tmp_path / "remote.jsonl")
        ids, killed = [], 0
        try:
            for round_ in range(6):
                for i in range(150):
                    ids.append(logger.log(query=f"r{round_}-{i}", response="a", model="m"))
                time.sleep(0.1)
                killed += _terminate(db, name)
            assert killed >= 3, "the fault was not injected"
            assert logger.flush(timeout=60)
            deadline = time.monotonic() + 60
            while set(ids) - set(stored_ids(db)) and time.monotonic() < deadline:  # spool replays
                logger.flush(timeout=10)
                time.sleep(0.2)
        finally:
            logger.close(timeout=30)
    sdb.close()
    stored = stored_ids(db)
    assert set(ids) <= set(stored) and len(stored) == len(set(stored)) == len(ids)
