"""Assignment: stickiness, nesting, independence, and SRM on 100,000 simulated users per mode."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy import stats as sp

from tuneloop.errors import ValidationError
from tuneloop.experiments import bandit, canary
from tuneloop.experiments.assignment import BUCKETS, bucket, make_assigner
from tuneloop.experiments.stats import srm_check

USERS = [f"user-{i}" for i in range(100_000)]


def _arm_counts(assigner, users=USERS) -> Counter:
    return Counter(assigner.assign(u).arm for u in users)


def test_buckets_are_uniform_and_stable():
    counts = np.bincount([bucket("salt", u) // 1000 for u in USERS], minlength=10)
    assert sp.chisquare(counts).pvalue > 0.001
    assert bucket("salt", "alice") == bucket("salt", "alice")
    assert 0 <= bucket("x", "") < BUCKETS


@pytest.mark.parametrize("weight", [0.1, 0.5, 0.01])
def test_ab_split_passes_srm(weight):
    c = _arm_counts(make_assigner("ab", "v1", "v2", salt=f"exp-{weight}", treatment_weight=weight))
    assert not srm_check([c["control"], c["treatment"]], [1 - weight, weight]).mismatch


def test_ab_is_sticky_and_salts_are_independent():
    a = make_assigner("ab", "v1", "v2", salt="exp-a", treatment_weight=0.5)
    b = make_assigner("ab", "v1", "v2", salt="exp-b", treatment_weight=0.5)
    again = make_assigner("ab", "v1", "v2", salt="exp-a", treatment_weight=0.5)
    users = USERS[:20_000]
    assert all(a.assign(u) == again.assign(u) for u in users)
    table = Counter((a.assign(u).arm, b.assign(u).arm) for u in users)
    observed = [[table[("control", "control")], table[("control", "treatment")]],
                [table[("treatment", "control")], table[("treatment", "treatment")]]]
    assert sp.chi2_contingency(observed).pvalue > 0.001  # no correlation between experiments


def test_no_user_means_random_but_balanced():
    a = make_assigner("ab", "v1", "v2", salt="s", treatment_weight=0.3, seed=1)
    c = Counter(a.assign(None).arm for _ in range(50_000))
    assert not srm_check([c["control"], c["treatment"]], [0.7, 0.3]).mismatch


def test_canary_every_step_passes_srm_and_ramp_is_nested():
    previous: set[str] = set()
    for w in canary.DEFAULT_STEPS:
        a = make_assigner("canary", "v1", "v2", salt="canary-1", treatment_weight=w)
        treated = {u for u in USERS if a.assign(u).arm == "treatment"}
        assert not srm_check([len(USERS) - len(treated), len(treated)], [1 - w, w]).mismatch
        assert previous <= treated  # users on the canary stay on it as it grows
        previous = treated


def test_shadow_passes_srm_and_never_serves_the_challenger():
    full = make_assigner("shadow", "v1", "v2", salt="sh", shadow_rate=1.0)
    assert all(full.assign(u).version_id == "v1" and full.assign(u).shadow_version_id == "v2"
               for u in USERS[:1000])
    part = make_assigner("shadow", "v1", "v2", salt="sh", shadow_rate=0.3)
    shadowed = sum(part.assign(u).shadow_version_id is not None for u in USERS)
    assert not srm_check([len(USERS) - shadowed, shadowed], [0.7, 0.3]).mismatch
    assert {part.assign(u).arm for u in USERS[:1000]} == {"control"}


@pytest.mark.parametrize("posteriors", [{"control": (30, 70), "treatment": (40, 60)},
                                        {"control": (1, 1), "treatment": (1, 1)},
                                        {"control": (300, 700), "treatment": (200, 800)}])
def test_bandit_allocation_matches_its_probability(posteriors):
    p = bandit.allocation_probability(posteriors, 0.05)
    c = _arm_counts(make_assigner("bandit", "v1", "v2", salt="b", posteriors=posteriors, seed=3))
    assert not srm_check([c["control"], c["treatment"]], [1 - p, p]).mismatch


def test_bandit_floor_and_preference():
    post = bandit.posteriors_from_counts({"control": (100, 1000), "treatment": (500, 1000)})
    assert bandit.allocation_probability(post, 0.05) == pytest.approx(0.95, abs=1e-6)
    worse = bandit.posteriors_from_counts({"control": (500, 1000), "treatment": (100, 1000)})
    c = _arm_counts(make_assigner("bandit", "v1", "v2", salt="b", posteriors=worse, seed=0), USERS[:20_000])
    assert 0.04 < c["treatment"] / 20_000 < 0.06  # the floor keeps exploring the losing arm
    with pytest.raises(ValidationError):
        bandit.posteriors_from_counts({"control": (5, 3)})
    with pytest.raises(ValidationError):
        make_assigner("bandit", "v1", "v2", salt="b", exploration_floor=0.7)


def test_canary_state_machine():
    steps = canary.DEFAULT_STEPS
    s = canary.CanaryState(step_started_at=0.0)
    s, act = canary.next_step(s, steps, breached=False, samples_at_step=10, min_samples=100, now=1.0)
    assert act == "hold" and s.weight(steps) == 0.01
    for expected in (0.05, 0.25, 0.5):
        s, act = canary.next_step(s, steps, breached=False, samples_at_step=100, min_samples=100, now=2.0)
        assert act == "advance" and s.weight(steps) == expected
    s, act = canary.next_step(s, steps, breached=False, samples_at_step=10**6, min_samples=100, now=3.0)
    assert act == "complete"
    s, act = canary.next_step(s, steps, breached=True, samples_at_step=0, min_samples=100, now=4.0)
    assert act == "halt" and s.weight(steps) == 0.0
    assert canary.CanaryState.from_dict(s.to_dict()) == s
    slow = canary.next_step(canary.CanaryState(step_started_at=0.0), steps, breached=False,
                            samples_at_step=500, min_samples=100, now=10.0, min_step_seconds=60)
    assert slow[1] == "hold"


@pytest.mark.parametrize("bad", [[0.5, 0.25], [], [0.0, 0.5], [0.5, 1.5]])
def test_canary_steps_validated(bad):
    with pytest.raises(ValidationError, match="canary steps"):
        canary.validate_steps(bad)


def test_bad_mode_and_weight():
    with pytest.raises(ValidationError, match="mode"):
        make_assigner("split", "v1", "v2", salt="s")
    with pytest.raises(ValidationError, match="treatment_weight"):
        make_assigner("ab", "v1", "v2", salt="s", treatment_weight=1.5)
