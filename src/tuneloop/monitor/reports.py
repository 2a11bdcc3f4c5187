"""Monitoring reports: read a time window from the store, run the pure monitors, write ``drift_reports``.

Three kinds of report, one row each in ``drift_reports`` (``kind``, ``window``, ``metrics``,
``drifted``): ``embedding`` (query embeddings of a current window against a reference window,
:func:`tuneloop.monitor.drift.drift_suite`), ``behaviour`` (satisfaction per version and its
30-day trend, feedback rates, golden-set divergence, complaint topics) and ``operations``
(latency, errors, throughput, retrieval; current window against reference window). The
loop's drift trigger reads the newest ``embedding`` report (:func:`latest_drift`).

Embedders are pluggable: any object with ``encode(list[str]) -> array (n, d)``.

>>> from tuneloop.store import Database
>>> db = Database.open("sqlite:///:memory:")
>>> latest_drift(db) is None
True
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import sqlalchemy as sa

from tuneloop.errors import ValidationError
from tuneloop.ids import new_id, now
from tuneloop.monitor._drift_base import _jsonable
from tuneloop.monitor.behaviour import (DAY, feedback_rates, golden_divergence, satisfaction_by_version,
                                        satisfaction_score, satisfaction_trend)
from tuneloop.monitor.drift import DriftSuiteResult, drift_suite
from tuneloop.monitor.operations import (error_rates, latency_percentiles, operations_drift, retrieval_stats,
                                         throughput)
from tuneloop.monitor.topics import complaint_topics
from tuneloop.store import Database, schema

__all__ = [
    "DriftReport", "Embedder", "Window", "behaviour_report", "embedding_drift_report", "latest_drift",
    "list_drift_reports", "load_queries", "operations_report", "windows_before", "write_drift_report",
]

KINDS = ("embedding", "behaviour", "operations", "retrieval")


class Embedder(Protocol):
    def encode(self, texts: list[str]) -> Any: ...


@dataclass(frozen=True)
class Window:
    """A half-open time window [start, end) in epoch seconds."""

    start: float
    end: float

    def __post_init__(self) -> None:
        if not self.end > self.start:
            raise ValidationError(f"window end {self.end} must be after its start {self.start}", field="window")

    def to_dict(self) -> dict[str, float]:
        return {"start": self.start, "end": self.end, "days": (self.end - self.start) / DAY}


def windows_before(end: float, reference_days: float = 7, current_days: float = 1) -> tuple[Window, Window]:
    """The current window is the last ``current_days`` before ``end``; the reference the days before it.

    >>> ref, cur = windows_before(10 * 86400.0, 7, 1)
    >>> (ref.start / 86400, ref.end / 86400, cur.end / 86400)
    (2.0, 9.0, 10.0)
    """
    current = Window(end - current_days * DAY, end)
    return Window(current.start - reference_days * DAY, current.start), current


@dataclass(frozen=True)
class DriftReport:
    """One row of ``drift_reports``."""

    id: str
    kind: str
    window: Mapping[str, Any]
    metrics: Mapping[str, Any]
    drifted: bool
    created_at: float


def _report(row: Mapping[str, Any]) -> DriftReport:
    return DriftReport(row["id"], row["kind"], row["window"] or {}, row["metrics"] or {}, bool(row["drifted"]),
                       row["created_at"])


def write_drift_report(db: Database, kind: str, window: Mapping[str, Any], metrics: Mapping[str, Any],
                       drifted: bool, *, created_at: float | None = None) -> str:
    """Insert one ``drift_reports`` row (values made JSON-safe: NaN and inf become null); returns its id."""
    if kind not in KINDS:
        raise ValidationError(f"unknown drift report kind {kind!r}; use one of {KINDS}", field="kind")
    report_id = new_id()
    with db.begin() as conn:
        conn.execute(schema.drift_reports.insert().values(
            id=report_id, kind=kind, window=_jsonable(window), metrics=_jsonable(metrics), drifted=bool(drifted),
            created_at=created_at if created_at is not None else now()))
    return report_id


def latest_drift(db: Database, kind: str = "embedding") -> DriftReport | None:
    """The newest report of ``kind`` (what the loop's drift trigger reads), or None."""
    d = schema.drift_reports
    row = db.fetch_one(sa.select(d).where(d.c.kind == kind).order_by(d.c.created_at.desc(), d.c.id.desc()).limit(1))
    return _report(row) if row else None


def list_drift_reports(db: Database, kind: str | None = None, limit: int = 20) -> list[DriftReport]:
    """Newest first."""
    d = schema.drift_reports
    stmt = sa.select(d).order_by(d.c.created_at.desc(), d.c.id.desc()).limit(limit)
    if kind is not None:
        stmt = stmt.where(d.c.kind == kind)
    return [_report(r) for r in db.fetch_all(stmt)]


# ---------------------------------------------------------------------------- embedding drift

def load_queries(db: Database, window: Window, *, limit: int | None = 20_000) -> list[str]:
    """Non-empty queries of chat and retrieval interactions in ``window``; a random ``limit`` of them."""
    t = schema.interactions
    stmt = sa.select(t.c.query).where(t.c.ts >= window.start, t.c.ts < window.end, t.c.query != "",
                                      t.c.kind != "span")
    if limit is not None:
        stmt = stmt.order_by(sa.func.random()).limit(limit)
    return [r["query"] for r in db.fetch_all(stmt)]


def _embed(embedder: Embedder, texts: list[str]) -> np.ndarray:
    vectors = np.asarray(embedder.encode(list(texts)), dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(texts):
        raise ValidationError(f"embedder returned shape {vectors.shape} for {len(texts)} texts", field="embedder")
    return vectors


def embedding_drift_report(db: Database, embedder: Embedder, *, reference: Window, current: Window,
                           methods: Iterable[str] | None = None, options: Mapping[str, Mapping[str, Any]] | None = None,
                           quorum: int = 2, max_rows: int = 20_000, min_rows: int = 20, seed: int = 0,
                           progress: Callable[[str], None] | None = None,
                           write: bool = True) -> tuple[str | None, DriftSuiteResult]:
    """Embed the queries of both windows, run the drift suite, store the report (kind ``embedding``)."""
    texts = {}
    for name, window in (("reference", reference), ("current", current)):
        texts[name] = load_queries(db, window, limit=max_rows)
        if len(texts[name]) < min_rows:
            raise ValidationError(f"{name} window has {len(texts[name])} queries; at least {min_rows} are needed",
                                  field=name, n=len(texts[name]), window=window.to_dict())
    if progress is not None:
        progress("embed")
    ref, cur = _embed(embedder, texts["reference"]), _embed(embedder, texts["current"])
    suite = drift_suite(ref, cur, methods, options=options, quorum=quorum, seed=seed, progress=progress)
    window = {"reference": reference.to_dict() | {"n": len(ref)}, "current": current.to_dict() | {"n": len(cur)}}
    metrics = suite.to_dict() | {"embedder": type(embedder).__name__}
    report_id = write_drift_report(db, "embedding", window, metrics, suite.drifted) if write else None
    return report_id, suite


# ---------------------------------------------------------------------------- behaviour

def _feedback_rows(db: Database, window: Window) -> list[dict[str, Any]]:
    f, i = schema.feedback, schema.interactions
    stmt = (sa.select(f.c.interaction_id, f.c.kind, f.c.value, f.c.ts, i.c.version_id, i.c.query)
            .select_from(f.join(i, i.c.id == f.c.interaction_id))
            .where(f.c.ts >= window.start, f.c.ts < window.end))
    return db.fetch_all(stmt)


def _golden_results(db: Database, versions: int = 5) -> dict[str, dict[str, float]]:
    """The newest eval run of each of the newest ``versions`` versions: example id -> score."""
    e = schema.eval_runs
    out: dict[str, dict[str, float]] = {}
    for row in db.fetch_all(sa.select(e.c.version_id, e.c.results).order_by(e.c.created_at.desc()).limit(200)):
        if row["version_id"] in out or not isinstance(row["results"], list):
            continue
        scores = {}
        for r in row["results"]:
            if isinstance(r, Mapping) and r.get("id") is not None:
                passed = r.get("passed")
                scores[str(r["id"])] = float(passed) if passed is not None else float(r.get("score") or 0.0)
        if scores:
            out[row["version_id"]] = scores
        if len(out) >= versions:
            break
    return dict(reversed(list(out.items())))  # oldest first: the baseline is the earliest version


def _asdict_all(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {k: dataclasses.asdict(v) for k, v in mapping.items()}


def behaviour_report(db: Database, *, end: float | None = None, days: int = 30, embedder: Embedder | None = None,
                     max_topics: int = 8, write: bool = True) -> tuple[str | None, dict[str, Any]]:
    """Satisfaction per version and trend, feedback rates, golden divergence, complaint topics.

    ``drifted`` = satisfaction declines significantly, or a version regressed on the golden set.
    """
    end = now() if end is None else end
    window = Window(end - days * DAY, end)
    fb = _feedback_rows(db, window)
    i = schema.interactions
    inter = db.fetch_all(sa.select(i.c.id, i.c.version_id).where(i.c.ts >= window.start, i.c.ts < window.end))
    trend = satisfaction_trend(fb, end=end, window_days=days)
    golden = _golden_results(db)
    divergence = golden_divergence(golden) if len(golden) >= 2 else None
    metrics: dict[str, Any] = {
        "satisfaction": _asdict_all(satisfaction_by_version(fb)),
        "trend": trend.to_dict(),
        "rates": _asdict_all(feedback_rates(inter, fb)),
        "golden": None if divergence is None else {
            "pass_rates": dict(divergence.pass_rates), "counts": dict(divergence.counts),
            "comparisons": [dataclasses.asdict(c) for c in divergence.comparisons]},
        "interactions": len(inter), "feedback": len(fb),
    }
    if embedder is not None:
        metrics["complaint_topics"] = [t.to_dict() for t in _complaints(fb, embedder, max_topics)]
    drifted = trend.direction == "declining" or (divergence is not None and
                                                 any(c.regressed for c in divergence.comparisons))
    report_id = write_drift_report(db, "behaviour", {"current": window.to_dict()}, metrics, drifted) if write else None
    return report_id, metrics | {"drifted": drifted}


def _complaints(fb: list[dict[str, Any]], embedder: Embedder, max_topics: int, limit: int = 5000) -> tuple:
    negative: dict[str, str] = {}
    for row in fb:
        s = satisfaction_score(row["kind"], row["value"])
        if (row["kind"] == "report" or (s is not None and s <= 0.25)) and row.get("query"):
            negative.setdefault(row["interaction_id"], row["query"])
    texts = list(negative.values())[:limit]
    if len(texts) < 2:
        return ()
    return complaint_topics(texts, _embed(embedder, texts), max_clusters=max_topics)


# ---------------------------------------------------------------------------- operations

def _operation_rows(db: Database, window: Window) -> list[dict[str, Any]]:
    i = schema.interactions
    stmt = sa.select(i.c.ts, i.c.version_id, i.c.latency_ms, i.c.status, i.c.error, i.c.meta).where(
        i.c.ts >= window.start, i.c.ts < window.end)
    return db.fetch_all(stmt)


def _window_summary(rows: list[dict[str, Any]], window: Window) -> dict[str, Any]:
    ret = retrieval_stats(rows)
    return {"latency_ms": _asdict_all(latency_percentiles(rows)),
            "throughput": dataclasses.asdict(throughput([r["ts"] for r in rows], start=window.start, end=window.end)),
            "errors": _asdict_all(error_rates(rows)),
            "retrieval": {k: v for k, v in dataclasses.asdict(ret).items() if k != "top_scores"}}


def operations_report(db: Database, *, end: float | None = None, reference_days: float = 7,
                      current_days: float = 1, thresholds: Any = None,
                      write: bool = True) -> tuple[str | None, dict[str, Any]]:
    """Latency p50/p95/p99, throughput, error rate, retrieval: current window vs reference window."""
    reference, current = windows_before(now() if end is None else end, reference_days, current_days)
    ref_rows, cur_rows = _operation_rows(db, reference), _operation_rows(db, current)
    comparison = operations_drift(ref_rows, cur_rows, thresholds)
    metrics = {"reference": _window_summary(ref_rows, reference), "current": _window_summary(cur_rows, current),
               "checks": [dataclasses.asdict(c) for c in comparison.checks]}
    window = {"reference": reference.to_dict() | {"n": len(ref_rows)},
              "current": current.to_dict() | {"n": len(cur_rows)}}
    report_id = write_drift_report(db, "operations", window, metrics, comparison.drifted) if write else None
    return report_id, metrics | {"drifted": comparison.drifted}
