"""Read side of capture: usage statistics and streaming interactions, on SQLite and PostgreSQL.

>>> from tuneloop.store import Database
>>> from tuneloop.capture.records import interaction_row, write_interactions
>>> db = Database.open("sqlite:///:memory:")
>>> _ = write_interactions(db, [interaction_row(query="q", response="a", model="m", latency_ms=10)])
>>> s = statistics(db)
>>> s["total"], s["models"], s["latency_p50"]
(1, {'m': 1}, 10.0)
>>> [r["query"] for r in iter_interactions(db, model="m")]
['q']
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from tuneloop.capture.records import EXPLICIT_KINDS
from tuneloop.errors import ValidationError
from tuneloop.store import schema

I, F = schema.interactions, schema.feedback
PERCENTILES = (50, 95, 99)


# ---------------------------------------------------------------- pure core
def percentile_ranks(n: int, q: float) -> tuple[int, int, float]:
    """0-based ranks (lo, hi) and weight for the ``q``-th percentile of ``n`` sorted values.

    Linear interpolation between closest ranks, as numpy's default and PostgreSQL's
    ``percentile_cont``: value = v[lo] + w * (v[hi] - v[lo]).
    """
    pos = (n - 1) * q / 100.0
    lo = math.floor(pos)
    return lo, min(lo + 1, n - 1), pos - lo


def interpolate(values_at: dict[int, float], n: int, q: float) -> float | None:
    """The ``q``-th percentile from the sorted values at the ranks :func:`percentile_ranks` names."""
    if n == 0:
        return None
    lo, hi, w = percentile_ranks(n, q)
    return values_at[lo] + w * (values_at[hi] - values_at[lo])


@dataclass(frozen=True)
class Statistics:
    """Usage statistics of the captured interactions (see :func:`statistics`)."""

    total: int
    feedback_count: int
    feedback_rate: float
    positive_rate: float | None
    negative_rate: float | None
    avg_quality_score: float | None
    avg_latency_ms: float | None
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None
    models: dict[str, int]
    feedback_kinds: dict[str, int]
    first_ts: float | None
    last_ts: float | None
    since: float | None


# ---------------------------------------------------------------- time bounds
def to_epoch(value: Any, *, field: str = "start", end_of_day: bool = False) -> float | None:
    """Epoch seconds from a number, a datetime (naive = UTC), a date or an ISO string.

    A bare date (``date`` or ``"2024-05-01"``) means its start, or with ``end_of_day``
    the start of the next day (so an end date includes that whole day).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValidationError(f"{field}: expected a time, got a boolean", field=field)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value) if len(value.strip()) == 10 else datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValidationError(f"{field}: not an ISO date or datetime: {value!r}", field=field) from exc
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    if isinstance(value, date):
        day = value + timedelta(days=1) if end_of_day else value
        return datetime.combine(day, time(), tzinfo=timezone.utc).timestamp()
    raise ValidationError(f"{field}: expected a number, datetime, date or ISO string, got {type(value).__name__}",
                          field=field)


# ---------------------------------------------------------------- statistics
def _latency_percentiles(db: Any, where: list, qs: Sequence[float] = PERCENTILES) -> dict[float, float | None]:
    """Exact percentiles with one sort on either database (SQLite has no percentile_cont):
    number the sorted latencies with a window function and fetch only the needed ranks."""
    cond = sa.and_(I.c.latency_ms.is_not(None), *where)
    n = db.scalar(sa.select(sa.func.count()).select_from(I).where(cond)) or 0
    if n == 0:
        return {q: None for q in qs}
    ranks = sorted({r for q in qs for r in percentile_ranks(n, q)[:2]})
    numbered = sa.select(I.c.latency_ms.label("v"),
                         (sa.func.row_number().over(order_by=I.c.latency_ms) - 1).label("rank")
                         ).where(cond).subquery()
    rows = db.fetch_all(sa.select(numbered.c.rank, numbered.c.v).where(numbered.c.rank.in_(ranks)))
    at = {int(r["rank"]): float(r["v"]) for r in rows}
    return {q: interpolate(at, n, q) for q in qs}


def _counted(since: float | None) -> list:
    """The interactions statistics count: every kind but ``span`` (the inner steps of a traced
    request, which would multiply the total and drag latency percentiles down)."""
    where = [I.c.kind != "span"]
    if since is not None:
        where.append(I.c.ts >= since)
    return where


def _feedback_counts(db: Any, since: float | None) -> tuple[dict[str, int], int, int, int, int]:
    """Feedback per kind, interactions with explicit feedback, and positive/negative/judged counts."""
    join = F.join(I, I.c.id == F.c.interaction_id)
    where = _counted(since)
    kinds = {r["kind"]: int(r["n"]) for r in db.fetch_all(
        sa.select(F.c.kind, sa.func.count().label("n")).select_from(join).where(*where).group_by(F.c.kind))}
    with_feedback = db.scalar(sa.select(sa.func.count(sa.distinct(F.c.interaction_id))).select_from(join)
                              .where(F.c.kind.in_(EXPLICIT_KINDS), *where)) or 0
    # A thumbs up or a rating of 4-5 is positive; a thumbs down or a rating of 1-2 negative.
    positive = sa.or_(sa.and_(F.c.kind == "thumbs", F.c.value > 0), sa.and_(F.c.kind == "rating", F.c.value >= 4))
    negative = sa.or_(sa.and_(F.c.kind == "thumbs", F.c.value < 0), sa.and_(F.c.kind == "rating", F.c.value <= 2))
    row = db.fetch_one(sa.select(
        sa.func.count().label("judged"),
        sa.func.sum(sa.case((positive, 1), else_=0)).label("pos"),
        sa.func.sum(sa.case((negative, 1), else_=0)).label("neg"),
    ).select_from(join).where(F.c.kind.in_(("thumbs", "rating")), *where))
    return kinds, int(with_feedback), int(row["judged"] or 0), int(row["pos"] or 0), int(row["neg"] or 0)


