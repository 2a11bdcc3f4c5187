"""Operations monitoring (pure): latency percentiles, throughput, error rate, retrieval hit rate,
and the comparison of a current window with a reference window.

Inputs are interaction rows (mappings with the columns of ``schema.interactions``:
``ts``, ``version_id``, ``latency_ms``, ``status``, ``error``, ``meta``). Retrieval is read
from ``meta["retrieval"]`` = ``{"query": ..., "docs": [{"id", "score", "rank", "clicked",
"used", "skipped"}, ...]}``; a query is a *hit* when at least one retrieved document was
clicked or used by the answer (seed 001's retrieval hit rate).

>>> rows = [{"version_id": "v1", "latency_ms": float(ms), "ts": float(i), "status": "ok"}
...         for i, ms in enumerate(range(1, 101))]
>>> latency_percentiles(rows)["v1"].p95
95.05
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ALL", "ErrorRate", "LatencyStats", "OperationsCheck", "OperationsDrift", "OperationsThresholds",
    "RetrievalStats", "Throughput", "error_rates", "latency_percentiles", "operations_drift",
    "retrieval_stats", "throughput", "wilson_interval",
]

ALL = "(all)"


def _version(row: Mapping[str, Any]) -> str:
    return row.get("version_id") or "(none)"


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a proportion (sane at 0 and at small n).

    >>> [round(x, 3) for x in wilson_interval(0, 10)]
    [0.0, 0.278]
    """
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class LatencyStats:
    version_id: str
    n: int
    p50: float
    p95: float
    p99: float
    mean: float
    max: float


def latency_percentiles(rows: Iterable[Mapping[str, Any]]) -> dict[str, LatencyStats]:
    """Latency p50/p95/p99 (ms, linear interpolation) per version, plus :data:`ALL`."""
    groups: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        ms = row.get("latency_ms")
        if ms is not None and math.isfinite(ms):
            groups[_version(row)].append(float(ms))
            groups[ALL].append(float(ms))
    out = {}
    for version, values in sorted(groups.items()):
        a = np.asarray(values)
        p50, p95, p99 = np.percentile(a, [50, 95, 99])
        out[version] = LatencyStats(version, len(a), float(p50), float(p95), float(p99), float(a.mean()),
                                    float(a.max()))
    return out


@dataclass(frozen=True)
class Throughput:
    n: int
    seconds: float
    per_second: float
    per_minute: float
    peak_per_minute: int


def throughput(timestamps: Sequence[float], *, start: float | None = None, end: float | None = None) -> Throughput:
    """Interactions per second over [start, end) (default: first to last timestamp), peak minute.

    >>> throughput([0.0, 30.0, 61.0], start=0.0, end=120.0).per_minute
    1.5
    """
    ts = np.sort(np.asarray(list(timestamps), dtype=np.float64))
    if len(ts) == 0:
        return Throughput(0, 0.0, 0.0, 0.0, 0)
    lo = float(ts[0]) if start is None else start
    hi = float(ts[-1]) if end is None else end
    seconds = max(hi - lo, 1e-9)
    minutes = np.floor((ts - lo) / 60.0).astype(np.int64)
    peak = int(np.bincount(minutes - minutes.min()).max())
    return Throughput(len(ts), hi - lo, len(ts) / seconds, 60.0 * len(ts) / seconds, peak)


@dataclass(frozen=True)
class ErrorRate:
    version_id: str
    n: int
    errors: int
    rate: float
    ci_low: float
    ci_high: float


def _is_error(row: Mapping[str, Any]) -> bool:
    return row.get("status") == "error" or bool(row.get("error"))


