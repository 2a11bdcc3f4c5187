"""Helpers for the capture tests: a real uvicorn server in a thread, a real database lock."""
from __future__ import annotations

import contextlib
import socket
import threading
import time

import sqlalchemy as sa

from tuneloop.store import Database, schema


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A real uvicorn serving ``app`` on ``port`` (default: a free loopback port), in a thread."""

    def __init__(self, app, port: int | None = None):
        import uvicorn

        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(20)


@contextlib.contextmanager
def write_lock(db: Database):
    """Hold the interactions table's write lock from another connection (stalls the writer)."""
    with db.begin() as conn:  # BEGIN IMMEDIATE on SQLite takes the database write lock
        if not db.is_sqlite:
            conn.exec_driver_sql("LOCK TABLE interactions IN EXCLUSIVE MODE")
        yield


def wait_until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def count(db: Database, table=schema.interactions, where=None) -> int:
    stmt = sa.select(sa.func.count()).select_from(table)
    return db.scalar(stmt.where(where) if where is not None else stmt)


