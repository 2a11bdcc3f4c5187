"""Prometheus metrics for the server's ``/metrics`` route, on a registry of our own.

Counters and the latency histogram count what this process saw (the server calls
:meth:`MonitorMetrics.observe_interaction` and :meth:`MonitorMetrics.observe_feedback` on
ingestion). Drift and satisfaction gauges are read from the store at scrape time (the
newest ``drift_reports`` of each kind), so every replica reports the same values whichever
process computed them.

    tuneloop_interactions_total{version, arm}       counter
    tuneloop_interaction_errors_total{version}      counter
    tuneloop_feedback_total{kind, source}           counter
    tuneloop_latency_seconds{version}               histogram
    tuneloop_drift_value{kind, method}              gauge (newest report per kind)
    tuneloop_drift_threshold{kind, method}          gauge
    tuneloop_drift_detected{kind}                   gauge (1 = the newest report drifted)
    tuneloop_drift_report_timestamp_seconds{kind}   gauge
    tuneloop_satisfaction{version}                  gauge (newest behaviour report)

>>> m = MonitorMetrics()
>>> m.observe_interaction({"version_id": "v1", "arm": "control", "latency_ms": 120.0})
>>> b"tuneloop_interactions_total" in m.render()
True
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "MonitorMetrics", "StoreCollector", "default_metrics", "metrics_app",
           "metrics_response", "render_metrics"]

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _label(value: Any) -> str:
    return str(value) if value not in (None, "") else "none"


class StoreCollector(Collector):
    """Gauges from the newest drift reports, read from ``db`` at every scrape."""

    def __init__(self, db: Any, kinds: tuple[str, ...] = ("embedding", "behaviour", "operations")) -> None:
        self.db, self.kinds = db, kinds

    def describe(self) -> list:
        return []  # values depend on the store: nothing to describe up front

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from tuneloop.monitor.reports import latest_drift

        value = GaugeMetricFamily("tuneloop_drift_value", "Newest drift statistic per method",
                                  labels=["kind", "method"])
        threshold = GaugeMetricFamily("tuneloop_drift_threshold", "Threshold of that statistic",
                                      labels=["kind", "method"])
        detected = GaugeMetricFamily("tuneloop_drift_detected", "1 if the newest report of this kind drifted",
                                     labels=["kind"])
        stamp = GaugeMetricFamily("tuneloop_drift_report_timestamp_seconds", "When the newest report was made",
                                  labels=["kind"])
        satisfaction = GaugeMetricFamily("tuneloop_satisfaction", "Mean satisfaction per version (0-1)",
                                         labels=["version"])
        for kind in self.kinds:
            report = latest_drift(self.db, kind)
            if report is None:
                continue
            detected.add_metric([kind], 1.0 if report.drifted else 0.0)
            stamp.add_metric([kind], float(report.created_at))
            for method, m in _statistics(report.metrics):
                if m.get("value") is not None:
                    value.add_metric([kind, method], float(m["value"]))
                if m.get("threshold") is not None:
                    threshold.add_metric([kind, method], float(m["threshold"]))
            if kind == "behaviour":
                for version, s in (report.metrics.get("satisfaction") or {}).items():
                    if isinstance(s, Mapping) and s.get("satisfaction") is not None:
                        satisfaction.add_metric([version], float(s["satisfaction"]))
        yield from (value, threshold, detected, stamp, satisfaction)


def _statistics(metrics: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(method, {value, threshold}) of an embedding report's methods or an operations report's checks."""
    for method, m in (metrics.get("methods") or {}).items():
        if isinstance(m, Mapping):
            yield method, m
    for check in metrics.get("checks") or ():
        if isinstance(check, Mapping) and check.get("name"):
            yield check["name"], check
    trend = metrics.get("trend")
    if isinstance(trend, Mapping):
        yield "satisfaction_slope_per_day", {"value": trend.get("slope_per_day"), "threshold": 0.0}


class MonitorMetrics:
    """Our metrics on our own :class:`CollectorRegistry` (never the global one)."""

    def __init__(self, db: Any = None, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.interactions = Counter("tuneloop_interactions", "Interactions recorded", ["version", "arm"], registry=r)
        self.errors = Counter("tuneloop_interaction_errors", "Interactions that failed", ["version"], registry=r)
        self.feedback = Counter("tuneloop_feedback", "Feedback events recorded", ["kind", "source"], registry=r)
        self.latency = Histogram("tuneloop_latency_seconds", "Model latency per interaction", ["version"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.store_collector = None
        if db is not None:
            self.attach_store(db)

    def attach_store(self, db: Any) -> None:
        """Serve drift and satisfaction gauges from ``db`` (once)."""
        if self.store_collector is None:
            self.store_collector = StoreCollector(db)
            self.registry.register(self.store_collector)

    def observe_interaction(self, row: Mapping[str, Any]) -> None:
        """Count one interaction row (``version_id``, ``arm``, ``latency_ms``, ``status``)."""
        version = _label(row.get("version_id"))
        self.interactions.labels(version, _label(row.get("arm"))).inc()
        if row.get("status") == "error" or row.get("error"):
            self.errors.labels(version).inc()
        ms = row.get("latency_ms")
        if ms is not None and ms >= 0:
            self.latency.labels(version).observe(float(ms) / 1000.0)

    def observe_feedback(self, row: Mapping[str, Any]) -> None:
        self.feedback.labels(_label(row.get("kind")), _label(row.get("source") or "user")).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


_default: MonitorMetrics | None = None


def default_metrics(db: Any = None) -> MonitorMetrics:
    """The process-wide :class:`MonitorMetrics` (created on first use; ``db`` attaches the store)."""
    global _default
    if _default is None:
        _default = MonitorMetrics()
    if db is not None:
        _default.attach_store(db)
    return _default


def render_metrics(registry: CollectorRegistry | None = None) -> bytes:
    """Prometheus text exposition of ``registry`` (default: :func:`default_metrics`' registry)."""
    return generate_latest(registry if registry is not None else default_metrics().registry)


def metrics_response(registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """``(body, content_type)`` for a ``/metrics`` route.

    >>> body, ctype = metrics_response(MonitorMetrics().registry)
    >>> ctype.startswith("text/plain")
    True
    """
    return render_metrics(registry), CONTENT_TYPE_LATEST


def metrics_app(registry: CollectorRegistry | None = None) -> Any:
    """An ASGI app serving the metrics, for ``app.mount("/metrics", metrics_app())``."""
    from prometheus_client import make_asgi_app

    return make_asgi_app(registry=registry if registry is not None else default_metrics().registry)