def error_rates(rows: Iterable[Mapping[str, Any]]) -> dict[str, ErrorRate]:
    """Share of interactions with ``status == "error"`` per version (Wilson 95% interval), plus :data:`ALL`."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        err = int(_is_error(row))
        for key in (_version(row), ALL):
            counts[key][0] += err
            counts[key][1] += 1
    return {v: ErrorRate(v, n, e, e / n, *wilson_interval(e, n)) for v, (e, n) in sorted(counts.items())}


@dataclass(frozen=True)
class RetrievalStats:
    logged: int                 # interactions with a retrieval log
    hits: int
    hit_rate: float
    mrr: float                  # mean reciprocal rank of the first clicked/used document (0 if none)
    clicked_rate: float         # share of retrieved documents clicked
    used_rate: float
    skipped_rate: float
    top_scores: tuple[float, ...] = field(default=(), repr=False)   # score of each query's rank-1 document


def retrieval_stats(rows: Iterable[Mapping[str, Any]]) -> RetrievalStats:
    """Hit rate, MRR and click/use/skip rates from ``meta["retrieval"]`` of interaction rows.

    >>> log = {"retrieval": {"docs": [{"id": "a", "rank": 1, "score": 0.9, "clicked": False},
    ...                               {"id": "b", "rank": 2, "score": 0.5, "used": True}]}}
    >>> retrieval_stats([{"meta": log}, {"meta": {}}]).mrr
    0.5
    """
    logged = hits = docs_n = clicked = used = skipped = 0
    rr_sum, top = 0.0, []
    for row in rows:
        log = (row.get("meta") or {}).get("retrieval") if isinstance(row.get("meta"), Mapping) else None
        if not isinstance(log, Mapping) or not isinstance(log.get("docs"), list):
            continue
        logged += 1
        docs = sorted((d for d in log["docs"] if isinstance(d, Mapping)),
                      key=lambda d: d.get("rank") if d.get("rank") is not None else math.inf)
        ranks = [d.get("rank") if d.get("rank") is not None else i + 1 for i, d in enumerate(docs)]
        relevant = [r for d, r in zip(docs, ranks) if d.get("clicked") or d.get("used")]
        hits += bool(relevant)
        rr_sum += 1.0 / min(relevant) if relevant else 0.0
        docs_n += len(docs)
        clicked += sum(bool(d.get("clicked")) for d in docs)
        used += sum(bool(d.get("used")) for d in docs)
        skipped += sum(bool(d.get("skipped")) for d in docs)
        if docs and docs[0].get("score") is not None:
            top.append(float(docs[0]["score"]))
    div = lambda a, b: a / b if b else 0.0  # noqa: E731
    return RetrievalStats(logged, hits, div(hits, logged), div(rr_sum, logged), div(clicked, docs_n),
                          div(used, docs_n), div(skipped, docs_n), tuple(top))


# ---------------------------------------------------------------------------- window comparison

@dataclass(frozen=True)
class OperationsThresholds:
    """When the current window counts as degraded against the reference window."""

    latency_p95_ratio: float = field(default=1.5, metadata={"help": "current p95 / reference p95 above this"})
    error_rate_increase: float = field(default=0.02, metadata={"help": "absolute rise in error rate (and p < alpha)"})
    hit_rate_drop: float = field(default=0.10, metadata={"help": "absolute fall in retrieval hit rate (and p < alpha)"})
    score_ks: float = field(default=0.1, metadata={"help": "KS statistic of rank-1 retrieval scores (and p < alpha)"})
    alpha: float = 0.05
    min_rows: int = field(default=30, metadata={"help": "fewer rows in a window: that check is skipped"})


@dataclass(frozen=True)
class OperationsCheck:
    name: str
    reference: float | None
    current: float | None
    value: float | None
    threshold: float
    drifted: bool
    p_value: float | None = None
    skipped: str | None = None


@dataclass(frozen=True)
class OperationsDrift:
    checks: tuple[OperationsCheck, ...]

    @property
    def drifted(self) -> bool:
        return any(c.drifted for c in self.checks)


def _two_proportion_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """One-sided p of "proportion 2 > proportion 1" (pooled z-test)."""
    from scipy.stats import norm

    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    return float(norm.sf((x2 / n2 - x1 / n1) / se))


def operations_drift(reference: Sequence[Mapping[str, Any]], current: Sequence[Mapping[str, Any]],
                     thresholds: OperationsThresholds | None = None) -> OperationsDrift:
    """Latency, error rate and retrieval of ``current`` against ``reference`` rows."""
    th = thresholds or OperationsThresholds()
    checks = [_latency_check(reference, current, th), _error_check(reference, current, th)]
    ret_r, ret_c = retrieval_stats(reference), retrieval_stats(current)
    checks += [_hit_rate_check(ret_r, ret_c, th), _score_check(ret_r, ret_c, th)]
    return OperationsDrift(tuple(checks))


def _latency_check(reference, current, th: OperationsThresholds) -> OperationsCheck:
    lr, lc = latency_percentiles(reference).get(ALL), latency_percentiles(current).get(ALL)
    if lr is None or lc is None or min(lr.n, lc.n) < th.min_rows or lr.p95 <= 0:
        return OperationsCheck("latency_p95_ratio", None, None, None, th.latency_p95_ratio, False,
                               skipped="too few latencies")
    ratio = lc.p95 / lr.p95
    return OperationsCheck("latency_p95_ratio", lr.p95, lc.p95, ratio, th.latency_p95_ratio,
                           ratio > th.latency_p95_ratio)


def _error_check(reference, current, th: OperationsThresholds) -> OperationsCheck:
    er, ec = error_rates(reference).get(ALL), error_rates(current).get(ALL)
    if er is None or ec is None or min(er.n, ec.n) < th.min_rows:
        return OperationsCheck("error_rate_increase", None, None, None, th.error_rate_increase, False,
                               skipped="too few interactions")
    p = _two_proportion_p(er.errors, er.n, ec.errors, ec.n)
    rise = ec.rate - er.rate
    return OperationsCheck("error_rate_increase", er.rate, ec.rate, rise, th.error_rate_increase,
                           rise > th.error_rate_increase and p < th.alpha, p)


def _hit_rate_check(rr: RetrievalStats, rc: RetrievalStats, th: OperationsThresholds) -> OperationsCheck:
    if min(rr.logged, rc.logged) < th.min_rows:
        return OperationsCheck("retrieval_hit_rate_drop", None, None, None, th.hit_rate_drop, False,
                               skipped="too few retrieval logs")
    p = _two_proportion_p(rc.hits, rc.logged, rr.hits, rr.logged)
    drop = rr.hit_rate - rc.hit_rate
    return OperationsCheck("retrieval_hit_rate_drop", rr.hit_rate, rc.hit_rate, drop, th.hit_rate_drop,
                           drop > th.hit_rate_drop and p < th.alpha, p)


def _score_check(rr: RetrievalStats, rc: RetrievalStats, th: OperationsThresholds) -> OperationsCheck:
    from scipy.stats import ks_2samp

    if min(len(rr.top_scores), len(rc.top_scores)) < th.min_rows:
        return OperationsCheck("retrieval_score_ks", None, None, None, th.score_ks, False,
                               skipped="too few retrieval scores")
    res = ks_2samp(rr.top_scores, rc.top_scores)
    return OperationsCheck("retrieval_score_ks", float(np.mean(rr.top_scores)), float(np.mean(rc.top_scores)),
                           float(res.statistic), th.score_ks,
                           bool(res.statistic > th.score_ks and res.pvalue < th.alpha), float(res.pvalue))
