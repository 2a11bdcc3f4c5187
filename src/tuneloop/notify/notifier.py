"""The notifier: sweep the store for events, record one delivery per (webhook, event) in
``webhook_deliveries``, and POST them on a daemon thread -- never in the loop's way.

1. ``sweep()`` (the loop calls it after every iteration, once its state is persisted) reads
   the events since the last sweep (:mod:`tuneloop.notify.events`) and inserts a ``pending``
   delivery per matching webhook; the id is derived from (webhook, event subject), so a
   repeated sweep or a restarted daemon never sends an event twice.
2. The sender thread *claims* a delivery (``pending -> sending`` in one conditional UPDATE,
   so two processes never both send it), POSTs it with retries, and records each attempt:
   ``delivered`` or ``failed`` with the HTTP status and the error.
3. A delivery left ``pending`` or stuck in ``sending`` by a crash is picked up by the next
   sweep (after ``STALE_S`` for ``sending``). ``close()`` waits a bounded time at exit.

Errors in any step are logged and counted, never raised into the loop.

>>> from tuneloop.store import Database
>>> n = Notifier(Database.open("sqlite:///:memory:"), [{"url": "http://127.0.0.1:9/hook"}])
>>> n.sweep()
[]
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from tuneloop.ids import now
from tuneloop.notify.events import collect_events
from tuneloop.notify.webhooks import Attempt, WebhookConfig, body_for, post_with_retries
from tuneloop.store import Database, schema

log = logging.getLogger("tuneloop.notify")
_NAMESPACE = uuid.UUID("0b7e4f0c-2f6a-4d8e-9c61-7d3c0a1e5b42")
STALE_S = 600.0        # a delivery 'sending' this long was abandoned by a dead process
SWEEP_OVERLAP_S = 300.0  # rows are stamped before their transaction commits: look back a little


def delivery_id(hook: str, subject: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{hook}|{subject}"))


class Notifier:
    """Webhooks of one loop. ``hooks``: :class:`WebhookConfig` objects or their dicts."""

    def __init__(self, db: Database, hooks: Iterable[WebhookConfig | Mapping[str, Any]], *,
                 lookback_hours: float = 24.0, client: Any = None) -> None:
        self.db = db
        self.hooks = {h.name: h for h in (WebhookConfig.from_dict(x) for x in hooks)}
        self.lookback_s = lookback_hours * 3600.0
        self.client = client  # an httpx.Client to reuse (tests, proxies); None: one per delivery
        self.errors = 0
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._queued: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._watermark: float | None = None

    # 1. events -> pending deliveries
    def sweep(self, t: float | None = None) -> list[str]:
        """Record deliveries for new events and queue every pending one; returns the queued ids."""
        if not self.hooks:
            return []
        try:
            t = now() if t is None else t
            since = t - self.lookback_s if self._watermark is None else max(t - self.lookback_s, self._watermark - SWEEP_OVERLAP_S)
            kinds = {e for h in self.hooks.values() for e in h.events}
            self.enqueue(collect_events(self.db, since, kinds))
            self._watermark = t
            return self._queue_pending()
        except Exception:  # the loop must go on whatever the notifier meets
            self.errors += 1
            log.exception("webhook sweep failed")
            return []

    def enqueue(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Insert one ``pending`` delivery per (webhook that wants it, event); existing ones are kept."""
        rows, t = [], now()
        for ev in events:
            for hook in self.hooks.values():
                if hook.wants(ev["event"]):
                    did = delivery_id(hook.name, ev["subject"])
                    rows.append({"id": did, "hook": hook.name, "url": hook.safe_url, "event": ev["event"],
                                 "subject": ev["subject"], "status": "pending", "attempts": 0,
                                 "payload": body_for(hook, did, ev), "created_at": t, "updated_at": t})
        if rows:
            with self.db.begin() as conn:
                self.db.insert_ignore(conn, schema.webhook_deliveries, rows)
        return len(rows)

    def _queue_pending(self) -> list[str]:
        w = schema.webhook_deliveries
        stale = now() - STALE_S
        ids = [r["id"] for r in self.db.fetch_all(
            sa.select(w.c.id).where(w.c.hook.in_(list(self.hooks)), sa.or_(
                w.c.status == "pending", sa.and_(w.c.status == "sending", w.c.updated_at < stale)))
            .order_by(w.c.created_at))]
        queued = []
        with self._lock:
            for did in ids:
                if did not in self._queued:
                    self._queued.add(did)
                    self._queue.put(did)
                    queued.append(did)
            if queued and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._work, name="tuneloop-webhooks", daemon=True)
                self._thread.start()
        return queued

    # 2. the sender thread
    def _work(self) -> None:
        while True:
            did = self._queue.get()
            try:
                if did is None:
                    return
                self._deliver(did)
            except Exception:
                self.errors += 1
                log.exception("webhook delivery %s failed unexpectedly", did)
            finally:
                with self._lock:
                    self._queued.discard(did)
                self._queue.task_done()

    def _claim(self, did: str) -> dict[str, Any] | None:
        w = schema.webhook_deliveries
        t = now()
        with self.db.begin() as conn:
            claimed = conn.execute(w.update().where(w.c.id == did, sa.or_(
                w.c.status == "pending", sa.and_(w.c.status == "sending", w.c.updated_at < t - STALE_S)))
                .values(status="sending", updated_at=t)).rowcount
            if claimed != 1:
                return None
            return dict(conn.execute(sa.select(w).where(w.c.id == did)).mappings().one())

    def _record(self, did: str, attempt: Attempt, final: bool) -> None:
        w = schema.webhook_deliveries
        t = now()
        status = "delivered" if attempt.delivered else ("failed" if final else "sending")
        values = {"attempts": attempt.number, "response_status": attempt.status, "error": attempt.error,
                  "status": status, "updated_at": t}
        if attempt.delivered:
            values["delivered_at"] = t
        with self.db.begin() as conn:
            conn.execute(w.update().where(w.c.id == did).values(**values))

    def _deliver(self, did: str) -> None:
        row = self._claim(did)
        if row is None:
            return  # delivered meanwhile, or another process has it
        hook = self.hooks.get(row["hook"])
        if hook is None:
            return
        last = post_with_retries(hook, did, row["event"], row["payload"] or {}, client=self.client,
                                 on_attempt=lambda a: self._record(did, a, False))
        self._record(did, last, True)
        if not last.delivered:
            log.warning("webhook %s: %s %s failed after %d attempt(s): %s", hook.name, row["event"], row["subject"],
                        last.number, last.error)

    # 3. waiting, closing
    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued delivery is done (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._queued:
                    return True
            time.sleep(0.02)
        return False

    def close(self, timeout: float = 10.0) -> None:
        """Give queued deliveries ``timeout`` seconds, then stop; the rest stay pending for next time."""
        self.flush(timeout)
        with self._lock:
            thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout=1.0)


def recent_deliveries(db: Database, limit: int = 20) -> list[dict[str, Any]]:
    """Newest first, without payloads."""
    w = schema.webhook_deliveries
    cols = [c for c in w.c if c.name != "payload"]
    return db.fetch_all(sa.select(*cols).order_by(w.c.created_at.desc(), w.c.id).limit(limit))
