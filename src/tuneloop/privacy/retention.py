"""Retention: interactions and feedback older than ``retention_days`` are deleted, in batches.

>>> from tuneloop.store import Database
>>> db = Database.open("sqlite:///:memory:")
>>> enforce_retention(db, 30).interactions
0
>>> retention_cutoff(30, now=86_400 * 31)
86400.0

The loop calls :func:`enforce_retention` once per cycle (or the operator runs
``tuneloop retention run``). Per batch of ``batch_size`` expired interactions, one short
transaction deletes them with their feedback, annotations and retrieval logs, so
ingestion never waits long for the write lock (SQLite has one writer). Then feedback and
retrieval logs older than the cutoff whose interaction is still there (or never was), and
rows that arrived for deleted users, go too.

Kept: golden examples (curated test cases, versioned by the evaluate package; they hold
their own copy of the text), dataset snapshot metadata and membership ids (lineage), model
versions, the audit log. One ``retention.enforce`` audit row per run records the cutoff and
the counts, also when the run stops half-way (what was deleted stays deleted).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from tuneloop.errors import ValidationError
from tuneloop.ids import now as _now
from tuneloop.privacy.audit import record
from tuneloop.privacy.deletion import purge_subject_rows
from tuneloop.store import schema

__all__ = ["RetentionReport", "enforce_retention", "retention_cutoff"]

log = logging.getLogger("tuneloop.privacy")
_IT, _FB, _AN = schema.interactions, schema.feedback, schema.annotations
_RL = getattr(schema, "retrieval_logs", None)  # the retrieval package's table (migration 0002)
_DAY = 86_400.0


@dataclass(frozen=True)
class RetentionReport:
    """What one retention run deleted."""

    retention_days: float
    cutoff: float
    interactions: int = 0
    feedback: int = 0
    annotations: int = 0
    retrieval_logs: int = 0
    deleted_user_rows: int = 0
    batches: int = 0
    complete: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def retention_cutoff(retention_days: float, now: float | None = None) -> float:
    """Epoch seconds before which rows expire (pure; ``now`` defaults to the clock)."""
    if isinstance(retention_days, bool) or not isinstance(retention_days, (int, float)) or not retention_days > 0:
        raise ValidationError(f"retention_days: must be a number > 0, got {retention_days!r}",
                              field="retention_days")
    return float((now if now is not None else _now()) - retention_days * _DAY)


def _batch(db: Any, cutoff: float, batch_size: int) -> dict[str, int]:
    """Delete one batch of expired interactions with their children; counts per table."""
    with db.begin() as conn:
        ids = [r[0] for r in conn.execute(sa.select(_IT.c.id).where(_IT.c.ts < cutoff)
                                          .order_by(_IT.c.ts).limit(batch_size))]
        if not ids:
            return {"interactions": 0}
        out = {"feedback": conn.execute(_FB.delete().where(_FB.c.interaction_id.in_(ids))).rowcount,
               "annotations": conn.execute(_AN.delete().where(_AN.c.interaction_id.in_(ids))).rowcount}
        if _RL is not None:
            out["retrieval_logs"] = conn.execute(_RL.delete().where(_RL.c.interaction_id.in_(ids))).rowcount
        out["interactions"] = conn.execute(_IT.delete().where(_IT.c.id.in_(ids))).rowcount
    return {k: max(v, 0) for k, v in out.items()}


def _old_rows(db: Any, table: sa.Table, cutoff: float, batch_size: int) -> int:
    """One batch of ``table`` rows older than the cutoff (feedback, retrieval logs without an interaction)."""
    with db.begin() as conn:
        ids = [r[0] for r in conn.execute(sa.select(table.c.id).where(table.c.ts < cutoff).limit(batch_size))]
        if not ids:
            return 0
        return max(conn.execute(table.delete().where(table.c.id.in_(ids))).rowcount, 0)


def enforce_retention(db: Any, retention_days: float, *, actor: str = "retention", batch_size: int = 1000,
                      now: float | None = None, max_batches: int | None = None,
                      progress: Callable[[int], None] | None = None) -> RetentionReport:
    """Delete interactions (with their feedback and annotations) and feedback older than
    ``retention_days``; sweep rows of deleted users; audit the run.

    ``max_batches`` bounds one run (the next run continues); ``progress(n)`` is called with
    the interactions deleted per batch (a progress bar's ``advance``).
    """
    cutoff = retention_cutoff(retention_days, now)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValidationError(f"batch_size: must be an integer >= 1, got {batch_size!r}", field="batch_size")
    totals = {"interactions": 0, "feedback": 0, "annotations": 0, "retrieval_logs": 0, "deleted_user_rows": 0,
              "batches": 0}
    try:
        complete = _expire(db, cutoff, batch_size, max_batches, totals, progress)
        if complete:
            for name, table in (("feedback", _FB), ("retrieval_logs", _RL)):
                while table is not None and (n := _old_rows(db, table, cutoff, batch_size)) > 0:
                    totals[name] += n
            totals["deleted_user_rows"] = purge_subject_rows(db)
    except BaseException:  # stopped half-way: the audit log still says what was deleted
        _finish(db, actor, retention_days, cutoff, totals, complete=False, quiet=True)
        raise
    return _finish(db, actor, retention_days, cutoff, totals, complete=complete)


def _expire(db: Any, cutoff: float, batch_size: int, max_batches: int | None, totals: dict[str, int],
            progress: Callable[[int], None] | None) -> bool:
    """Batches of expired interactions until none is left (True) or ``max_batches`` ran (False)."""
    while max_batches is None or totals["batches"] < max_batches:
        counts = _batch(db, cutoff, batch_size)
        if counts["interactions"] == 0:
            return True
        totals["batches"] += 1
        for name, n in counts.items():
            totals[name] += n
        if progress is not None:
            progress(counts["interactions"])
    return False


def _finish(db: Any, actor: str, days: float, cutoff: float, totals: dict[str, int], *, complete: bool,
            quiet: bool = False) -> RetentionReport:
    report = RetentionReport(retention_days=float(days), cutoff=cutoff, complete=complete, **totals)
    try:
        with db.begin() as conn:
            record(conn, actor, "retention.enforce", "retention", {"retention_days": days, "cutoff": cutoff},
                   report.to_dict())
    except Exception:
        if not quiet:
            raise
        log.exception("retention: cannot write the audit row of an interrupted run")
    return report
