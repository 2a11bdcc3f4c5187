"""Daily totals for the overview, computed with indexed aggregate queries and cached per day.

The overview must answer in well under a second with millions of interactions in the
store, so it never reads rows: one ``GROUP BY`` day over the ``ts`` index per table, and
the totals of each UTC day are kept. Closed days are re-read every ``past_ttl_s`` (10 min:
late rows from a client's spool land in past days), today every ``today_ttl_s`` (15 s).

Satisfaction follows :func:`tuneloop.monitor.behaviour.satisfaction_score`, written in SQL:
thumbs +1 -> 1, -1 -> 0 (0 skipped), rating r -> (r - 1) / 4 clipped to [0, 1].
:func:`trend_from_days` then fits the same least-squares slope test on daily means as
:func:`tuneloop.monitor.behaviour.satisfaction_trend` and returns its
:class:`~tuneloop.monitor.behaviour.SatisfactionTrend`; days are UTC days here.

>>> from tuneloop.store import Database
>>> rollup = DailyRollup(Database.open("sqlite:///:memory:"))
>>> [d.interactions for d in rollup.days(end=10 * DAY, n_days=3)]
[0, 0, 0]
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from tuneloop.errors import ValidationError
from tuneloop.monitor.behaviour import DAY, SatisfactionTrend
from tuneloop.store import Database, schema

__all__ = ["DAY", "DailyRollup", "DayTotals", "Memo", "day_start", "trend_from_days"]


def day_start(ts: float) -> float:
    """The UTC midnight at or before ``ts``.

    >>> day_start(DAY * 3 + 5.0) == DAY * 3
    True
    """
    return math.floor(ts / DAY) * DAY


@dataclass(frozen=True)
class DayTotals:
    """One UTC day: traffic, errors and explicit satisfaction feedback."""

    day: float                 # UTC midnight, epoch seconds
    interactions: int = 0
    errors: int = 0
    feedback: int = 0          # satisfaction events (thumbs up/down, ratings)
    satisfaction_sum: float = 0.0
    positive: int = 0
    negative: int = 0

    @property
    def satisfaction(self) -> float | None:
        return self.satisfaction_sum / self.feedback if self.feedback else None


def _day_index(db: Database, column: sa.ColumnElement, base: float) -> sa.ColumnElement:
    offset = (column - base) / DAY
    if db.is_sqlite:  # ts >= base, so truncation is floor; SQLite may lack floor()
        return sa.cast(offset, sa.Integer)
    return sa.cast(sa.func.floor(offset), sa.Integer)


def _score() -> sa.ColumnElement:
    f = schema.feedback
    return sa.case((sa.and_(f.c.kind == "thumbs", f.c.value > 0), 1.0), (f.c.kind == "thumbs", 0.0),
                   (f.c.value <= 1, 0.0), (f.c.value >= 5, 1.0), else_=(f.c.value - 1.0) / 4.0)


def _query_range(db: Database, start: float, end: float) -> dict[float, DayTotals]:
    """Totals of every day in [start, end) (both UTC midnights): two aggregate queries."""
    i, f = schema.interactions, schema.feedback
    day_i = _day_index(db, i.c.ts, start).label("d")
    errors = sa.func.sum(sa.case((i.c.status == "error", 1), else_=0))
    traffic = (sa.select(day_i, sa.func.count(), errors).where(i.c.ts >= start, i.c.ts < end).group_by(day_i))
    day_f = _day_index(db, f.c.ts, start).label("d")
    score = _score()
    votes = (sa.select(day_f, sa.func.count(), sa.func.sum(score), sa.func.sum(sa.case((score > 0.5, 1), else_=0)),
                       sa.func.sum(sa.case((score < 0.5, 1), else_=0)))
             .where(f.c.ts >= start, f.c.ts < end, f.c.value.is_not(None),
                    sa.or_(f.c.kind == "rating", sa.and_(f.c.kind == "thumbs", f.c.value != 0)))
             .group_by(day_f))
    out: dict[float, dict[str, Any]] = {}
    with db.connect() as conn:
        for d, n, err in conn.execute(traffic):
            out.setdefault(start + int(d) * DAY, {}).update(interactions=int(n), errors=int(err or 0))
        for d, n, s, pos, neg in conn.execute(votes):
            out.setdefault(start + int(d) * DAY, {}).update(feedback=int(n), satisfaction_sum=float(s or 0.0),
                                                           positive=int(pos or 0), negative=int(neg or 0))
    days = np.arange(start, end, DAY)
    return {float(d): DayTotals(float(d), **out.get(float(d), {})) for d in days}


class DailyRollup:
    """Per-day totals, cached (see the module docstring for how fresh)."""

    def __init__(self, db: Database, *, today_ttl_s: float = 15.0, past_ttl_s: float = 600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.db, self.today_ttl_s, self.past_ttl_s, self.clock = db, today_ttl_s, past_ttl_s, clock
        self._cache: dict[float, tuple[float, DayTotals]] = {}
        self._lock = threading.Lock()

    def _stale(self, day: float, at: float) -> bool:
        hit = self._cache.get(day)
        if hit is None:
            return True
        ttl = self.today_ttl_s if day + DAY > at else self.past_ttl_s
        return at - hit[0] > ttl

    def days(self, end: float | None = None, n_days: int = 30) -> list[DayTotals]:
        """The ``n_days`` UTC days up to and including the day of ``end``, oldest first."""
        if n_days < 1:
            raise ValidationError("n_days must be at least 1", field="n_days")
        at = self.clock()
        last = day_start(at if end is None else end)
        wanted = [last - k * DAY for k in range(n_days - 1, -1, -1)]
        with self._lock:
            stale = [d for d in wanted if self._stale(d, at)]
        if stale:  # one query over the span of stale days; usually just today
            fresh = _query_range(self.db, min(stale), max(stale) + DAY)
            with self._lock:
                for d, totals in fresh.items():
                    self._cache[d] = (at, totals)
                if len(self._cache) > 4 * 366:
                    self._cache = {d: v for d, v in self._cache.items() if d in fresh}
        with self._lock:
            return [self._cache[d][1] for d in wanted]

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()


def trend_from_days(days: Sequence[DayTotals], *, rolling_days: int = 7, alpha: float = 0.05,
                    min_days: int = 3) -> SatisfactionTrend:
    """The satisfaction trend over ``days`` (consecutive UTC days, oldest first).

    Same statistics as :func:`tuneloop.monitor.behaviour.satisfaction_trend` (unweighted
    ``scipy.stats.linregress`` of daily means on the day index; trailing pooled rolling mean).

    >>> ds = [DayTotals(k * DAY, feedback=10, satisfaction_sum=10 - k) for k in range(6)]
    >>> trend_from_days(ds).direction
    'declining'
    """
    if not days:
        raise ValidationError("trend_from_days needs at least one day", field="days")
    sums = np.array([d.satisfaction_sum for d in days])
    counts = np.array([d.feedback for d in days], dtype=np.int64)
    present = np.flatnonzero(counts)
    daily = sums[present] / counts[present]
    lows = np.maximum(present - rolling_days + 1, 0)
    rolling = tuple(float(sums[lo:d + 1].sum() / counts[lo:d + 1].sum()) for lo, d in zip(lows, present))
    slope = intercept = p = r = float("nan")
    direction = "insufficient"
    if len(present) >= max(min_days, 3):
        if np.ptp(daily) == 0:  # a constant series has no trend (linregress would divide by zero)
            slope, intercept, p, r = 0.0, float(daily[0]), 1.0, 0.0
        else:
            from scipy.stats import linregress

            fit = linregress(present.astype(float), daily)
            slope, intercept, p, r = float(fit.slope), float(fit.intercept), float(fit.pvalue), float(fit.rvalue)
        direction = ("declining" if slope < 0 else "improving") if p < alpha else "flat"
    return SatisfactionTrend(days[0].day, days[-1].day + DAY, tuple(int(d) for d in present),
                             tuple(float(x) for x in daily), tuple(int(c) for c in counts[present]), rolling,
                             slope, intercept, p, r, alpha, False, direction,
                             {"events": int(counts.sum()), "days_with_feedback": int(len(present))})


class Memo:
    """A tiny time-to-live cache for values that are costly and may be a little stale.

    >>> m = Memo(); m.get("n", 60, lambda: 41 + 1)
    42
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._items: dict[Hashable, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, ttl_s: float, compute: Callable[[], Any]) -> Any:
        at = self.clock()
        with self._lock:
            hit = self._items.get(key)
        if hit is not None and at - hit[0] <= ttl_s:
            return hit[1]
        value = compute()
        with self._lock:
            if len(self._items) > 256:
                self._items.clear()
            self._items[key] = (at, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
