"""Thompson sampling over Beta posteriors of a binary reward, with an exploration floor.

>>> post = posteriors_from_counts({"control": (30, 100), "treatment": (60, 100)})
>>> post["treatment"]
(61.0, 41.0)
>>> t = ThompsonAssigner("v1", "v2", posteriors=post, exploration_floor=0.05)
>>> 0.9 < allocation_probability(post, 0.05) <= 0.95
True

Each request draws one sample from each arm's Beta posterior and goes to the larger. The
exploration floor keeps every arm at ``floor`` of the traffic at least, so a challenger
that looked bad early still gets the data to recover, and the comparison never starves.
Assignment is per request, not sticky: that is what lets the bandit shift traffic as the
posteriors move. Posteriors are updated from the store by the manager and picked up by the
router when its cache refreshes.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tuneloop.errors import ValidationError
from tuneloop.experiments.assignment import Assignment

__all__ = ["ThompsonAssigner", "allocation_probability", "posteriors_from_counts"]

PRIOR = (1.0, 1.0)  # uniform Beta(1, 1)


def posteriors_from_counts(counts: Mapping[str, tuple[int, int]],
                           prior: tuple[float, float] = PRIOR) -> dict[str, tuple[float, float]]:
    """Beta posteriors from ``{arm: (successes, trials)}``."""
    out = {}
    for arm, (s, n) in counts.items():
        if n < 0 or not 0 <= s <= n:
            raise ValidationError(f"arm {arm!r}: need 0 <= successes <= trials, got {s}/{n}", field=arm)
        out[arm] = (prior[0] + s, prior[1] + n - s)
    return out


def _posterior(posteriors: Mapping | None, arm: str) -> tuple[float, float]:
    a, b = (posteriors or {}).get(arm, PRIOR)
    if a <= 0 or b <= 0:
        raise ValidationError(f"Beta parameters of arm {arm!r} must be positive, got ({a}, {b})", field=arm)
    return float(a), float(b)


def allocation_probability(posteriors: Mapping | None, exploration_floor: float = 0.05) -> float:
    """Probability that one request goes to the treatment under these posteriors.

    ``floor + (1 - 2 floor) * P(X_treatment > X_control)``, the second term by numerical
    integration. Used for the SRM check of a bandit and for display.
    """
    from scipy import integrate
    from scipy import stats as sp

    ac, bc = _posterior(posteriors, "control")
    at, bt = _posterior(posteriors, "treatment")
    win, _ = integrate.quad(lambda x: sp.beta.pdf(x, at, bt) * sp.beta.cdf(x, ac, bc), 0, 1, limit=200)
    return exploration_floor + (1 - 2 * exploration_floor) * min(max(win, 0.0), 1.0)


class ThompsonAssigner:
    """Per-request Thompson sampling between control and treatment.

    Draws are made with numpy in blocks of ``block`` requests and handed out one per call
    (a list pop, atomic under the GIL): ~0.3 µs per request instead of ~3 µs for two
    ``random.betavariate`` calls. The posteriors are fixed for the assigner's lifetime; the
    router builds a new assigner when they change.
    """

    __slots__ = ("floor", "block", "_params", "_control", "_treatment", "_rng", "_queue")

    def __init__(self, control_id: str, treatment_id: str, *, posteriors: Mapping | None = None,
                 exploration_floor: float = 0.05, rng: np.random.Generator | int | None = None,
                 block: int = 4096) -> None:
        if not 0.0 <= exploration_floor <= 0.5:
            raise ValidationError(f"exploration_floor must be between 0 and 0.5, got {exploration_floor}",
                                  field="exploration_floor")
        self.floor, self.block = exploration_floor, block
        self._params = (_posterior(posteriors, "control"), _posterior(posteriors, "treatment"))
        self._control = Assignment(control_id, "control")
        self._treatment = Assignment(treatment_id, "treatment")
        self._rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._queue: list[Assignment] = []

    def _refill(self) -> None:
        (ac, bc), (at, bt) = self._params
        k, rng = self.block, self._rng
        u = rng.random(k)
        thompson = rng.beta(at, bt, k) > rng.beta(ac, bc, k)
        # u < 2 floor: exploration, each arm gets `floor` of all requests; otherwise Thompson.
        treat = np.where(u < 2 * self.floor, u >= self.floor, thompson)
        self._queue = [self._treatment if t else self._control for t in treat.tolist()]

    def assign(self, unit: str | None = None) -> Assignment:
        try:
            return self._queue.pop()
        except IndexError:
            self._refill()
            return self._queue.pop()
