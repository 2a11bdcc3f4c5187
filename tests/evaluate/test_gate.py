"""The gate: threshold, required tags, paired regressions (McNemar vs statsmodels, bootstrap)."""
from __future__ import annotations

import pytest

from tuneloop.errors import GateError, ValidationError
from tuneloop.evaluate.gate import compare_paired, gate, paired_bootstrap
from tuneloop.evaluate.runner import ExampleResult, summarize


def run(passes, tags=None, scores=None, ids=None):
    ids = ids or [f"e{i}" for i in range(len(passes))]
    tags = tags or [()] * len(passes)
    scores = scores or [float(p) for p in passes]
    return summarize([ExampleResult(i, "", bool(p), s, tuple(t)) for i, p, s, t in zip(ids, passes, scores, tags)])


def test_threshold_pass_and_fail():
    ok = gate(run([1] * 9 + [0]), threshold=0.85)
    assert ok.passed and ok.metric == "pass_rate" and ok.value == 0.9 and ok.error() is None
    bad = gate(run([1] * 8 + [0] * 2), threshold=0.85)
    assert not bad.passed and (bad.metric, bad.value, bad.threshold) == ("pass_rate", 0.8, 0.85)
    assert "pass rate 0.8000 below threshold 0.8500" in bad.reasons[0]
    err = bad.error()
    assert isinstance(err, GateError) and (err.metric, err.value, err.threshold) == ("pass_rate", 0.8, 0.85)
    with pytest.raises(GateError):
        bad.raise_for_failure()
    assert bad.p_value is None and bad.test is None
    with pytest.raises(ValidationError):
        gate(run([1]), threshold=1.5)


def test_significant_paired_regression_fails_even_above_threshold():
    champion = run([1] * 40)
    candidate = run([0] * 9 + [1] * 31)  # 77.5% >= 0.7, but lost 9 examples and gained none
    d = gate(candidate, champion, threshold=0.7)
    assert not d.passed and d.metric == "regression_p_value" and d.test == "mcnemar"
    assert d.paired.regressions == 9 and d.paired.improvements == 0
    assert d.p_value == pytest.approx(2 * 0.5 ** 9) and d.threshold == 0.05
    assert d.champion_pass_rate == 1.0 and "9 examples lost, 0 gained" in d.reasons[0]


def test_small_or_balanced_differences_pass():
    champion = run([1] * 38 + [0] * 2)
    candidate = run([0, 0] + [1] * 36 + [1, 0])  # lost 2, gained 1: noise
    d = gate(candidate, champion, threshold=0.85)
    assert d.passed and d.p_value == pytest.approx(1.0) and "no significant regression" in d.reasons[0]
    better = gate(run([1] * 40), champion, threshold=0.85)
    assert better.passed and better.paired.improvements == 2


@pytest.mark.parametrize("b,c", [(0, 0), (1, 0), (5, 1), (9, 0), (10, 30), (12, 12), (3, 17), (60, 40)])
def test_mcnemar_matches_statsmodels(b, c):
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    both, neither = 20, 7
    champion = [1] * both + [1] * b + [0] * c + [0] * neither
    candidate = [1] * both + [0] * b + [1] * c + [0] * neither
    p = compare_paired(run(candidate), run(champion)).p_value
    want = sm_mcnemar([[both, b], [c, neither]], exact=True).pvalue if b + c else 1.0
    assert p == pytest.approx(want, rel=1e-12)
    from scipy.stats import binomtest

    if b + c:
        assert p == pytest.approx(binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-9)


def test_paired_test_only_uses_shared_examples():
    champion = run([1, 1, 1], ids=["a", "b", "c"])
    candidate = run([0, 1, 1], ids=["a", "b", "z"])
    cmp = compare_paired(candidate, champion)
    assert cmp.n == 2 and cmp.regressions == 1
    with pytest.raises(ValidationError, match="share no examples"):
        compare_paired(run([1], ids=["x"]), champion)
    with pytest.raises(ValidationError, match="unknown paired test"):
        compare_paired(candidate, champion, test="ttest")


def test_paired_bootstrap():
    diff, p = paired_bootstrap([0.2] * 30, [0.9] * 30, n_resamples=2000)
    assert diff == pytest.approx(-0.7) and p < 0.01
    diff, p = paired_bootstrap([1, 0] * 20, [0, 1] * 20, n_resamples=2000)
    assert diff == 0.0 and p > 0.5
    assert paired_bootstrap([1, 0, 1], [0, 0, 1], seed=7) == paired_bootstrap([1, 0, 1], [0, 0, 1], seed=7)
    with pytest.raises(ValidationError):
        paired_bootstrap([], [])


def test_gate_with_bootstrap_on_scores():
    champion = run([1] * 30, scores=[0.9] * 30)
    candidate = run([1] * 30, scores=[0.5] * 30)  # every case still passes, but scores fell
    assert gate(candidate, champion, threshold=0.8, test="bootstrap").passed  # on pass/fail: no change
    d = gate(candidate, champion, threshold=0.8, test="bootstrap", metric="score", n_resamples=2000)
    assert not d.passed and d.test == "bootstrap" and d.p_value < 0.05 and d.paired.diff == pytest.approx(-0.4)


def test_required_tags_safety_canaries_must_all_pass():
    tags = [("safety",)] * 3 + [("geo",)] * 17
    cand = run([1, 1, 0] + [1] * 17, tags=tags)  # 95% overall, one canary not refused
    d = gate(cand, threshold=0.85)
    assert not d.passed and (d.metric, d.value, d.threshold) == ("pass_rate[safety]", pytest.approx(2 / 3), 1.0)
    assert gate(cand, threshold=0.85, required_tags=()).passed
    assert gate(cand, threshold=0.85, required_tags={"safety": 0.6}).passed
    assert gate(cand, threshold=0.85, required_tags={"geo": 1.0, "safety": 0.6}).passed
    geo_miss = run([1, 1, 1] + [0] + [1] * 16, tags=tags)
    assert gate(geo_miss, threshold=0.85, required_tags={"geo": 1.0}).metric == "pass_rate[geo]"
    assert gate(run([1] * 5), threshold=0.85, required_tags=["missing-tag"]).passed  # absent tag: vacuous


def test_max_regression_caps_the_observed_drop():
    champion = run([1] * 20)
    candidate = run([0, 0] + [1] * 18)  # 2 lost: not significant (p=0.5) but a 10-point drop
    assert gate(candidate, champion, threshold=0.85).passed
    d = gate(candidate, champion, threshold=0.85, max_regression=0.05)
    assert not d.passed and d.metric == "pass_rate_drop" and d.value == pytest.approx(0.1) and d.threshold == 0.05


def test_several_failures_are_all_reported_first_one_names_the_metric():
    champion = run([1] * 20)
    candidate = run([0] * 12 + [1] * 8)
    d = gate(candidate, champion, threshold=0.85, max_regression=0.1)
    assert [r.split(" ")[0] for r in d.reasons] == ["pass", "significant", "pass"]
    assert d.metric == "pass_rate"
    assert d.to_dict()["paired"]["regressions"] == 12
