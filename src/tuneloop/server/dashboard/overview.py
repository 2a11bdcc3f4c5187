"""The overview page's data: champion, challenger, live experiment, traffic and satisfaction.

Everything here must stay fast with millions of interactions: daily totals come from the
cached :class:`~tuneloop.server.dashboard.rollup.DailyRollup`, latency from the last hour's
rows only (an index range on ``ts``), the all-time count from a 60-second memo, and the
live experiment's comparison (which reads both arms) from a 30-second memo, loaded by the
page after it is shown.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tuneloop.monitor.operations import ALL, error_rates, latency_percentiles
from tuneloop.monitor.reports import latest_drift
from tuneloop.server.dashboard.rollup import DAY, DailyRollup, Memo, trend_from_days
from tuneloop.store import Database, schema

__all__ = ["DashboardCache", "experiment_panel", "overview"]

RECENT_SECONDS = 3600.0
_RECENT_ROWS = 50_000


@dataclass
class DashboardCache:
    """Per-app caches shared by the pages."""

    rollup: DailyRollup
    memo: Memo

    @classmethod
    def for_db(cls, db: Database) -> "DashboardCache":
        return cls(DailyRollup(db), Memo())


def _sum(days: list, attr: str) -> float:
    return sum(getattr(d, attr) for d in days)


def _kpis(days: list) -> dict[str, Any]:
    week = days[-7:]
    n, errors, fb = _sum(week, "interactions"), _sum(week, "errors"), _sum(week, "feedback")
    return {"today": days[-1].interactions, "week": int(n), "week_errors": int(errors),
            "week_error_rate": errors / n if n else None, "week_feedback": int(fb),
            "week_satisfaction": _sum(week, "satisfaction_sum") / fb if fb else None,
            "month": int(_sum(days, "interactions"))}


def _recent(db: Database, at: float) -> dict[str, Any]:
    i = schema.interactions
    rows = db.fetch_all(sa.select(i.c.version_id, i.c.latency_ms, i.c.status, i.c.error)
                        .where(i.c.ts >= at - RECENT_SECONDS).order_by(i.c.ts.desc()).limit(_RECENT_ROWS))
    latency = latency_percentiles(rows)
    errors = error_rates(rows)
    return {"n": len(rows), "latency": latency.get(ALL), "errors": errors.get(ALL),
            "by_version": [(v, latency.get(v), errors.get(v)) for v in sorted(errors) if v != ALL]}


def _chart(days: list, trend: Any) -> dict[str, Any]:
    labels = [time.strftime("%m-%d", time.gmtime(d.day)) for d in days]
    daily: list[float | None] = [None] * len(days)
    rolling: list[float | None] = [None] * len(days)
    for k, idx in enumerate(trend.days):
        daily[idx], rolling[idx] = round(trend.daily[k], 4), round(trend.rolling[k], 4)
    fit = None
    if trend.direction != "insufficient":
        lo, hi = trend.days[0], trend.days[-1]  # no extrapolation past the days with feedback
        fit = [round(trend.intercept + trend.slope_per_day * k, 4) if lo <= k <= hi else None
               for k in range(len(days))]
    return {"satisfaction": {"type": "satisfaction", "labels": labels, "daily": daily, "rolling": rolling,
                             "fit": fit},
            "traffic": {"type": "traffic", "labels": labels, "interactions": [d.interactions for d in days],
                        "errors": [d.errors for d in days]}}


def _counts(db: Database) -> dict[str, int]:
    an, ge = schema.annotations, schema.golden_examples
    rows = db.fetch_all(sa.select(an.c.kind, sa.func.count().label("n")).where(an.c.status == "queued")
                        .group_by(an.c.kind))
    queued = {r["kind"]: int(r["n"]) for r in rows}
    proposed = db.scalar(sa.select(sa.func.count()).select_from(ge).where(ge.c.status == "proposed")) or 0
    return {"pairwise": queued.get("pairwise", 0), "rating": queued.get("rating", 0), "golden": int(proposed)}


def overview(db: Database, cache: DashboardCache, *, at: float | None = None) -> dict[str, Any]:
    """Everything the overview shows except the live comparison (see :func:`experiment_panel`).

    >>> db = Database.open("sqlite:///:memory:")
    >>> data = overview(db, DashboardCache.for_db(db))
    >>> data["champion"], data["kpis"]["today"], data["trend"].direction
    (None, 0, 'insufficient')
    """
    from tuneloop.experiments import records
    from tuneloop.registry.versions import Registry

    at = time.time() if at is None else at
    reg = Registry(db)
    days = cache.rollup.days(at, 30)
    trend = trend_from_days(days)
    lr = schema.loop_runs
    i = schema.interactions
    return {
        "champion": reg.get_alias("champion"), "challenger": reg.get_alias("challenger"),
        "running": records.running(db), "kpis": _kpis(days), "trend": trend, "charts": _chart(days, trend),
        "recent": _recent(db, at),
        "total": cache.memo.get("total", 60.0, lambda: int(db.scalar(sa.select(sa.func.count()).select_from(i)) or 0)),
        "drift": {k: latest_drift(db, k) for k in ("embedding", "behaviour", "operations")},
        "loop": db.fetch_one(sa.select(lr).order_by(lr.c.started_at.desc()).limit(1)),
        "counts": _counts(db), "window_days": 30, "day": DAY,
    }


def experiment_panel(db: Database, cache: DashboardCache, experiment_id: str) -> dict[str, Any]:
    """The live comparison of one experiment (lift, interval, decision), memoised 30 s."""
    from tuneloop.experiments import records
    from tuneloop.experiments.manager import ABTestManager

    exp = records.get(db, experiment_id)
    comparison = cache.memo.get(("compare", experiment_id), 30.0,
                                lambda: ABTestManager(db).compare_models(experiment_id))
    return {"exp": exp, "cmp": comparison, "stored": exp.decision}
