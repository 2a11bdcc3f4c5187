"""Statistics for online experiments: pure functions in, frozen dataclasses out.

Arm ``a`` is always the control (champion), arm ``b`` the treatment (challenger); every
effect is ``b - a`` (or ``b / a - 1`` for a relative lift), so a positive effect means the
challenger is better on a higher-is-better metric.

>>> r = two_proportion_ztest(50, 100, 65, 100)
>>> round(r.estimate, 2), r.p_value < 0.05
(0.15, True)
>>> s = msprt_binary(50, 100, 65, 100)      # always valid: safe to look after every batch
>>> s.p_value > r.p_value
True

Fixed-horizon tests (z-test, Welch) are valid only when looked at once, at a sample size
fixed in advance. Peeking after every batch inflates their false-positive rate (10 looks
~19%, 100 looks ~37%). The mixture sequential probability ratio test (mSPRT: Johari,
Pekelis, Walsh, "Always valid inference", 2017/2022; the method behind Optimizely's Stats
Engine and GrowthBook's sequential testing) gives p-values and confidence sequences that
stay valid at every look, which is what an experiment watched continuously needs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _sp

from tuneloop.errors import ValidationError

__all__ = [
    "BootstrapResult", "GuardrailResult", "McNemarResult", "MetricSummary", "SequentialResult",
    "SRMResult", "TestResult", "bootstrap_lift_ci", "guardrail_error_rate", "guardrail_latency",
    "mcnemar", "mcnemar_from_pairs", "msprt", "msprt_binary", "msprt_continuous", "msprt_path",
    "msprt_tau_sq", "quantile_ci", "srm_check", "summarize", "two_proportion_ztest", "welch_ttest",
    "welch_ttest_from_stats", "wilson_interval",
]


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True)
class MetricSummary:
    """Sufficient statistics of one arm: count, mean and sample variance (ddof=1).

    >>> summarize([1.0, 2.0, 3.0])
    MetricSummary(n=3, mean=2.0, var=1.0)
    """

    n: int
    mean: float
    var: float

    @classmethod
    def from_sums(cls, n: int, total: float, total_sq: float) -> "MetricSummary":
        """From SQL aggregates ``count(x)``, ``sum(x)``, ``sum(x*x)``."""
        if n <= 0:
            return cls(0, float("nan"), float("nan"))
        mean = total / n
        var = max(total_sq - n * mean * mean, 0.0) / (n - 1) if n > 1 else 0.0
        return cls(int(n), float(mean), float(var))


@dataclass(frozen=True)
class TestResult:
    """A fixed-horizon two-sample test of ``b - a``."""

    method: str
    statistic: float
    p_value: float
    estimate: float            # mean_b - mean_a
    ci: tuple[float, float]    # (1 - alpha) interval of the difference
    mean_a: float
    mean_b: float
    n_a: int
    n_b: int
    relative_lift: float       # mean_b / mean_a - 1 (nan when mean_a is 0)
    df: float | None = None


@dataclass(frozen=True)
class SequentialResult:
    """One look of the mSPRT: always-valid p-value and confidence sequence of the effect.

    ``p_value`` is this look's ``min(1, 1/lr)``; the always-valid p-value of a running
    experiment is the minimum over all its looks (see :func:`msprt_path`). ``ci`` is valid
    simultaneously over all looks, so it may be checked after every batch.
    """

    estimate: float
    p_value: float
    ci: tuple[float, float]
    likelihood_ratio: float
    variance: float            # variance of the estimate
    tau_sq: float              # mixing variance used
    relative: bool
    n_a: int
    n_b: int
    alpha: float

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha


@dataclass(frozen=True)
class BootstrapResult:
    """Percentile bootstrap interval of the relative lift ``mean_b / mean_a - 1``."""

    lift: float
    ci: tuple[float, float]
    n_boot: int
    alpha: float
    seed: int


@dataclass(frozen=True)
class SRMResult:
    """Sample-ratio-mismatch chi-square test of observed arm counts against planned weights."""

    chi2: float
    p_value: float
    observed: tuple[int, ...]
    expected: tuple[float, ...]
    threshold: float

    @property
    def mismatch(self) -> bool:
        """True when the split is so far off plan that the results should not be trusted."""
        return self.p_value < self.threshold


@dataclass(frozen=True)
class GuardrailResult:
    """One guardrail: ``breached`` when ``value`` crosses ``threshold`` with enough data."""

    name: str
    value: float
    threshold: float
    breached: bool
    detail: str


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test on paired binary outcomes (same examples, two models).

    ``b`` = pairs where only the first (baseline) passed, ``c`` = only the second passed.
    """

    statistic: float
    p_value: float
    b: int
    c: int
    exact: bool

    @property
    def n_discordant(self) -> int:
        return self.b + self.c


