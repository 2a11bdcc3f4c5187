"""Group commit for the ingestion API: concurrent requests share transactions.

>>> from tuneloop.store import Database
>>> from tuneloop.capture.records import interaction_row
>>> w = GroupWriter(Database.open("sqlite:///:memory:"))
>>> w.submit("interactions", [interaction_row(query="q", response="a")]).result()
1
>>> w.close()

A commit is the expensive part of a small write (on SQLite the WAL append and the
checkpoints, on PostgreSQL the WAL flush), and SQLite lets one writer in at a time
anyway. So one writer thread takes every request waiting when it comes round and
writes them all in one transaction; each request's future resolves only after that
commit, so a 200 still means "stored". If a shared transaction fails, each request is
retried alone, so one bad request cannot fail the others.
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from tuneloop.capture.records import write_feedback, write_interactions
from tuneloop.errors import StoreError, TuneloopError

__all__ = ["GroupWriter"]

log = logging.getLogger("tuneloop.server")
_WRITERS = {"interactions": write_interactions, "feedback": write_feedback}
_Job = tuple[str, Sequence[Mapping[str, Any]], Future]


class GroupWriter:
    """One writer thread that commits the rows of many requests together."""

    def __init__(self, db: Any, *, max_rows: int = 10_000) -> None:
        self.db, self.max_rows = db, max_rows
        self._jobs: deque[_Job] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.commits = 0

    def submit(self, table: str, rows: Sequence[Mapping[str, Any]]) -> Future:
        """Queue ``rows`` of ``table`` (interactions | feedback); the future gives the inserted count."""
        if table not in _WRITERS:
            raise ValueError(f"table: must be one of {sorted(_WRITERS)}, got {table!r}")
        future: Future = Future()
        with self._ready:
            if self._closed:
                raise StoreError("the server is shutting down")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tuneloop-ingest-writer", daemon=True)
                self._thread.start()
            self._jobs.append((table, rows, future))
            self._ready.notify()
        return future

    def _take(self) -> list[_Job] | None:
        with self._ready:
            while not self._jobs and not self._closed:
                self._ready.wait()
            if not self._jobs:
                return None
            group, n = [], 0
            while self._jobs and (not group or n + len(self._jobs[0][1]) <= self.max_rows):
                job = self._jobs.popleft()
                group.append(job)
                n += len(job[1])
            return group

    def _run(self) -> None:
        while (group := self._take()) is not None:
            self._write(group)

    def _write(self, group: list[_Job]) -> None:
        try:
            with self.db.begin() as conn:
                counts = [_WRITERS[table](self.db, rows, conn=conn) for table, rows, _ in group]
            self.commits += 1
        except Exception as exc:
            if len(group) > 1:  # find the request that fails; the others still get stored
                for job in group:
                    self._write([job])
                return
            log.exception("ingestion write failed")
            err = exc if isinstance(exc, TuneloopError) else StoreError(f"could not store the rows: {exc}")
            group[0][2].set_exception(err)
            return
        for (_, _, future), count in zip(group, counts):
            future.set_result(count)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the thread."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
