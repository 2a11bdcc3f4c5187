"""``UsageLogger``: capture interactions and feedback without slowing the caller down.

    with UsageLogger(db_path="usage.db") as logger:          # or url=..., or endpoint=...
        rid = logger.log(query="What is 65816 assembly?", response="The SNES CPU...",
                         model="nayru-v1", latency_ms=150, quality_score=0.85)
        logger.record_feedback(rid, feedback=1)
        print(logger.get_statistics()["total"])

How it works, and why:

1. ``log()`` validates its arguments (bad input raises ``ValidationError`` at once, naming
   the field), makes a UUIDv7 id on the client and appends the row to an in-memory queue
   (a ``collections.deque``: its append is atomic under the GIL, so the hot path takes no
   lock). It never touches the database or the network.
2. One daemon writer thread drains the queue in batches (``batch_size`` rows, or whatever
   is there every ``flush_interval`` seconds), adds the derived columns (token estimate,
   dedupe hash) and writes each batch in one transaction, or one HTTP request in remote
   mode. Ids make every write idempotent, so a batch may be retried or replayed freely.
3. When the queue holds ``max_queue`` rows, ``on_full="block"`` waits up to
   ``block_timeout`` seconds for room, ``on_full="drop"`` drops at once; every drop is
   counted (``logger.dropped``) and reported with a rate-limited warning.
4. Nothing in the background raises into the host: database errors are retried with
   backoff and the rows kept; an unreachable server makes the writer spool batches to a
   local fsync'd JSONL file that is replayed when the server answers again; rows the
   receiver rejects as bad data are found by bisection, counted (``logger.rejected``) and kept in
   ``<spool>.rejected.jsonl``.
5. ``flush()`` returns once everything enqueued before it is committed (or, in remote
   mode with the server down, durably spooled); ``close()`` and process exit flush.
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from tuneloop.capture.queries import iter_interactions as _iter_interactions
from tuneloop.capture.queries import statistics as _statistics
from tuneloop.capture.records import complete_interaction, feedback_row, prepare_interaction
from tuneloop.capture.sinks import HOLD, REJECT, SPLIT, DatabaseSink, HttpSink
from tuneloop.capture.spool import Spool, read_batches
from tuneloop.errors import ConfigError, UpstreamError, ValidationError

log = logging.getLogger("tuneloop.capture")

SPOOL_DIR_ENV = "TUNELOOP_SPOOL_DIR"  #: where default spool files go (default ./.tuneloop/spool)
Row = dict[str, Any]  # queued as is: a feedback row is the one with an "interaction_id"


class _Flush:
    """A marker in the queue: set once every item before it has been delivered."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class _RateLimitedWarning:
    """At most one log record per ``key`` every ``interval`` seconds, with a suppressed count."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, key: str, msg: str, *args: Any, level: int = logging.WARNING) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -1e9) < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg += f" ({suppressed} similar messages suppressed)"
        log.log(level, msg, *args)


def _default_spool(target: str) -> Path:
    slug = "".join(c if c.isalnum() else "_" for c in target.split("://")[-1])[:40].strip("_")
    digest = hashlib.sha256(target.encode()).hexdigest()[:8]
    return Path(os.environ.get(SPOOL_DIR_ENV, "./.tuneloop/spool")) / f"{slug}-{digest}.jsonl"


def _close_at_exit(ref: weakref.ref) -> None:
    logger = ref()
    if logger is not None:
        logger.close(timeout=logger.exit_timeout)


def _reinit_after_fork(ref: weakref.ref) -> None:
    logger = ref()
    if logger is not None and not logger.closed:
        try:
            logger._start_fresh(after_fork=True)
        except Exception as exc:  # never break the host's fork
            log.error("tuneloop capture: cannot restart the writer after fork: %s", exc)


class UsageLogger:
    """Log interactions and feedback into a database, or to a tuneloop server.

    Args:
        db_path: SQLite file (default ``./.tuneloop/tuneloop.db``, or ``$TUNELOOP_DB_PATH``).
        url: a database URL instead (``postgresql+psycopg://...``).
        endpoint: a tuneloop server (``http://host:8000``): remote mode, over HTTP.
        api_key: the ``ingest`` key sent as ``Authorization: Bearer`` in remote mode.
        db: an open :class:`tuneloop.store.Database` to use (not closed by ``close()``).
        batch_size: rows per transaction / request.
        flush_interval: seconds a row may wait in the queue before the writer wakes up.
        max_queue: rows held in memory at most; then ``on_full`` applies.
        on_full: ``"block"`` (wait up to ``block_timeout`` s, then drop) or ``"drop"``.
        spool_path: the spool file (default under ``./.tuneloop/spool/``).
        timeout: HTTP timeout in seconds; max_attempts: tries per batch before spooling.
        exit_timeout: how long ``close()`` at interpreter exit may take.

    >>> import tempfile, os
    >>> with UsageLogger(db_path=os.path.join(tempfile.mkdtemp(), "u.db")) as lg:
    ...     rid = lg.log(query="2+2?", response="4", model="m", latency_ms=12)
    ...     _ = lg.record_feedback(rid, feedback=1)
    ...     s = lg.get_statistics()
    >>> s["total"], s["positive_rate"], s["dropped"]
    (1, 1.0, 0)
    """

    def __init__(self, db_path: str | os.PathLike | None = None, *, url: str | None = None,
                 endpoint: str | None = None, api_key: str | None = None, db: Any = None,
                 batch_size: int = 1000, flush_interval: float = 0.5, max_queue: int = 100_000,
                 on_full: str = "block", block_timeout: float = 0.5,
                 spool_path: str | os.PathLike | None = None, timeout: float = 10.0,
                 max_attempts: int = 3, exit_timeout: float = 10.0) -> None:
        self._check_config(batch_size, flush_interval, max_queue, on_full, block_timeout, max_attempts)
        self.batch_size, self.flush_interval, self.max_queue = batch_size, flush_interval, max_queue
        self.on_full, self.block_timeout = on_full, block_timeout
        self.max_attempts, self.exit_timeout = max_attempts, exit_timeout
        self._db = None
        if endpoint is not None:
            if db_path is not None or url is not None or db is not None:
                raise ConfigError("endpoint: give a server endpoint or a database (db_path/url/db), not both")
            if not endpoint.startswith(("http://", "https://")):
                raise ConfigError(f"endpoint: must start with http:// or https://, got {endpoint!r}")
            self._sink: DatabaseSink | HttpSink = HttpSink(endpoint, api_key or os.environ.get("TUNELOOP_API_KEY"),
                                                           timeout)
            target = endpoint
        else:
            from tuneloop.store import Database

            owned = db is None
            self._db = db if db is not None else Database.open(url, path=db_path)
            self._sink = DatabaseSink(self._db, owned=owned)
            target = self._db.url.render_as_string(hide_password=True)
        self._spool = Spool(spool_path or _default_spool(target))
        self._rejects = Spool(self._spool.path.with_name(self._spool.path.stem + ".rejected.jsonl"))
        self._warn = _RateLimitedWarning()
        self._dropped = self.delivered = self.spooled = self.rejected = 0
        self.closed = False
        self._start_fresh()
        self._atexit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._atexit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=functools.partial(_reinit_after_fork, weakref.ref(self)))

    @staticmethod
    def _check_config(batch_size: int, flush_interval: float, max_queue: int, on_full: str,
                      block_timeout: float, max_attempts: int) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size: must be an integer >= 1, got {batch_size!r}")
        if not isinstance(max_queue, int) or max_queue < 1:
            raise ConfigError(f"max_queue: must be an integer >= 1, got {max_queue!r}")
        if not flush_interval > 0:
            raise ConfigError(f"flush_interval: must be > 0 seconds, got {flush_interval!r}")
        if on_full not in ("block", "drop"):
            raise ConfigError(f"on_full: must be 'block' or 'drop', got {on_full!r}")
        if not block_timeout >= 0:
            raise ConfigError(f"block_timeout: must be >= 0 seconds, got {block_timeout!r}")
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise ConfigError(f"max_attempts: must be an integer >= 1, got {max_attempts!r}")

    def _start_fresh(self, after_fork: bool = False) -> None:
        """(Re)create the queue and the writer thread (a forked child has no writer thread)."""
        self._q: deque[Any] = deque()
        self._wake = threading.Event()
        self._space = threading.Condition()
        self._blocked = 0
        self._lock = threading.Lock()
        self._stopping = False
        self._deadline: float | None = None
        self._down_until = 0.0
        self._down_streak = 0
        if after_fork:
            if self._db is not None:
                self._db.engine.dispose(close=False)  # never share the parent's connections
            if isinstance(self._sink, HttpSink):
                self._sink._client = None
        self._spool_dirty = self._spool.pending()
        self._thread = threading.Thread(target=self._run, name="tuneloop-capture-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ public API
    def log(self, query: str | None = None, response: str | None = None, model: str | None = None,
            expert: str | None = None, latency_ms: float | None = None, quality_score: float | None = None,
            token_count: int | None = None, user_id: str | None = None, session_id: str | None = None,
            messages: Sequence[dict[str, Any]] | None = None, metadata: dict[str, Any] | None = None,
            id: str | None = None, version_id: str | None = None, experiment_id: str | None = None,
            arm: str | None = None, **extra: Any) -> str:
        """Queue one interaction and return its id (``id`` if given, else a new UUIDv7).

        ``query`` defaults to the last user message of ``messages``. Other interaction
        columns (``prompt_tokens``, ``cost``, ``trace_id``, ``ts``, ...) may be passed as
        keywords; unknown keywords go into the metadata. Logging an id twice stores one row.
        """
        ts = extra.pop("ts", None) if extra else None
        row = prepare_interaction(
            query, response, messages, metadata, id, ts, model=model, expert=expert, latency_ms=latency_ms,
            quality_score=quality_score, token_count=token_count, user_id=user_id, session_id=session_id,
            version_id=version_id, experiment_id=experiment_id, arm=arm, extra=extra)
        self._put(row)
        return row["id"]

    def record_feedback(self, id: str, feedback: float | None = None, text: str | None = None,
                        kind: str = "thumbs", value: float | None = None, source: str = "user",
                        *, user_id: str | None = None, metadata: dict[str, Any] | None = None,
                        feedback_id: str | None = None) -> str:
        """Queue feedback on interaction ``id`` and return the feedback's id.

        ``feedback`` is the seed's name for the value (thumbs: 1 good, -1 bad, 0 neutral);
        ``value`` the general one (rating 1-5, dwell seconds, ...). Text alone is a comment.
        Bad values raise :class:`ValidationError` here, before anything is queued.
        """
        if feedback is not None and value is not None:
            raise ValidationError("value: give feedback or value, not both", field="value")
        value = feedback if value is None else value
        if kind == "thumbs" and value is None and text:
            kind = "comment"
        row = feedback_row(id, kind=kind, value=value, text=text, source=source, user_id=user_id,
                           meta=metadata, id=feedback_id)
        self._put(row)
        return row["id"]

    def log_deferred(self, item: Any) -> bool:
        """Queue an object whose ``row()`` returns an interaction row (or None), called on the
        writer thread: how ``@trace`` spans are logged, so building the row is off the
        caller's path. The caller pays a deque append. False if the row was dropped."""
        return self._put(item)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued before this call is committed (or, remote and down,
        durably spooled; a reachable server also gets the spool replayed). False on timeout."""
        if threading.current_thread() is self._thread:
            return False
        if not self._thread.is_alive():
            return not self._q
        marker = _Flush()
        self._q.append(marker)  # past the bound on purpose: a flush must never be dropped
        self._wake.set()
        return marker.done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Flush and stop the writer (waiting at most ``timeout`` s; what the database or
        server did not take by then is spooled). Later ``log()`` calls are dropped."""
        if self.closed:
            return
        self.closed = True
        atexit.unregister(self._atexit)
        self._deadline = time.monotonic() + timeout
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout + 5.0)
        if self._thread.is_alive():
            log.error("tuneloop capture: writer still busy after close(timeout=%s); %d items in memory",
                      timeout, len(self._q))
            return
        if self._q:  # a log() that raced with close(): the writer is gone, deliver here
            self._drain()
        self._sink.close()

    def __enter__(self) -> "UsageLogger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def dropped(self) -> int:
        """Rows dropped because the queue was full (or the logger closed)."""
        return self._dropped

    @property
    def queued(self) -> int:
        """Rows waiting in memory for the writer."""
        return len(self._q)

    @property
    def spool_path(self) -> Path:
        return self._spool.path

    @property
    def db(self) -> Any:
        """The :class:`tuneloop.store.Database` in local mode (None in remote mode)."""
        return self._db

    def counters(self) -> dict[str, int]:
        """dropped, queued, delivered, spooled (ever), spool_pending (now), rejected."""
        return {"dropped": self._dropped, "queued": self.queued, "delivered": self.delivered,
                "spooled": self.spooled, "spool_pending": self._spool.count() if self._spool_dirty else 0,
                "rejected": self.rejected}

    def get_statistics(self, since: Any = None) -> dict[str, Any]:
        """Flush, then :func:`tuneloop.capture.statistics` (or the server's ``/v1/stats``)
        plus this logger's :meth:`counters`."""
        self.flush(timeout=30.0)
        if isinstance(self._sink, HttpSink):
            try:
                stats = dict(self._sink.stats(since))
            except Exception as exc:
                raise UpstreamError(f"cannot read statistics from {self._sink.endpoint}: {exc}") from exc
        else:
            stats = _statistics(self._db, since)
        stats.update(self.counters())
        return stats

    def iter_interactions(self, start: Any = None, end: Any = None, model: str | None = None,
                          chunk: int = 5000) -> Iterator[dict[str, Any]]:
        """Flush, then stream stored interactions with ``start <= ts < end`` (local mode)."""
        if self._db is None:
            raise ConfigError("iter_interactions: needs a database; in remote mode use `tuneloop export` "
                              "on the server")
        self.flush(timeout=30.0)
        return _iter_interactions(self._db, start, end, model=model, chunk=chunk)

    # ------------------------------------------------------------ enqueue
    def _put(self, item: Row) -> bool:
        q = self._q
        if self.closed:
            self._drop("logger is closed")
            return False
        if len(q) >= self.max_queue and not self._wait_for_room():
            self._drop("queue full")
            return False
        q.append(item)
        if len(q) >= self.batch_size and not self._wake.is_set():
            self._wake.set()
        return True

    def _wait_for_room(self) -> bool:
        if self.on_full == "drop" or self.block_timeout == 0:
            return False
        deadline = time.monotonic() + self.block_timeout
        with self._space:
            self._blocked += 1
            try:
                while len(self._q) >= self.max_queue:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._wake.set()
                    self._space.wait(min(left, 0.05))
                return True
            finally:
                self._blocked -= 1

    def _drop(self, why: str) -> None:
        with self._lock:
            self._dropped += 1
            total = self._dropped
        self._warn("drop", "tuneloop capture dropped a row (%s); %d dropped so far", why, total)

    # ------------------------------------------------------------ writer thread
    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                if self._spool_dirty and time.monotonic() >= self._down_until:
                    self._replay()
                self._drain()
            except Exception as exc:  # a bug must not kill the writer; items stay queued
                log.exception("tuneloop capture writer: unexpected error: %s", exc)
                time.sleep(0.1)
            if self._stopping and not self._q:
                return

    def _drain(self) -> None:
        while self._q:
            items, marker = self._take()
            if items:
                self._deliver(items)
            if marker is not None:
                if self._spool_dirty:
                    self._replay()
                marker.done.set()
            if self._blocked:
                with self._space:
                    self._space.notify_all()

    def _take(self) -> tuple[list[Row], _Flush | None]:
        items: list[Row] = []
        popleft = self._q.popleft
        for _ in range(self.batch_size):
            try:
                item = popleft()
            except IndexError:
                break
            if item.__class__ is _Flush:
                return items, item
            if item.__class__ is not dict:  # deferred (log_deferred): the row is built here
                item = self._materialize(item)
                if item is None:
                    continue
            items.append(item)
        return items, None

    def _materialize(self, item: Any) -> Row | None:
        try:
            return item.row()
        except Exception as exc:  # a bug in a deferred row loses that row, never the writer
            with self._lock:
                self._dropped += 1
            self._warn("deferred", "tuneloop capture: cannot build a deferred row (%s: %s); dropped",
                       type(exc).__name__, exc, level=logging.ERROR)
            return None

    @staticmethod
    def _split(items: Sequence[Row]) -> tuple[list[Row], list[Row]]:
        interactions = [complete_interaction(r) for r in items if "interaction_id" not in r]
        return interactions, [r for r in items if "interaction_id" in r]

    @staticmethod
    def _tagged(items: Sequence[Row]) -> list[tuple[str, Row]]:
        return [("f" if "interaction_id" in r else "i", r) for r in items]

    def _deliver(self, items: list[Row]) -> None:
        """Write one batch; never raises. Retries, spools or bisects as the sink says."""
        attempt = 0
        while True:
            if self._sink.remote and time.monotonic() < self._down_until and not self._stopping:
                return self._to_spool(items)
            try:
                self._sink.write(*self._split(items))
                self.delivered += len(items)
                self._mark_up()
                return None
            except Exception as exc:
                verdict, attempt = self._sink.classify(exc), attempt + 1
                if verdict in (REJECT, SPLIT):  # too big, or bad rows inside: bisect down to them
                    if len(items) == 1:
                        return self._reject(items, exc)
                    half = len(items) // 2
                    self._deliver(items[:half])
                    return self._deliver(items[half:])
                if verdict == HOLD:
                    self._warn("hold", "tuneloop capture: %s refused this client (%s); rows spooled to %s",
                               self._sink.describe(), exc, self._spool.path, level=logging.ERROR)
                    self._mark_down(60.0)
                    return self._to_spool(items)
                self._warn("retry", "tuneloop capture: cannot write to %s (%s); retrying, rows kept",
                           self._sink.describe(), exc)
                past_deadline = self._deadline is not None and time.monotonic() >= self._deadline
                if past_deadline or (self._sink.remote and attempt >= self.max_attempts):
                    self._mark_down(getattr(exc, "retry_after", None))
                    return self._to_spool(items)
                self._sleep(self._backoff(attempt, getattr(exc, "retry_after", None)))

    def _reject(self, items: list[Row], exc: BaseException) -> None:
        self.rejected += len(items)
        self._warn("reject", "tuneloop capture: %s rejected %d row(s) (%s); kept in %s",
                   self._sink.describe(), len(items), exc, self._rejects.path, level=logging.ERROR)
        try:
            self._rejects.append(self._tagged(items))
        except OSError as err:
            log.error("tuneloop capture: cannot keep rejected rows in %s: %s", self._rejects.path, err)

    def _to_spool(self, items: list[Row]) -> None:
        try:
            self._spool.append(self._tagged(items))
        except OSError as err:
            with self._lock:
                self._dropped += len(items)
            log.error("tuneloop capture: cannot spool %d rows to %s (%s): they are lost",
                      len(items), self._spool.path, err)
            return
        self.spooled += len(items)
        self._spool_dirty = True
        self._warn("spool", "tuneloop capture: %s unavailable; %d rows spooled to %s so far",
                   self._sink.describe(), self.spooled, self._spool.path)

    def _replay(self) -> bool:
        """Send what the spool holds; on failure put the rest back. True when all went."""
        try:
            for path in self._spool.claim():
                batches = read_batches(path, self.batch_size)
                for tagged, lines in batches:
                    items = [r for _, r in tagged]
                    try:
                        self._sink.write(*self._split(items))
                    except Exception as exc:
                        if self._sink.classify(exc) in (REJECT, SPLIT):
                            self._deliver(items)  # bisects to the bad rows, keeps the rest
                            continue
                        self._spool.append_lines(chain(lines, (ln for _, more in batches for ln in more)))
                        path.unlink(missing_ok=True)
                        self._mark_down(getattr(exc, "retry_after", None))
                        return False
                    self.delivered += len(items)
                path.unlink(missing_ok=True)
            self._mark_up()
            self._spool_dirty = self._spool.pending()
            return not self._spool_dirty
        except OSError as err:
            self._warn("spool-io", "tuneloop capture: cannot replay spool %s: %s", self._spool.path, err)
            return False

    def _mark_up(self) -> None:
        self._down_streak, self._down_until = 0, 0.0

    def _mark_down(self, retry_after: float | None = None) -> None:
        """Circuit breaker for remote mode: while down, batches go straight to the spool."""
        self._down_streak += 1
        delay = retry_after if retry_after is not None else self._backoff(self._down_streak, cap=30.0)
        self._down_until = time.monotonic() + delay

    @staticmethod
    def _backoff(attempt: int, retry_after: float | None = None, cap: float = 5.0) -> float:
        if retry_after is not None:
            return min(retry_after, 60.0)
        base = min(cap, 0.05 * 2 ** attempt)
        return base * random.uniform(0.5, 1.0)  # jitter: many clients must not retry in step

    def _sleep(self, seconds: float) -> None:
        if self._deadline is not None:
            seconds = max(0.0, min(seconds, self._deadline - time.monotonic()))
        time.sleep(seconds)

    def __repr__(self) -> str:
        return f"UsageLogger({self._sink.describe()!r}, queued={self.queued}, dropped={self._dropped})"
