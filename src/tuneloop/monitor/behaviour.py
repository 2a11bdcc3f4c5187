"""Behaviour monitoring (pure): satisfaction per version and its trend, feedback rates,
golden-set divergence between versions.

Inputs are plain rows (mappings, as :meth:`tuneloop.store.Database.fetch_all` returns them):
feedback rows carry ``kind``, ``value``, ``ts`` and, joined from their interaction,
``version_id``; interaction rows carry ``id`` and ``version_id``.

Satisfaction of one feedback event: thumbs +1 -> 1, -1 -> 0 (0 = neutral, skipped);
rating r in 1..5 -> (r - 1) / 4. A version's satisfaction is the mean over its events
(seed 000: thumbs up / total).

>>> rows = [{"version_id": "v1", "kind": "thumbs", "value": 1, "ts": 0.0},
...         {"version_id": "v1", "kind": "rating", "value": 2, "ts": 0.0}]
>>> satisfaction_by_version(rows)["v1"].satisfaction
0.625
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuneloop.errors import ValidationError

__all__ = [
    "DAY", "FeedbackRates", "GoldenComparison", "GoldenDivergence", "SatisfactionTrend", "VersionSatisfaction",
    "feedback_rates", "golden_divergence", "satisfaction_by_version", "satisfaction_score", "satisfaction_trend",
]

DAY = 86_400.0
NO_VERSION = "(none)"


def satisfaction_score(kind: str, value: float | None) -> float | None:
    """Map one feedback event to [0, 1], or None when it says nothing about satisfaction.

    >>> satisfaction_score("thumbs", -1), satisfaction_score("rating", 5), satisfaction_score("copy", 1)
    (0.0, 1.0, None)
    """
    if value is None:
        return None
    if kind == "thumbs":
        return None if value == 0 else (1.0 if value > 0 else 0.0)
    if kind == "rating":
        return min(max((float(value) - 1.0) / 4.0, 0.0), 1.0)
    return None


@dataclass(frozen=True)
class VersionSatisfaction:
    """Mean satisfaction of one version with a normal-approximation 95% interval."""

    version_id: str
    n: int
    satisfaction: float
    ci_low: float
    ci_high: float
    positive: int
    negative: int


def satisfaction_by_version(feedback: Iterable[Mapping[str, Any]]) -> dict[str, VersionSatisfaction]:
    """Satisfaction per ``version_id`` over thumbs and rating events."""
    scores: dict[str, list[float]] = defaultdict(list)
    for row in feedback:
        s = satisfaction_score(row.get("kind", ""), row.get("value"))
        if s is not None:
            scores[row.get("version_id") or NO_VERSION].append(s)
    out = {}
    for version, values in sorted(scores.items()):
        a = np.asarray(values)
        mean = float(a.mean())
        half = 1.96 * float(a.std(ddof=1)) / math.sqrt(len(a)) if len(a) > 1 else float("nan")
        out[version] = VersionSatisfaction(version, len(a), mean, max(0.0, mean - half), min(1.0, mean + half),
                                           int((a > 0.5).sum()), int((a < 0.5).sum()))
    return out


@dataclass(frozen=True)
class SatisfactionTrend:
    """Daily satisfaction over a window and the least-squares slope per day.

    ``direction`` is "declining" / "improving" when the slope is significant at ``alpha``,
    "flat" when not, "insufficient" with fewer than ``min_days`` days of feedback.
    """

    start: float
    end: float
    days: tuple[int, ...]             # day index from ``start``
    daily: tuple[float, ...]          # mean satisfaction of that day
    counts: tuple[int, ...]
    rolling: tuple[float, ...]        # trailing ``rolling_days`` mean, count-weighted
    slope_per_day: float
    intercept: float
    p_value: float
    r_value: float
    alpha: float
    weighted: bool
    direction: str
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def significant(self) -> bool:
        return self.direction in ("declining", "improving")

    def to_dict(self) -> dict[str, Any]:
        def f(x: float) -> float | None:
            return None if x is None or not math.isfinite(x) else float(x)

        return {"start": self.start, "end": self.end, "days": list(self.days), "daily": list(self.daily),
                "counts": list(self.counts), "rolling": list(self.rolling), "slope_per_day": f(self.slope_per_day),
                "intercept": f(self.intercept), "p_value": f(self.p_value), "r_value": f(self.r_value),
                "alpha": self.alpha, "weighted": self.weighted, "direction": self.direction,
                "significant": self.significant}


def satisfaction_trend(feedback: Iterable[Mapping[str, Any]], *, end: float, window_days: int = 30,
                       rolling_days: int = 7, alpha: float = 0.05, weighted: bool = False,
                       min_days: int = 3) -> SatisfactionTrend:
    """Trend of daily satisfaction over the ``window_days`` before ``end`` (seed 000).

    The slope test is ``scipy.stats.linregress`` on daily means; ``weighted=True`` uses
    weighted least squares (statsmodels WLS, weights = events per day) so a day with three
    votes does not count as much as a day with three thousand.

    >>> rows = [{"kind": "thumbs", "value": 1 if i % 10 >= d // 3 else -1, "ts": d * DAY + i}
    ...         for d in range(30) for i in range(10)]
    >>> satisfaction_trend(rows, end=30 * DAY).direction
    'declining'
    """
    if window_days < 1 or rolling_days < 1:
        raise ValidationError("window_days and rolling_days must be at least 1", field="window_days")
    start = end - window_days * DAY
    sums, counts = np.zeros(window_days), np.zeros(window_days, dtype=np.int64)
    for row in feedback:
        ts, s = row.get("ts"), satisfaction_score(row.get("kind", ""), row.get("value"))
        if s is None or ts is None or not (start <= ts < end):
            continue
        day = min(int((ts - start) // DAY), window_days - 1)
        sums[day] += s
        counts[day] += 1
    present = np.flatnonzero(counts)
    daily = sums[present] / counts[present]
    # trailing window of days, pooled (sum of scores / number of events) so busy days weigh more
    lows = np.maximum(present - rolling_days + 1, 0)
    rolling = tuple(float(sums[lo:d + 1].sum() / counts[lo:d + 1].sum()) for lo, d in zip(lows, present))
    slope = intercept = p = r = float("nan")
    direction = "insufficient"
    if len(present) >= max(min_days, 3):
        slope, intercept, p, r = _fit(present.astype(float), daily, counts[present], weighted)
        direction = ("declining" if slope < 0 else "improving") if p < alpha else "flat"
    return SatisfactionTrend(start, end, tuple(int(d) for d in present), tuple(float(x) for x in daily),
                             tuple(int(c) for c in counts[present]), rolling, float(slope), float(intercept),
                             float(p), float(r), alpha, weighted, direction,
                             {"events": int(counts.sum()), "days_with_feedback": int(len(present))})


def _fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, weighted: bool) -> tuple[float, float, float, float]:
    if not weighted:
        from scipy.stats import linregress

        if np.ptp(y) == 0:  # a constant series: no trend (linregress would divide by zero)
            return 0.0, float(y[0]), 1.0, 0.0
        fit = linregress(x, y)
        return float(fit.slope), float(fit.intercept), float(fit.pvalue), float(fit.rvalue)
    import statsmodels.api as sm

    if np.ptp(y) == 0:
        return 0.0, float(y[0]), 1.0, 0.0
    fit = sm.WLS(y, sm.add_constant(x), weights=w.astype(float)).fit()
    r = math.copysign(math.sqrt(max(fit.rsquared, 0.0)), fit.params[1])
    return float(fit.params[1]), float(fit.params[0]), float(fit.pvalues[1]), r


# ---------------------------------------------------------------------------- rates

@dataclass(frozen=True)
class FeedbackRates:
    """Share of a version's interactions with at least one event of each kind."""

    version_id: str
    interactions: int
    regenerate_rate: float
    report_rate: float
    negative_rate: float      # thumbs down or rating <= 2
    feedback_rate: float      # any feedback at all


def feedback_rates(interactions: Iterable[Mapping[str, Any]],
                   feedback: Iterable[Mapping[str, Any]]) -> dict[str, FeedbackRates]:
    """Regeneration, report, negative and any-feedback rates per version.

    >>> rates = feedback_rates([{"id": "a", "version_id": "v"}, {"id": "b", "version_id": "v"}],
    ...                        [{"interaction_id": "a", "kind": "regenerate", "value": None}])
    >>> rates["v"].regenerate_rate
    0.5
    """
    version_of = {row["id"]: row.get("version_id") or NO_VERSION for row in interactions}
    kinds: dict[str, set[str]] = defaultdict(set)
    for row in feedback:
        iid = row.get("interaction_id")
        if iid not in version_of:
            continue
        kind = row.get("kind", "")
        kinds[iid].add(kind)
        s = satisfaction_score(kind, row.get("value"))
        if s is not None and s <= 0.25:
            kinds[iid].add("_negative")
    per_version: dict[str, list[str]] = defaultdict(list)
    for iid, version in version_of.items():
        per_version[version].append(iid)
    out = {}
    for version, ids in sorted(per_version.items()):
        n = len(ids)

        def rate(kind: str) -> float:
            return sum(kind in kinds.get(i, ()) for i in ids) / n

        out[version] = FeedbackRates(version, n, rate("regenerate"), rate("report"), rate("_negative"),
                                     sum(bool(kinds.get(i)) for i in ids) / n)
    return out


# ---------------------------------------------------------------------------- golden set

@dataclass(frozen=True)
class GoldenComparison:
    """A candidate version against the baseline on the golden examples both answered."""

    baseline: str
    candidate: str
    n_common: int
    baseline_pass_rate: float
    candidate_pass_rate: float
    regressions: tuple[str, ...]    # passed on the baseline, failed on the candidate
    improvements: tuple[str, ...]
    disagreement_rate: float
    mean_score_delta: float
    p_value: float                  # exact McNemar test on the discordant examples
    diverged: bool
    regressed: bool


@dataclass(frozen=True)
class GoldenDivergence:
    pass_rates: Mapping[str, float]
    counts: Mapping[str, int]
    comparisons: tuple[GoldenComparison, ...]

    @property
    def diverged(self) -> bool:
        return any(c.diverged for c in self.comparisons)


def golden_divergence(results_by_version: Mapping[str, Mapping[str, float | bool]], *,
                      baseline: str | None = None, pass_threshold: float = 0.5,
                      alpha: float = 0.05) -> GoldenDivergence:
    """Compare versions' golden-set results (example id -> score in [0, 1] or pass bool).

    Each version is compared with ``baseline`` (default: the first) on their common examples:
    regressions, improvements, the change in mean score (BLEU/ROUGE-style scores welcome)
    and McNemar's exact test. ``diverged`` = p < ``alpha``; ``regressed`` = diverged with a
    lower pass rate.

    >>> g = golden_divergence({"v1": {"a": True, "b": True}, "v2": {"a": True, "b": False}})
    >>> g.comparisons[0].regressions
    ('b',)
    """
    from scipy.stats import binomtest

    if not results_by_version:
        raise ValidationError("golden_divergence needs results of at least one version", field="results")
    names = list(results_by_version)
    base = baseline if baseline is not None else names[0]
    if base not in results_by_version:
        raise ValidationError(f"baseline {base!r} has no golden results", field="baseline")
    scores = {v: {k: float(s) for k, s in r.items()} for v, r in results_by_version.items()}
    passed = {v: {k: s >= pass_threshold for k, s in r.items()} for v, r in scores.items()}
    rates = {v: (sum(p.values()) / len(p) if p else 0.0) for v, p in passed.items()}
    comparisons = []
    for cand in names:
        if cand == base:
            continue
        common = sorted(set(scores[base]) & set(scores[cand]))
        reg = tuple(k for k in common if passed[base][k] and not passed[cand][k])
        imp = tuple(k for k in common if passed[cand][k] and not passed[base][k])
        discordant = len(reg) + len(imp)
        p = float(binomtest(len(imp), discordant, 0.5).pvalue) if discordant else 1.0
        n = len(common)
        b_rate = sum(passed[base][k] for k in common) / n if n else 0.0
        c_rate = sum(passed[cand][k] for k in common) / n if n else 0.0
        delta = float(np.mean([scores[cand][k] - scores[base][k] for k in common])) if n else 0.0
        comparisons.append(GoldenComparison(base, cand, n, b_rate, c_rate, reg, imp, discordant / n if n else 0.0,
                                            delta, p, p < alpha, p < alpha and c_rate < b_rate))
    return GoldenDivergence(rates, {v: len(r) for v, r in scores.items()}, tuple(comparisons))