# ----------------------------------------------------------------------------- helpers
def summarize(values: Sequence[float] | np.ndarray) -> MetricSummary:
    """Count, mean and sample variance of ``values``."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValidationError("values must be one-dimensional", field="values")
    if x.size == 0:
        return MetricSummary(0, float("nan"), float("nan"))
    return MetricSummary(int(x.size), float(x.mean()), float(x.var(ddof=1)) if x.size > 1 else 0.0)


def _check_count(name: str, successes: int, n: int) -> None:
    if n <= 0 or successes < 0 or successes > n:
        raise ValidationError(f"{name}: need 0 <= successes <= n and n > 0, got {successes}/{n}", field=name)


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValidationError(f"alpha must be in (0, 1), got {alpha}", field="alpha")


def _lift(mean_a: float, mean_b: float) -> float:
    return mean_b / mean_a - 1.0 if mean_a != 0 else float("nan")


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a proportion (good at small n and rates near 0 or 1).

    >>> lo, hi = wilson_interval(0, 20)
    >>> lo == 0.0 and 0.1 < hi < 0.2
    True
    """
    _check_count("wilson_interval", successes, n)
    z = float(_sp.norm.ppf(1 - alpha / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


# ----------------------------------------------------------------------------- fixed-horizon tests
def two_proportion_ztest(successes_a: int, n_a: int, successes_b: int, n_b: int,
                         alpha: float = 0.05) -> TestResult:
    """Two-sided z-test of ``p_b - p_a`` with the pooled variance under H0.

    Same statistic and p-value as ``statsmodels.stats.proportion.proportions_ztest(
    [successes_b, successes_a], [n_b, n_a])``; the interval is the unpooled Wald interval.

    >>> round(two_proportion_ztest(30, 100, 45, 100).statistic, 3)
    2.191
    """
    _check_count("arm a", successes_a, n_a)
    _check_count("arm b", successes_b, n_b)
    _check_alpha(alpha)
    pa, pb = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    diff = pb - pa
    if se0 == 0:
        z, p = 0.0, 1.0
    else:
        z = diff / se0
        p = float(2 * _sp.norm.sf(abs(z)))
    se = math.sqrt(pa * (1 - pa) / n_a + pb * (1 - pb) / n_b)
    zc = float(_sp.norm.ppf(1 - alpha / 2))
    return TestResult("two_proportion_ztest", float(z), p, diff, (diff - zc * se, diff + zc * se),
                      pa, pb, n_a, n_b, _lift(pa, pb))


def welch_ttest_from_stats(a: MetricSummary, b: MetricSummary, alpha: float = 0.05) -> TestResult:
    """Welch's unequal-variance t-test of ``mean_b - mean_a`` from summaries.

    Same as ``scipy.stats.ttest_ind(b_values, a_values, equal_var=False)``.
    """
    _check_alpha(alpha)
    if a.n < 2 or b.n < 2:
        raise ValidationError(f"Welch's t-test needs at least 2 values per arm, got {a.n} and {b.n}",
                              field="n")
    va, vb = a.var / a.n, b.var / b.n
    se = math.sqrt(va + vb)
    diff = b.mean - a.mean
    if se == 0:
        return TestResult("welch_ttest", 0.0, 1.0, diff, (diff, diff), a.mean, b.mean, a.n, b.n,
                          _lift(a.mean, b.mean), float(a.n + b.n - 2))
    # Welch-Satterthwaite degrees of freedom, on variances scaled by the larger one: the ratio
    # is unchanged, but va * va no longer underflows to 0 for variances below ~1e-154.
    scale = max(va, vb)
    sa, sb = va / scale, vb / scale
    df = (sa + sb) ** 2 / (sa * sa / (a.n - 1) + sb * sb / (b.n - 1))
    t = diff / se
    p = float(2 * _sp.t.sf(abs(t), df))
    tc = float(_sp.t.ppf(1 - alpha / 2, df))
    return TestResult("welch_ttest", float(t), p, diff, (diff - tc * se, diff + tc * se),
                      a.mean, b.mean, a.n, b.n, _lift(a.mean, b.mean), float(df))


def welch_ttest(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                alpha: float = 0.05) -> TestResult:
    """Welch's t-test on raw values (see :func:`welch_ttest_from_stats`).

    >>> welch_ttest([1, 2, 3, 4], [2, 3, 4, 5]).estimate
    1.0
    """
    return welch_ttest_from_stats(summarize(a), summarize(b), alpha)


def bootstrap_lift_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                      n_boot: int = 2000, alpha: float = 0.05, seed: int = 0,
                      chunk: int = 200) -> BootstrapResult:
    """Percentile bootstrap CI of the relative lift ``mean(b) / mean(a) - 1`` (seeded).

    Each arm is resampled independently. 0/1 data is resampled as binomial counts (same
    distribution as resampling rows, O(1) per replicate); other data in chunks of
    ``chunk`` replicates so memory stays bounded at 100k+ rows.

    >>> r = bootstrap_lift_ci([0, 1] * 50, [0, 1, 1, 1] * 25, seed=1)
    >>> round(r.lift, 2), r.ci[0] > 0
    (0.5, True)
    """
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if xa.size < 2 or xb.size < 2:
        raise ValidationError("bootstrap needs at least 2 values per arm", field="n")
    if xa.mean() == 0:
        raise ValidationError("relative lift is undefined when the control mean is 0", field="a")
    _check_alpha(alpha)
    rng = np.random.default_rng(seed)
    means = [_boot_means(x, n_boot, rng, chunk) for x in (xa, xb)]
    with np.errstate(divide="ignore", invalid="ignore"):
        lifts = means[1] / means[0] - 1.0
    lifts = lifts[np.isfinite(lifts)]
    lo, hi = np.quantile(lifts, [alpha / 2, 1 - alpha / 2])
    return BootstrapResult(float(xb.mean() / xa.mean() - 1.0), (float(lo), float(hi)), n_boot, alpha, seed)


def _boot_means(x: np.ndarray, n_boot: int, rng: np.random.Generator, chunk: int) -> np.ndarray:
    n = x.size
    if np.all((x == 0) | (x == 1)):
        return rng.binomial(n, x.mean(), size=n_boot) / n
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        out[start:start + k] = x[rng.integers(0, n, size=(k, n))].mean(axis=1)
    return out


# ----------------------------------------------------------------------------- mSPRT
def msprt_tau_sq(variance: float | np.ndarray, n_total: int | np.ndarray, alpha: float = 0.05,
                 planned_n: int = 5000) -> float | np.ndarray:
    """Default mixing variance: the tau^2 that makes the confidence sequence tightest when
    the experiment reaches ``planned_n`` samples in total (both arms).

    Why this choice: with a normal mixture N(0, tau^2) over the effect and an estimate of
    variance V, the half-width of the sequence is ``sqrt(V (V+tau^2)/tau^2 * (2 ln(1/alpha)
    + ln((V+tau^2)/V)))``. Writing ``tau^2 = x V`` it is smallest where ``x = 2 ln(1/alpha)
    + ln(1 + x)`` (x ~ 8.2 at alpha 0.05). V shrinks as 1/n, so we evaluate it at the planned
    size: ``V* = V * n_total / planned_n``. GrowthBook's tuning parameter N* (default 5000)
    is the same rule with the fixed point approximated by one iteration. Too small a
    ``planned_n`` wastes power on long experiments, too large delays early decisions; the
    sequence is valid for any choice.
    """
    x = 2 * math.log(1 / alpha)
    for _ in range(20):  # fixed-point iteration converges in a few steps
        x = 2 * math.log(1 / alpha) + math.log1p(x)
    if planned_n <= 0:
        raise ValidationError(f"planned_n must be positive, got {planned_n}", field="planned_n")
    return x * variance * n_total / planned_n


def _msprt_core(estimate, variance, tau_sq, alpha, theta0=0.0):
    """Vectorized mixture likelihood ratio, p-value and CS half-width (normal mixture).

    Lambda_n = sqrt(V / (V + tau^2)) * exp(tau^2 (est - theta0)^2 / (2 V (V + tau^2))).
    """
    v = np.asarray(variance, dtype=float)
    t2 = np.asarray(tau_sq, dtype=float)
    d = np.asarray(estimate, dtype=float) - theta0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_lr = 0.5 * np.log(v / (v + t2)) + t2 * d * d / (2 * v * (v + t2))
        half = np.sqrt(v * (v + t2) / t2 * (2 * math.log(1 / alpha) + np.log((v + t2) / v)))
    log_lr = np.where(v > 0, log_lr, np.where(d == 0, 0.0, np.inf))
    half = np.where(v > 0, half, 0.0)
    p = np.minimum(1.0, np.exp(-np.maximum(log_lr, -700.0)))
    return log_lr, p, half


def msprt(a: MetricSummary, b: MetricSummary, *, alpha: float = 0.05, relative: bool = False,
          tau_sq: float | None = None, planned_n: int = 5000) -> SequentialResult:
    """One look of the mSPRT on the difference (or relative lift) of two means.

    The effect estimate is asymptotically normal with variance ``V = var_a/n_a + var_b/n_b``
    (relative lift: delta method, ``V = var_b/(n_b m_a^2) + m_b^2 var_a/(n_a m_a^4)``, as in
    GrowthBook). ``tau_sq`` defaults to :func:`msprt_tau_sq` with ``planned_n``.

    >>> r = msprt(MetricSummary(2000, 0.50, 0.25), MetricSummary(2000, 0.56, 0.2464))
    >>> r.significant, r.ci[0] > 0
    (True, True)
    """
    _check_alpha(alpha)
    if a.n < 2 or b.n < 2:
        raise ValidationError(f"the sequential test needs at least 2 values per arm, got {a.n} and {b.n}",
                              field="n")
    if relative:
        if a.mean <= 0:
            raise ValidationError("relative lift needs a positive control mean; use relative=False",
                                  field="mean_a")
        est = b.mean / a.mean - 1.0
        var = b.var / (b.n * a.mean ** 2) + b.mean ** 2 * a.var / (a.n * a.mean ** 4)
    else:
        est = b.mean - a.mean
        var = a.var / a.n + b.var / b.n
    t2 = float(tau_sq) if tau_sq is not None else msprt_tau_sq(var, a.n + b.n, alpha, planned_n)
    if t2 <= 0 and var > 0:
        raise ValidationError(f"tau_sq must be positive, got {t2}", field="tau_sq")
    log_lr, p, half = (float(v) for v in _msprt_core(est, var, t2 if t2 > 0 else 1.0, alpha))
    return SequentialResult(float(est), p, (est - half, est + half), math.exp(min(log_lr, 700.0)),
                            float(var), t2, relative, a.n, b.n, alpha)


def _binary_summary(successes: int, n: int) -> MetricSummary:
    # Laplace-smoothed variance: an arm with 0 or n successes would otherwise have zero
    # variance and an infinite likelihood ratio after a handful of observations.
    p = (successes + 1) / (n + 2)
    return MetricSummary(n, successes / n, p * (1 - p) * n / max(n - 1, 1))


def msprt_binary(successes_a: int, n_a: int, successes_b: int, n_b: int, **kw) -> SequentialResult:
    """mSPRT for conversion-style (0/1) metrics from counts; keywords as :func:`msprt`."""
    _check_count("arm a", successes_a, n_a)
    _check_count("arm b", successes_b, n_b)
    return msprt(_binary_summary(successes_a, n_a), _binary_summary(successes_b, n_b), **kw)


def msprt_continuous(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                     **kw) -> SequentialResult:
    """mSPRT for continuous metrics (reward, rating, latency) from raw values."""
    return msprt(summarize(a), summarize(b), **kw)


def msprt_path(mean_a, var_a, n_a, mean_b, var_b, n_b, *, alpha: float = 0.05,
               planned_n: int = 5000, tau_sq=None, running_min: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Always-valid p-values along a sequence of looks (vectorized, last axis = looks).

    Inputs are arrays of cumulative per-arm statistics at each look, e.g. shape
    ``(experiments, looks)``. Returns ``(p_running_min, ci_half_width)``: the always-valid
    p-value ``p_n = min(p_{n-1}, 1/Lambda_n)`` and the CS half-width at each look
    (``running_min=False``: each look's own ``1/Lambda_n``). Used by the A/A simulations; a
    running experiment keeps the minimum in its state instead.
    """
    mean_a, var_a, n_a, mean_b, var_b, n_b = (np.asarray(x, dtype=float)
                                              for x in (mean_a, var_a, n_a, mean_b, var_b, n_b))
    est = mean_b - mean_a
    var = var_a / n_a + var_b / n_b
    t2 = msprt_tau_sq(var, n_a + n_b, alpha, planned_n) if tau_sq is None else tau_sq
    _, p, half = _msprt_core(est, var, t2, alpha)
    return (np.minimum.accumulate(p, axis=-1) if running_min else p), half


# ----------------------------------------------------------------------------- SRM, guardrails
def srm_check(observed: Sequence[int], weights: Sequence[float], threshold: float = 0.001) -> SRMResult:
    """Chi-square goodness-of-fit of arm counts against planned traffic weights.

    Same statistic as ``scipy.stats.chisquare(observed, expected)``. The conventional
    threshold is p < 0.001: SRM checks run on every look, and a real mismatch (a routing
    bug, a bot, a logging loss on one arm) gives p-values far below it.

    >>> srm_check([9000, 1000], [0.9, 0.1]).mismatch
    False
    >>> srm_check([9300, 700], [0.9, 0.1]).mismatch
    True
    """
    obs = np.asarray(observed, dtype=float)
    w = np.asarray(weights, dtype=float)
    if obs.shape != w.shape or obs.size < 2:
        raise ValidationError("observed and weights need the same length (>= 2)", field="weights")
    if np.any(w <= 0) or np.any(obs < 0):
        raise ValidationError("weights must be positive and counts non-negative", field="weights")
    total = obs.sum()
    if total == 0:
        return SRMResult(0.0, 1.0, tuple(int(o) for o in obs), tuple(0.0 for _ in w), threshold)
    expected = total * w / w.sum()
    chi2 = float(((obs - expected) ** 2 / expected).sum())
    p = float(_sp.chi2.sf(chi2, obs.size - 1))
    return SRMResult(chi2, p, tuple(int(o) for o in obs), tuple(float(e) for e in expected), threshold)


def quantile_ci(values: Sequence[float] | np.ndarray, q: float = 0.95,
                alpha: float = 0.05) -> tuple[float, float]:
    """Distribution-free (order-statistic) confidence interval of the ``q`` quantile.

    Same bounds as ``scipy.stats.quantile_test(x, p=q).confidence_interval(1 - alpha)``;
    a bound is NaN when there are too few values to give it.

    >>> lo, hi = quantile_ci(np.arange(1000.0), 0.95)
    >>> 930 < lo < 950 < hi < 965
    True
    """
    x = np.asarray(values, dtype=float)
    n = x.size
    if n == 0:
        return float("nan"), float("nan")
    dist = _sp.binom(n, q)
    lo_i, hi_i = int(dist.ppf(alpha / 2)) - 1, int(dist.isf(alpha / 2))
    idx = [i for i in (lo_i, hi_i) if 0 <= i < n]
    part = np.partition(x, idx) if idx else x
    return (float(part[lo_i]) if 0 <= lo_i < n else float("nan"),
            float(part[hi_i]) if 0 <= hi_i < n else float("nan"))


def guardrail_latency(control_ms: Sequence[float] | np.ndarray, treatment_ms: Sequence[float] | np.ndarray,
                      *, max_ratio: float = 1.5, quantile: float = 0.95, min_samples: int = 30,
                      alpha: float = 0.05) -> GuardrailResult:
    """p95 latency of the treatment relative to the control (``value`` = the point ratio).

    Breached only when the ratio is proven above ``max_ratio``: the lower confidence bound
    of the treatment's p95 over the upper bound of the control's (order-statistic intervals,
    see :func:`quantile_ci`). A tail quantile of a few dozen requests is noisy, and a
    guardrail checked at every look must not fire on noise.

    >>> guardrail_latency([100] * 50 + [120] * 50, [300] * 100).breached
    True
    """
    c = np.asarray(control_ms, dtype=float)
    t = np.asarray(treatment_ms, dtype=float)
    c, t = c[np.isfinite(c)], t[np.isfinite(t)]
    name = f"p{round(quantile * 100)}_latency_ratio"
    if c.size < min_samples or t.size < min_samples:
        return GuardrailResult(name, float("nan"), max_ratio, False,
                               f"waiting for {min_samples} latencies per arm ({c.size}/{t.size})")
    qc, qt = float(np.quantile(c, quantile)), float(np.quantile(t, quantile))
    ratio = qt / qc if qc > 0 else (1.0 if qt == 0 else float("inf"))
    _, c_hi = quantile_ci(c, quantile, alpha)
    t_lo, _ = quantile_ci(t, quantile, alpha)
    if not (np.isfinite(c_hi) and np.isfinite(t_lo)):
        return GuardrailResult(name, ratio, max_ratio, False,
                               f"treatment {qt:.1f} ms vs control {qc:.1f} ms; too few latencies for a bound")
    lower = t_lo / c_hi if c_hi > 0 else (1.0 if t_lo == 0 else float("inf"))
    return GuardrailResult(name, ratio, max_ratio, bool(lower > max_ratio),
                           f"treatment {qt:.1f} ms vs control {qc:.1f} ms (ratio at least {lower:.2f})")


def guardrail_error_rate(errors: int, n: int, *, max_rate: float = 0.05,
                         alpha: float = 0.05) -> GuardrailResult:
    """Treatment error rate (``value``) against an absolute ceiling.

    Breached only when the Wilson lower bound exceeds ``max_rate``: 1 error in 10 requests
    is not yet proof of an error rate above 5%, 20 in 100 is.

    >>> guardrail_error_rate(20, 100).breached, guardrail_error_rate(1, 10).breached
    (True, False)
    """
    if n == 0:
        return GuardrailResult("error_rate", float("nan"), max_rate, False, "no requests yet")
    lo, hi = wilson_interval(errors, n, alpha)
    rate = errors / n
    return GuardrailResult("error_rate", rate, max_rate, lo > max_rate,
                           f"{errors}/{n} errors, {100 * (1 - alpha):.0f}% interval [{lo:.3f}, {hi:.3f}]")


# ----------------------------------------------------------------------------- paired binary
def mcnemar(table: Sequence[Sequence[int]] | np.ndarray, *, exact: bool | None = None,
            correction: bool = True) -> McNemarResult:
    """McNemar's test on a 2x2 table of paired outcomes ``[[both, only_first], [only_second, neither]]``.

    ``exact=True``: two-sided binomial test on the discordant pairs; ``exact=False``: the
    chi-square statistic ``(|b-c| - 1)^2 / (b+c)`` (without the 1 when ``correction`` is
    False); ``None`` picks exact below 25 discordant pairs. Matches
    ``statsmodels.stats.contingency_tables.mcnemar``.

    >>> mcnemar([[10, 1], [9, 10]], exact=True).p_value < 0.05
    True
    """
    t = np.asarray(table)
    if t.shape != (2, 2) or np.any(t < 0):
        raise ValidationError("mcnemar needs a 2x2 table of non-negative counts", field="table")
    b, c = int(t[0, 1]), int(t[1, 0])
    n = b + c
    if exact is None:
        exact = n < 25
    if n == 0:
        return McNemarResult(0.0, 1.0, b, c, exact)
    if exact:
        k = min(b, c)
        p = min(1.0, 2 * float(_sp.binom.cdf(k, n, 0.5)))
        return McNemarResult(float(k), p, b, c, True)
    stat = (abs(b - c) - (1 if correction else 0)) ** 2 / n
    return McNemarResult(float(stat), float(_sp.chi2.sf(stat, 1)), b, c, False)


def mcnemar_from_pairs(first: Sequence[bool], second: Sequence[bool], *, exact: bool | None = None,
                       correction: bool = True) -> McNemarResult:
    """McNemar's test from two aligned pass/fail lists (e.g. champion vs challenger on a golden set).

    >>> r = mcnemar_from_pairs([True] * 10 + [False] * 10, [True] * 20)
    >>> (r.b, r.c), r.p_value < 0.01
    ((0, 10), True)
    """
    x, y = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    if x.shape != y.shape or x.ndim != 1:
        raise ValidationError("paired outcomes must be two lists of the same length", field="pairs")
    table = [[int(np.sum(x & y)), int(np.sum(x & ~y))], [int(np.sum(~x & y)), int(np.sum(~x & ~y))]]
    return mcnemar(table, exact=exact, correction=correction)
