"""Satisfaction, its trend (slope test vs scipy/statsmodels), feedback rates, golden divergence."""
from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy.stats import binomtest, linregress

from tuneloop.errors import ValidationError
from tuneloop.monitor.behaviour import (DAY, feedback_rates, golden_divergence, satisfaction_by_version,
                                        satisfaction_score, satisfaction_trend)


def thumbs(day: float, up: bool, version: str = "v1") -> dict:
    return {"kind": "thumbs", "value": 1 if up else -1, "ts": day * DAY + 3600, "version_id": version}


def test_satisfaction_scores_and_per_version_means():
    assert [satisfaction_score("thumbs", v) for v in (1, 0, -1)] == [1.0, None, 0.0]
    assert [satisfaction_score("rating", v) for v in (1, 3, 5)] == [0.0, 0.5, 1.0]
    assert satisfaction_score("regenerate", 1) is None and satisfaction_score("rating", None) is None
    rows = [thumbs(0, True), thumbs(0, True), thumbs(0, False), {"kind": "rating", "value": 4, "ts": 0,
                                                                  "version_id": "v2"},
            {"kind": "comment", "value": None, "ts": 0, "version_id": "v2"}, thumbs(0, True, version=None)]
    by = satisfaction_by_version(rows)
    assert set(by) == {"v1", "v2", "(none)"}
    v1 = by["v1"]
    assert (v1.n, v1.positive, v1.negative) == (3, 2, 1)
    assert v1.satisfaction == pytest.approx(2 / 3)
    half = 1.96 * np.std([1, 1, 0], ddof=1) / np.sqrt(3)
    assert v1.ci_low == pytest.approx(max(0, 2 / 3 - half)) and v1.ci_high == pytest.approx(min(1, 2 / 3 + half))
    assert by["v2"].satisfaction == pytest.approx(0.75)


def declining_rows(days: int = 30, per_day: int = 20, start: float = 0.8, drop: float = 0.01, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [thumbs(d, rng.random() < start - drop * d) for d in range(days) for _ in range(per_day)]


def test_trend_slope_matches_linregress_on_daily_means():
    rows = declining_rows()
    trend = satisfaction_trend(rows, end=30 * DAY)
    days = np.arange(30)
    daily = [np.mean([r["value"] > 0 for r in rows if int(r["ts"] // DAY) == d]) for d in days]
    ref = linregress(days, daily)
    assert trend.slope_per_day == pytest.approx(ref.slope)
    assert trend.p_value == pytest.approx(ref.pvalue)
    assert trend.daily == pytest.approx(daily)
    assert trend.direction == "declining" and trend.significant
    assert len(trend.rolling) == 30 and trend.rolling[6] == pytest.approx(np.mean(daily[:7]))


def test_weighted_trend_matches_statsmodels_wls():
    rng = np.random.default_rng(1)
    rows = [thumbs(d, rng.random() < 0.5 + 0.01 * d) for d in range(20) for _ in range(5 + 10 * (d % 3))]
    trend = satisfaction_trend(rows, end=20 * DAY, window_days=20, weighted=True)
    x = np.array(trend.days, dtype=float)
    fit = sm.WLS(np.array(trend.daily), sm.add_constant(x), weights=np.array(trend.counts, dtype=float)).fit()
    assert trend.slope_per_day == pytest.approx(fit.params[1])
    assert trend.p_value == pytest.approx(fit.pvalues[1])


def test_flat_satisfaction_is_rarely_called_a_trend():
    # Same true rate every day: the slope test should fire at about alpha.
    fired = sum(satisfaction_trend(declining_rows(drop=0.0, seed=s), end=30 * DAY).significant for s in range(40))
    assert fired <= 5   # P(>= 6 of 40) < 5% at alpha = 0.05


def test_trend_edges():
    few = satisfaction_trend([thumbs(1, True), thumbs(2, False)], end=30 * DAY)
    assert few.direction == "insufficient" and not few.significant
    constant = satisfaction_trend([thumbs(d, True) for d in range(10)], end=10 * DAY, window_days=10)
    assert constant.direction == "flat" and constant.slope_per_day == 0.0
    outside = satisfaction_trend([thumbs(-1, True), thumbs(40, True)], end=30 * DAY)
    assert outside.details["events"] == 0
    assert satisfaction_trend(declining_rows(), end=30 * DAY).to_dict()["direction"] == "declining"
    with pytest.raises(ValidationError):
        satisfaction_trend([], end=0.0, window_days=0)


def test_feedback_rates_per_version():
    inter = [{"id": f"i{k}", "version_id": "v1" if k < 4 else "v2"} for k in range(6)]
    fb = [{"interaction_id": "i0", "kind": "regenerate", "value": None},
          {"interaction_id": "i0", "kind": "regenerate", "value": None},   # twice on one interaction: counted once
          {"interaction_id": "i1", "kind": "report", "value": None},
          {"interaction_id": "i2", "kind": "thumbs", "value": -1},
          {"interaction_id": "i4", "kind": "rating", "value": 5},
          {"interaction_id": "unknown", "kind": "regenerate", "value": None}]
    rates = feedback_rates(inter, fb)
    assert rates["v1"].regenerate_rate == 0.25 and rates["v1"].report_rate == 0.25
    assert rates["v1"].negative_rate == 0.25 and rates["v1"].feedback_rate == 0.75
    assert rates["v2"].regenerate_rate == 0.0 and rates["v2"].feedback_rate == 0.5


def test_golden_divergence_mcnemar_and_regressions():
    ids = [f"g{k}" for k in range(30)]
    base = {i: True for i in ids}
    cand = {i: k >= 10 for k, i in enumerate(ids)}           # 10 regressions
    better = {i: True for i in ids} | {"g0": 0.2}             # scores work too
    g = golden_divergence({"v1": base, "v2": cand, "v3": better})
    c2, c3 = g.comparisons
    assert c2.regressions == tuple(ids[:10]) and c2.improvements == ()
    assert c2.p_value == pytest.approx(binomtest(0, 10, 0.5).pvalue)
    assert c2.diverged and c2.regressed and g.diverged
    assert c2.baseline_pass_rate == 1.0 and c2.candidate_pass_rate == pytest.approx(20 / 30)
    assert c3.regressions == ("g0",) and not c3.diverged
    assert c3.mean_score_delta == pytest.approx(-0.8 / 30)
    assert g.pass_rates["v2"] == pytest.approx(20 / 30)
    with pytest.raises(ValidationError, match="baseline"):
        golden_divergence({"v1": base}, baseline="v9")