def compute_statistics(db: Any, since: Any = None) -> Statistics:
    """:func:`statistics` as a frozen dataclass."""
    since_ts = to_epoch(since, field="since")
    where = _counted(since_ts)
    agg = db.fetch_one(sa.select(
        sa.func.count().label("total"),
        sa.func.avg(I.c.quality_score).label("avg_quality"),
        sa.func.avg(I.c.latency_ms).label("avg_latency"),
        sa.func.min(I.c.ts).label("first_ts"), sa.func.max(I.c.ts).label("last_ts"),
    ).where(*where))
    total = int(agg["total"] or 0)
    models = {r["model"]: int(r["n"]) for r in db.fetch_all(
        sa.select(I.c.model, sa.func.count().label("n")).where(*where).group_by(I.c.model).order_by(I.c.model))}
    kinds, with_feedback, judged, pos, neg = _feedback_counts(db, since_ts)
    pct = _latency_percentiles(db, where)
    fnum = lambda v: None if v is None else float(v)  # noqa: E731  (Decimal on PostgreSQL)
    return Statistics(
        total=total, feedback_count=sum(kinds.values()),
        feedback_rate=with_feedback / total if total else 0.0,
        positive_rate=pos / judged if judged else None, negative_rate=neg / judged if judged else None,
        avg_quality_score=fnum(agg["avg_quality"]), avg_latency_ms=fnum(agg["avg_latency"]),
        latency_p50=pct[50], latency_p95=pct[95], latency_p99=pct[99],
        models=models, feedback_kinds=kinds,
        first_ts=fnum(agg["first_ts"]), last_ts=fnum(agg["last_ts"]), since=since_ts,
    )


def statistics(db: Any, since: Any = None) -> dict[str, Any]:
    """Usage statistics of interactions with ``ts >= since`` (all when None); ``@trace``
    spans (``kind="span"``) are not counted, chat-kind spans and wrapped OpenAI calls are.

    Keys: ``total``, ``feedback_count``, ``feedback_rate`` (share of interactions with
    explicit feedback: thumbs, rating, comment or report), ``positive_rate`` /
    ``negative_rate`` (share of thumbs/rating feedback that is up or 4-5 / down or 1-2;
    None without any), ``avg_quality_score``, ``avg_latency_ms``, ``latency_p50``,
    ``latency_p95``, ``latency_p99`` (ms, interpolated like ``percentile_cont``),
    ``models`` ({model: count}), ``feedback_kinds`` ({kind: count}), ``first_ts``,
    ``last_ts``, ``since``.

    Example: ``statistics(db, since=time.time() - 86400)["positive_rate"]``.
    """
    return asdict(compute_statistics(db, since))


# ---------------------------------------------------------------- streaming
def iter_interactions(db: Any, start: Any = None, end: Any = None, model: str | None = None,
                      chunk: int = 5000) -> Iterator[dict[str, Any]]:
    """Stream interaction rows (dicts, oldest first) with ``start <= ts < end``.

    ``start``/``end`` take epoch seconds, datetimes (naive = UTC), dates or ISO strings;
    a bare end date includes that whole day. ``model`` filters by model name.

    Rows come in pages of ``chunk`` by keyset on ``(ts, id)``, each page its own short
    read: a long export never holds a transaction open (on SQLite that would hold up the
    capture writer; on PostgreSQL, vacuum). Rows committed during the export may or may
    not be included.
    """
    if chunk < 1:
        raise ValidationError("chunk: must be >= 1", field="chunk")
    lo, hi = to_epoch(start, field="start"), to_epoch(end, field="end", end_of_day=True)
    base = sa.select(I)
    if lo is not None:
        base = base.where(I.c.ts >= lo)
    if hi is not None:
        base = base.where(I.c.ts < hi)
    if model is not None:
        base = base.where(I.c.model == model)
    base = base.order_by(I.c.ts, I.c.id).limit(chunk)
    page = db.fetch_all(base)
    while page:
        yield from page
        if len(page) < chunk:
            return
        last_ts, last_id = page[-1]["ts"], page[-1]["id"]
        page = db.fetch_all(base.where(sa.or_(I.c.ts > last_ts, sa.and_(I.c.ts == last_ts, I.c.id > last_id))))


# ---------------------------------------------------------------- traces
def trace_tree(db: Any, trace_id: str) -> dict[str, Any] | None:
    """One trace as a tree: the root span's row with ``children`` (rows, each with its own
    ``children``, oldest first). ``trace_id`` may also be the id of any span in the trace.

    None when nothing of the trace is stored. If the root's row is not stored (yet), the
    root is a placeholder ``{"id": trace_id, "missing": True, "children": [...]}``.
    """
    stmt = sa.select(I).where(I.c.trace_id == trace_id).order_by(I.c.ts, I.c.id)
    rows = db.fetch_all(stmt)
    if not rows:
        found = db.fetch_one(sa.select(I.c.trace_id).where(I.c.id == trace_id))
        if found is None or not found["trace_id"] or found["trace_id"] == trace_id:
            return None
        trace_id = found["trace_id"]
        rows = db.fetch_all(sa.select(I).where(I.c.trace_id == trace_id).order_by(I.c.ts, I.c.id))
    nodes = {r["id"]: {**r, "children": []} for r in rows}
    root = nodes.get(trace_id) or {"id": trace_id, "trace_id": trace_id, "missing": True, "children": []}
    for node in nodes.values():
        if node is root:
            continue
        parent = nodes.get(node["parent_id"]) or root  # an orphan hangs under the root
        parent["children"].append(node)
    return root
