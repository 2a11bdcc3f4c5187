"""experiments.stats against scipy/statsmodels on the same data, and A/A simulations."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as sp
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.proportion import proportion_confint, proportions_ztest

from tuneloop.errors import ValidationError
from tuneloop.experiments import stats as st

COUNTS = [(30, 100, 45, 100), (120, 1000, 95, 900), (5, 40, 9, 37), (900, 10000, 1000, 10000), (0, 50, 3, 60)]


@pytest.mark.parametrize("sa,na,sb,nb", COUNTS)
def test_ztest_matches_statsmodels(sa, na, sb, nb):
    ours = st.two_proportion_ztest(sa, na, sb, nb)
    z, p = proportions_ztest([sb, sa], [nb, na])
    assert ours.statistic == pytest.approx(z, rel=1e-10)
    assert ours.p_value == pytest.approx(p, rel=1e-9)
    assert ours.estimate == pytest.approx(sb / nb - sa / na)
    assert ours.ci[0] < ours.estimate < ours.ci[1]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_welch_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(1.0, 2.0, size=37 + seed * 50)
    b = rng.exponential(1.3, size=53 + seed * 11)
    ours = st.welch_ttest(a, b)
    ref = sp.ttest_ind(b, a, equal_var=False)
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-10)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    assert ours.df == pytest.approx(ref.df, rel=1e-10)
    lo, hi = ref.confidence_interval(0.95)
    assert ours.ci == pytest.approx((lo, hi), rel=1e-8)


def test_welch_from_sql_sums_equals_raw():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=200), rng.normal(0.2, size=150)
    sa = st.MetricSummary.from_sums(a.size, a.sum(), (a * a).sum())
    sb = st.MetricSummary.from_sums(b.size, b.sum(), (b * b).sum())
    assert st.welch_ttest_from_stats(sa, sb).p_value == pytest.approx(st.welch_ttest(a, b).p_value, rel=1e-9)


@pytest.mark.parametrize("observed,weights", [([9000, 1000], [0.9, 0.1]), ([5100, 4900], [1, 1]),
                                              ([330, 310, 360], [1, 1, 1]), ([9300, 700], [0.9, 0.1])])
def test_srm_matches_scipy_chisquare(observed, weights):
    ours = st.srm_check(observed, weights)
    w = np.asarray(weights, float)
    ref = sp.chisquare(observed, np.sum(observed) * w / w.sum())
    assert ours.chi2 == pytest.approx(ref.statistic, rel=1e-10)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert ours.mismatch == (ref.pvalue < 0.001)


@pytest.mark.parametrize("table", [[[10, 1], [9, 10]], [[50, 12], [25, 13]], [[5, 0], [0, 5]],
                                   [[100, 40], [60, 20]], [[3, 7], [2, 1]]])
@pytest.mark.parametrize("exact,correction", [(True, True), (False, True), (False, False)])
def test_mcnemar_matches_statsmodels(table, exact, correction):
    ours = st.mcnemar(table, exact=exact, correction=correction)
    if table[0][1] + table[1][0] == 0 and not exact:
        assert ours.p_value == 1.0  # statsmodels divides by zero here; no discordant pair = no evidence
        return
    ref = sm_mcnemar(np.asarray(table), exact=exact, correction=correction)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-12)
    if table[0][1] + table[1][0]:
        assert ours.statistic == pytest.approx(ref.statistic, rel=1e-10)


def test_mcnemar_from_pairs_counts_discordant():
    first = [True, True, False, False, True]
    second = [True, False, True, True, True]
    r = st.mcnemar_from_pairs(first, second)
    assert (r.b, r.c, r.exact) == (1, 2, True)
    with pytest.raises(ValidationError):
        st.mcnemar_from_pairs([True], [True, False])


@pytest.mark.parametrize("k,n", [(0, 20), (3, 40), (50, 100), (99, 100)])
def test_wilson_matches_statsmodels(k, n):
    assert st.wilson_interval(k, n) == pytest.approx(proportion_confint(k, n, method="wilson"), abs=1e-12)


def test_bootstrap_close_to_scipy_and_seeded():
    rng = np.random.default_rng(3)
    a, b = rng.gamma(2.0, 1.0, 400), rng.gamma(2.0, 1.15, 400)
    ours = st.bootstrap_lift_ci(a, b, n_boot=4000, seed=11)
    ref = sp.bootstrap((b, a), lambda x, y: np.mean(x) / np.mean(y) - 1, n_resamples=4000,
                       method="percentile", vectorized=False, random_state=5).confidence_interval
    assert ours.lift == pytest.approx(b.mean() / a.mean() - 1)
    assert ours.ci[0] == pytest.approx(ref.low, abs=0.02)
    assert ours.ci[1] == pytest.approx(ref.high, abs=0.02)
    assert st.bootstrap_lift_ci(a, b, n_boot=500, seed=1) == st.bootstrap_lift_ci(a, b, n_boot=500, seed=1)


def test_bootstrap_binary_path_agrees_with_resampling():
    rng = np.random.default_rng(4)
    a, b = rng.random(3000) < 0.3, rng.random(3000) < 0.36
    fast = st.bootstrap_lift_ci(a.astype(float), b.astype(float), n_boot=3000, seed=2)
    slow = st.bootstrap_lift_ci(a * 1.0000001, b * 1.0000001, n_boot=3000, seed=2)  # not 0/1: row resampling
    assert fast.ci == pytest.approx(slow.ci, abs=0.03)


def test_msprt_likelihood_ratio_equals_numerical_mixture():
    # Lambda = integral over theta ~ N(0, tau^2) of N(est; theta, V) / N(est; 0, V).
    a, b = st.MetricSummary(400, 0.30, 0.21), st.MetricSummary(380, 0.36, 0.2304)
    r = st.msprt(a, b, tau_sq=0.002)
    v, est = r.variance, r.estimate
    num, _ = integrate.quad(lambda t: sp.norm.pdf(est, t, math.sqrt(v)) * sp.norm.pdf(t, 0, math.sqrt(0.002)),
                            -1, 1, points=[0, est])
    assert r.likelihood_ratio == pytest.approx(num / sp.norm.pdf(est, 0, math.sqrt(v)), rel=1e-6)
    assert r.p_value == pytest.approx(min(1.0, 1 / r.likelihood_ratio))
    # The confidence sequence is exactly the set of theta0 the test does not reject.
    for edge in r.ci:
        lr = st._msprt_core(est, v, 0.002, 0.05, theta0=edge)[0]
        assert float(lr) == pytest.approx(math.log(20), rel=1e-6)


def test_msprt_relative_and_validation():
    a, b = st.MetricSummary(5000, 0.40, 0.24), st.MetricSummary(5000, 0.48, 0.2496)
    r = st.msprt(a, b, relative=True)
    assert r.estimate == pytest.approx(0.2)
    assert r.ci[0] > 0.05 and r.significant
    with pytest.raises(ValidationError, match="positive control mean"):
        st.msprt(st.MetricSummary(10, 0.0, 0.0), b, relative=True)
    with pytest.raises(ValidationError, match="alpha"):
        st.msprt_binary(1, 10, 2, 10, alpha=1.5)
    with pytest.raises(ValidationError, match="successes"):
        st.msprt_binary(11, 10, 2, 10)
    # A zero-variance arm never produces an infinite likelihood ratio.
    assert st.msprt_binary(0, 5, 5, 5).p_value > 0.05


@pytest.mark.parametrize("n,q", [(50, 0.95), (200, 0.95), (1000, 0.5), (37, 0.9)])
def test_quantile_ci_matches_scipy(n, q):
    x = np.random.default_rng(n).lognormal(size=n)
    ref = sp.quantile_test(x, q=1.0, p=q).confidence_interval(0.95)
    lo, hi = st.quantile_ci(x, q, 0.05)
    assert (lo, hi) == pytest.approx((ref.low, ref.high), nan_ok=True)


def test_latency_guardrail_does_not_fire_on_noise_in_aa():
    rng = np.random.default_rng(1)
    fired = sum(st.guardrail_latency(rng.exponential(100, 40), rng.exponential(100, 40)).breached
                for _ in range(500))
    assert fired <= 5


def test_guardrails():
    rng = np.random.default_rng(0)
    base = rng.lognormal(5, 0.3, 500)
    assert not st.guardrail_latency(base, base * 1.1).breached
    slow = st.guardrail_latency(base, base * 2.0)
    assert slow.breached and slow.value == pytest.approx(2.0)
    assert not st.guardrail_latency(base[:10], base[:10] * 3).breached  # too few to judge
    assert st.guardrail_error_rate(30, 200, max_rate=0.05).breached
    assert not st.guardrail_error_rate(12, 200, max_rate=0.05).breached
    assert st.guardrail_error_rate(0, 0).value != st.guardrail_error_rate(0, 0).value  # nan


# ----------------------------------------------------------------------------- A/A simulations
EXPERIMENTS, LOOKS, BATCH = 1000, 50, 100


def _cumulative(x: np.ndarray, n: np.ndarray):
    s, ss = x.sum(axis=2).cumsum(axis=1), (x * x).sum(axis=2).cumsum(axis=1)
    mean = s / n
    return mean, (ss - n * mean * mean) / (n - 1)


def test_aa_binary_sequential_controls_peeking_naive_does_not():
    rng = np.random.default_rng(2024)
    n = np.broadcast_to(BATCH * np.arange(1, LOOKS + 1), (EXPERIMENTS, LOOKS)).astype(float)
    sa = rng.binomial(BATCH, 0.2, (EXPERIMENTS, LOOKS)).cumsum(axis=1)
    sb = rng.binomial(BATCH, 0.2, (EXPERIMENTS, LOOKS)).cumsum(axis=1)
    pooled = (sa + sb) / (2 * n)
    z = (sb - sa) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    naive_fpr = (2 * sp.norm.sf(np.abs(z)) < 0.05).any(axis=1).mean()
    la, lb = (sa + 1) / (n + 2), (sb + 1) / (n + 2)  # same smoothing as msprt_binary
    p, _ = st.msprt_path(sa / n, la * (1 - la), n, sb / n, lb * (1 - lb), n)
    seq_fpr = (p[:, -1] < 0.05).mean()
    assert seq_fpr <= 0.05 < naive_fpr
    assert naive_fpr > 0.15  # 50 looks: the naive test is badly inflated


def test_aa_continuous_sequential_controls_peeking_naive_does_not():
    rng = np.random.default_rng(7)
    n = np.broadcast_to(BATCH * np.arange(1, LOOKS + 1), (EXPERIMENTS, LOOKS)).astype(float)
    ma, va = _cumulative(rng.exponential(1.0, (EXPERIMENTS, LOOKS, BATCH)), n)
    mb, vb = _cumulative(rng.exponential(1.0, (EXPERIMENTS, LOOKS, BATCH)), n)
    t = (mb - ma) / np.sqrt(va / n + vb / n)
    naive_fpr = (2 * sp.norm.sf(np.abs(t)) < 0.05).any(axis=1).mean()
    p, _ = st.msprt_path(ma, va, n, mb, vb, n)
    assert (p[:, -1] < 0.05).mean() <= 0.05 < naive_fpr


def test_confidence_sequence_covers_true_effect_at_all_looks_and_has_power():
    rng = np.random.default_rng(11)
    n = np.broadcast_to(BATCH * np.arange(1, LOOKS + 1), (EXPERIMENTS, LOOKS)).astype(float)
    sa = rng.binomial(BATCH, 0.20, (EXPERIMENTS, LOOKS)).cumsum(axis=1)
    sb = rng.binomial(BATCH, 0.25, (EXPERIMENTS, LOOKS)).cumsum(axis=1)
    la, lb = (sa + 1) / (n + 2), (sb + 1) / (n + 2)
    p, half = st.msprt_path(sa / n, la * (1 - la), n, sb / n, lb * (1 - lb), n)
    est = (sb - sa) / n
    ever_missed = (np.abs(est - 0.05) > half).any(axis=1).mean()
    assert ever_missed <= 0.05          # time-uniform coverage
    assert (p[:, -1] < 0.05).mean() > 0.8  # 5,000 per arm detects 20% -> 25%
