"""Embedding drift: values against scipy / hand computations, planted shifts, false alarms."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import ks_2samp

from tuneloop.errors import ValidationError
from tuneloop.monitor import drift
from tuneloop.monitor.drift import (DEFAULT_METHODS, centroid_drift, classifier_drift, drift_suite, ks_drift,
                                    mmd_drift, nn_similarity_drift, norm_drift, psi, psi_components_drift,
                                    psi_drift, psi_p_value)

FAST = {"mmd": {"n_permutations": 100}, "centroid": {"n_permutations": 100}}


def world(d: int, seed: int):
    """Topic centres, a shared offset (real sentence embeddings have one) and a shift direction."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((7, d)), 0.7 * rng.standard_normal(d), rng.standard_normal(d)


def draw(n: int, w, rng, scenario: str | None = None, normalize: bool = True) -> np.ndarray:
    centres, offset, direction = w
    topic = rng.integers(0, 6, n)
    if scenario == "new_topic":  # 30% of traffic about something never seen before
        topic = np.where(rng.random(n) < 0.3, 6, topic)
    noise = 0.7 * rng.standard_normal((n, len(offset)))
    if scenario == "variance":
        noise *= 1.6
    x = offset + centres[topic] + noise
    if scenario == "mean_shift":
        x = x + 0.4 * direction
    if scenario == "scale":
        x = x * 1.2
    return x / np.linalg.norm(x, axis=1, keepdims=True) if normalize else x


# ------------------------------------------------------------------ values vs references

def test_ks_matches_scipy_per_component_and_hand_ecdf():
    rng = np.random.default_rng(3)
    ref, cur = rng.normal(size=(150, 6)), rng.normal(size=(120, 6)) + np.linspace(0, 0.6, 6)
    res = ks_drift(ref, cur, alpha=0.05)
    expected = [ks_2samp(ref[:, j], cur[:, j]) for j in range(6)]
    flags = [e.pvalue < 0.05 for e in expected]
    assert res.details["n_drifted"] == sum(flags)
    assert res.value == pytest.approx(sum(flags) / 6)
    by_component = {t["component"]: t for t in res.details["top_components"]}
    for j, t in by_component.items():
        assert t["statistic"] == pytest.approx(expected[j].statistic)
        assert t["p_value"] == pytest.approx(expected[j].pvalue)
        # D by hand: the largest gap between the two empirical CDFs over all observed values
        grid = np.concatenate([ref[:, j], cur[:, j]])
        f_ref = (ref[:, j][None, :] <= grid[:, None]).mean(axis=1)
        f_cur = (cur[:, j][None, :] <= grid[:, None]).mean(axis=1)
        assert t["statistic"] == pytest.approx(np.abs(f_ref - f_cur).max())


def test_ks_large_windows_use_asymptotic_pvalues_close_to_scipy_exact():
    rng = np.random.default_rng(4)
    ref, cur = rng.normal(size=(1500, 3)), rng.normal(size=(1200, 3)) + 0.05
    res = ks_drift(ref, cur, max_rows=None)
    assert res.details["p_method"] == "asymp"
    for t in res.details["top_components"]:
        exact = ks_2samp(ref[:, t["component"]], cur[:, t["component"]], method="exact")
        assert t["statistic"] == pytest.approx(exact.statistic)
        assert t["p_value"] == pytest.approx(exact.pvalue, abs=2e-3)


def test_psi_matches_a_hand_computation():
    ref = np.arange(100.0)                       # deciles: 10 values per bin
    cur = np.r_[np.full(30, 5.0), np.full(70, 95.0)]
    # Inner edges at reference quantiles 9.9, 19.8, ..., 89.1: 5.0 falls in bin 0, 95.0 in bin 9.
    r = np.full(10, 0.1)
    c = np.full(10, 1e-4)
    c[0], c[9] = 0.3, 0.7
    expected = float(np.sum((c - r) * np.log(c / r)))
    assert psi(ref, cur) == pytest.approx(expected)
    assert psi(ref, ref) == 0.0


def test_psi_components_equal_one_dimensional_psi_per_column():
    rng = np.random.default_rng(5)
    ref, cur = rng.normal(size=(800, 4)), rng.normal(size=(600, 4)) * np.array([1.0, 1.5, 1.0, 2.0])
    res = psi_components_drift(ref, cur, max_rows=None)
    top = {t["component"]: t["psi"] for t in res.details["top_components"]}
    for j, value in top.items():
        assert value == pytest.approx(psi(ref[:, j], cur[:, j]))
    assert res.details["n_drifted"] == 2


