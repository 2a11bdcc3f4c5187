"""Daily satisfaction and the significance of its slope (seed 000's performance drift)."""
from __future__ import annotations

import sqlalchemy as sa

from tuneloop.store import Database, schema

DAY = 86400.0


def daily_satisfaction(db: Database, end: float, days: int) -> list[tuple[int, float, int]]:
    """(day index, share of positive thumbs, n) for each day with explicit thumbs feedback."""
    f = schema.feedback
    rows = db.fetch_all(sa.select(f.c.ts, f.c.value).where(f.c.kind == "thumbs", f.c.ts > end - days * DAY, f.c.ts <= end))
    per_day: dict[int, list[int]] = {}
    for r in rows:
        day = int((r["ts"] - (end - days * DAY)) // DAY)
        pos_n = per_day.setdefault(day, [0, 0])
        pos_n[0] += 1 if (r["value"] or 0) > 0 else 0
        pos_n[1] += 1
    return [(d, p / n, n) for d, (p, n) in sorted(per_day.items())]


def satisfaction_slope(db: Database, end: float, days: int) -> tuple[float, float] | None:
    """Least-squares slope per day of daily satisfaction and its two-sided p-value."""
    from scipy.stats import linregress

    series = daily_satisfaction(db, end, days)
    if len(series) < 3:
        return None
    fit = linregress([d for d, _, _ in series], [s for _, s, _ in series])
    return float(fit.slope), float(fit.pvalue)
