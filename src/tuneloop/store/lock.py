"""The leader lock: one loop acts on a database at a time.

PostgreSQL: a session-level advisory lock held on a dedicated connection; if the holder
dies its connection closes and the lock frees itself, so a waiting daemon takes over.
SQLite: an OS file lock beside the database file (released by the kernel when the
process dies, so a SIGKILLed daemon never leaves a stale lock).
"""
from __future__ import annotations

import time
from pathlib import Path

from tuneloop.store.db import Database

LOOP_LOCK_KEY = 0x7475_6E65  # "tune"


class LeaderLock:
    """``with LeaderLock(db): ...`` or ``acquire(timeout)`` / ``release()``."""

    def __init__(self, db: Database, name: str = "loop") -> None:
        self.db, self.name = db, name
        self._conn = None
        self._file = None

    def _file_lock(self):
        from filelock import FileLock

        db_path = self.db.engine.url.database
        if not db_path or db_path == ":memory:":
            db_path = str(Path(".tuneloop") / "memory.db")
        return FileLock(f"{db_path}.{self.name}.lock")

    def acquire(self, timeout: float | None = None, poll: float = 0.5) -> bool:
        """Take the lock; wait up to ``timeout`` seconds (None = forever). True when held."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.db.is_sqlite:
            self._file = self._file_lock()
            try:
                self._file.acquire(timeout=-1 if timeout is None else timeout, poll_interval=poll)
                return True
            except Exception:
                self._file = None
                return False
        key = self._key = LOOP_LOCK_KEY + sum(map(ord, self.name))
        self._conn = self.db.engine.connect()
        while True:
            got = self._conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({key})").scalar()
            self._conn.commit()
            if got:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                self._conn.close()
                self._conn = None
                return False
            time.sleep(poll)

    def release(self) -> None:
        if self._file is not None:
            self._file.release()
            self._file = None
        if self._conn is not None:
            # The pool would keep the session (and its lock) alive: unlock, then drop the session.
            try:
                self._conn.exec_driver_sql(f"SELECT pg_advisory_unlock({self._key})")
                self._conn.commit()
            finally:
                self._conn.invalidate()
                self._conn.close()
                self._conn = None

    @property
    def held(self) -> bool:
        return self._file is not None or self._conn is not None

    def __enter__(self) -> "LeaderLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