def test_psi_p_value_is_calibrated_under_the_null():
    # PSI / (1/n + 1/m) ~ chi2(bins - 1): p-values of same-distribution draws are ~uniform.
    rng = np.random.default_rng(6)
    ps = [float(psi_p_value(psi(rng.normal(size=400), rng.normal(size=300)), 400, 300)) for _ in range(300)]
    assert 0.02 <= np.mean(np.array(ps) < 0.05) <= 0.10


def test_psi_projection_options():
    rng = np.random.default_rng(7)
    ref, cur = rng.normal(size=(2000, 5)), rng.normal(size=(2000, 5))
    cur[:, 2] += 1.0
    assert psi_drift(ref, cur, projection=np.eye(5)[2]).drifted
    assert not psi_drift(ref, cur, projection=np.eye(5)[0]).drifted
    assert psi_drift(ref, cur, projection="pc1").details["projection"] == "pc1"
    with pytest.raises(ValidationError, match="projection"):
        psi_drift(ref, cur, projection="umap")
    with pytest.raises(ValidationError, match="length 3"):
        psi_drift(ref, cur, projection=np.ones(3))


def test_mmd_matches_the_definition():
    rng = np.random.default_rng(8)
    ref, cur = rng.normal(size=(40, 3)), rng.normal(size=(30, 3)) + 0.3
    res = mmd_drift(ref, cur, max_rows=None, n_permutations=50)
    gamma = res.details["gamma"]
    k = lambda a, b: np.exp(-gamma * ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))  # noqa: E731
    kxx, kyy, kxy = k(ref, ref), k(cur, cur), k(ref, cur)
    n, m = len(ref), len(cur)
    expected = ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                - 2 * kxy.mean())
    assert res.value == pytest.approx(max(expected, 0.0), rel=1e-4)
    # the median heuristic: gamma = 1 / median squared distance of pooled pairs
    z = np.vstack([ref, cur])
    d2 = ((z[:, None] - z[None]) ** 2).sum(-1)[np.triu_indices(len(z), 1)]
    assert 1 / gamma == pytest.approx(np.median(d2), rel=0.1)


def test_centroid_and_norm_values():
    rng = np.random.default_rng(9)
    ref, cur = rng.normal(size=(200, 4)) + 2, rng.normal(size=(150, 4)) * 1.3 + 2
    mu_r, mu_c = ref.mean(0), cur.mean(0)
    cos = mu_r @ mu_c / np.linalg.norm(mu_r) / np.linalg.norm(mu_c)
    assert centroid_drift(ref, cur).value == pytest.approx(1 - cos)
    res = norm_drift(ref, cur)
    assert res.value == pytest.approx(abs(np.linalg.norm(cur, axis=1).mean() / np.linalg.norm(ref, axis=1).mean() - 1))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    flat = norm_drift(unit(ref).astype(np.float32), unit(cur).astype(np.float32))
    assert flat.value < 1e-6 and not flat.drifted and flat.p_value == 1.0


def test_nn_similarity_compares_with_held_out_history():
    rng = np.random.default_rng(10)
    ref = rng.normal(size=(400, 8)) + 3 * np.eye(8)[0]
    same = nn_similarity_drift(ref, rng.normal(size=(200, 8)) + 3 * np.eye(8)[0])
    assert abs(same.value) < 0.02 and not same.drifted
    novel = nn_similarity_drift(ref, rng.normal(size=(200, 8)) - 3 * np.eye(8)[0])
    d = novel.details
    assert novel.value == pytest.approx(d["mean_similarity_reference"] - d["mean_similarity_current"])
    assert novel.drifted and novel.p_value < 1e-6


def test_classifier_auc_is_half_without_drift_and_high_with_it():
    rng = np.random.default_rng(11)
    ref = rng.normal(size=(300, 10))
    assert abs(classifier_drift(ref, rng.normal(size=(300, 10))).value - 0.5) < 0.07
    shifted = classifier_drift(ref, rng.normal(size=(300, 10)) + 0.4)
    assert shifted.value > 0.75 and shifted.drifted and shifted.p_value < 1e-6


# ------------------------------------------------------------------ planted shifts

# Which method must see which shift (True), must not (False); absent = no promise.
# Unit-norm embeddings; "scale" is on raw (unnormalized) embeddings.
EXPECTED = {
    "mean_shift": {"ks": True, "psi_components": True, "mmd": True, "classifier": True, "centroid": True,
                   "norm": False},
    "variance": {"ks": True, "psi": True, "psi_components": True, "mmd": True, "nn_similarity": True,
                 "centroid": False, "norm": False},
    "new_topic": {"ks": True, "psi_components": True, "mmd": True, "classifier": True, "centroid": True,
                  "nn_similarity": True, "norm": False},
    "scale": {"ks": True, "mmd": True, "norm": True, "centroid": False},
}


@pytest.mark.parametrize("scenario", list(EXPECTED))
def test_planted_shift_is_detected_by_the_methods_that_can_see_it(scenario):
    w = world(32, seed=1)
    rng = np.random.default_rng(2)
    normalize = scenario != "scale"
    ref, cur = draw(300, w, rng, normalize=normalize), draw(300, w, rng, scenario, normalize=normalize)
    suite = drift_suite(ref, cur, options=FAST)
    assert suite.drifted
    got = {r.method: r.drifted for r in suite.results}
    assert {m: got[m] for m in EXPECTED[scenario]} == EXPECTED[scenario]


def test_false_alarm_rate_over_repeated_same_distribution_draws():
    repeats, alarms, suite_alarms = 20, dict.fromkeys(DEFAULT_METHODS, 0), 0
    for rep in range(repeats):
        w = world(16, seed=100 + rep)
        rng = np.random.default_rng(rep)
        normalize = rep % 2 == 0   # half raw, so the norm test is exercised too
        suite = drift_suite(draw(200, w, rng, normalize=normalize), draw(200, w, rng, normalize=normalize),
                            options=FAST, seed=rep)
        for r in suite.results:
            alarms[r.method] += r.drifted
        suite_alarms += suite.drifted
    # Each test runs at alpha = 0.05 plus an effect-size floor: P(>= 4 of 20) < 2% at 5%.
    assert max(alarms.values()) <= 3, alarms
    assert suite_alarms <= 2, alarms


# ------------------------------------------------------------------ suite and inputs

def test_suite_times_every_method_and_serializes():
    rng = np.random.default_rng(12)
    ref, cur = rng.normal(size=(120, 8)).astype(np.float32), rng.normal(size=(100, 8)).astype(np.float32)
    suite = drift_suite(ref, cur, options=FAST)
    assert [r.method for r in suite.results] == list(DEFAULT_METHODS)
    assert set(suite.seconds) == set(DEFAULT_METHODS) and all(s >= 0 for s in suite.seconds.values())
    payload = json.loads(json.dumps(suite.to_dict()))
    assert payload["n_reference"] == 120 and payload["dim"] == 8
    assert set(payload["methods"]) == set(DEFAULT_METHODS)
    assert suite["ks"].method == "ks"
    with pytest.raises(KeyError):
        suite["nope"]


def test_quorum_decides_the_suite_verdict():
    rng = np.random.default_rng(13)
    ref, cur = rng.normal(size=(300, 8)) + 1, rng.normal(size=(300, 8)) * 1.3 + 1
    one = drift_suite(ref, cur, methods=["norm", "centroid"], quorum=1)
    assert one.drifted_methods == ("norm",) and one.drifted
    assert not drift_suite(ref, cur, methods=["norm", "centroid"], quorum=2).drifted


@pytest.mark.parametrize("ref, cur, match", [
    (np.zeros(10), np.zeros((5, 2)), "2-D"),
    (np.zeros((1, 2)), np.zeros((5, 2)), "at least 2"),
    (np.zeros((5, 3)), np.zeros((5, 2)), "dimensions"),
    (np.full((5, 2), np.nan), np.zeros((5, 2)), "NaN"),
])
def test_bad_inputs_name_the_problem(ref, cur, match):
    with pytest.raises(ValidationError, match=match):
        ks_drift(ref, cur)


def test_bad_suite_arguments():
    x = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValidationError, match="unknown drift methods"):
        drift_suite(x, x, methods=["ks", "wasserstein"])
    with pytest.raises(ValidationError, match="do not run"):
        drift_suite(x, x, methods=["ks"], options={"mmd": {}})
    with pytest.raises(ValidationError, match="unknown options"):
        drift_suite(x, x, methods=["mmd"], options={"mmd": {"permutations": 5}})
    with pytest.raises(ValidationError, match="quorum"):
        drift_suite(x, x, methods=["ks"], quorum=0)


def test_public_surface():
    assert set(drift.__all__) <= set(dir(drift))
