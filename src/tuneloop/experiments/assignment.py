"""Sticky assignment of users to arms: a stable hash of (experiment salt, user) into 10,000 buckets.

>>> ab = ABAssigner("v1", "v2", salt="exp-1", treatment_weight=0.1)
>>> a = ab.assign("user-42")
>>> a == ab.assign("user-42")          # same user, same arm, in every process
True
>>> a.arm in ("control", "treatment")
True

Buckets below ``treatment_weight * 10,000`` get the treatment. Raising the weight (a
canary ramp 1% -> 5% -> 25%) only adds buckets, so users already on the treatment stay
there. A different salt per experiment makes experiments independent of each other.
Without a user id, each request gets a random bucket.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from hashlib import blake2b
from typing import Protocol

from tuneloop.errors import ValidationError

__all__ = ["ABAssigner", "ARMS", "Assigner", "Assignment", "BUCKETS", "ShadowAssigner", "bucket", "make_assigner"]

BUCKETS = 10_000
ARMS = ("control", "treatment", "shadow")
MODES = ("ab", "canary", "shadow", "bandit")


def bucket(salt: str, unit: str) -> int:
    """The bucket (0..9,999) of ``unit`` in the experiment salted ``salt``.

    blake2b is in the standard library, fast for short inputs, and well mixed: the modulo
    bias of a 64-bit digest over 10,000 buckets is below 1e-15.

    >>> bucket("exp-1", "alice") == bucket("exp-1", "alice")
    True
    """
    digest = blake2b(f"{salt}\x1f{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


@dataclass(frozen=True, slots=True)
class Assignment:
    """Which version answers (``arm``) and which, if any, also answers in the background."""

    version_id: str
    arm: str
    shadow_version_id: str | None = None


class Assigner(Protocol):
    def assign(self, unit: str | None) -> Assignment: ...


def _check_weight(name: str, w: float) -> None:
    if not 0.0 <= w <= 1.0:
        raise ValidationError(f"{name} must be between 0 and 1, got {w}", field=name)


class ABAssigner:
    """A/B (and canary) split: ``treatment_weight`` of the buckets go to the treatment."""

    __slots__ = ("salt", "threshold", "_control", "_treatment", "_rand")

    def __init__(self, control_id: str, treatment_id: str, *, salt: str, treatment_weight: float,
                 rng: random.Random | None = None) -> None:
        _check_weight("treatment_weight", treatment_weight)
        self.salt = salt
        self.threshold = round(treatment_weight * BUCKETS)
        # Prebuilt results: the hot path allocates nothing.
        self._control = Assignment(control_id, "control")
        self._treatment = Assignment(treatment_id, "treatment")
        self._rand = (rng or random.Random()).random

    def assign(self, unit: str | None) -> Assignment:
        b = bucket(self.salt, unit) if unit is not None else int(self._rand() * BUCKETS)
        return self._treatment if b < self.threshold else self._control


class ShadowAssigner:
    """Shadow: the control always answers; ``shadow_rate`` of the users also get the treatment
    called in the background (logged as arm ``shadow``, never returned)."""

    __slots__ = ("salt", "threshold", "_with", "_without", "_rand")

    def __init__(self, control_id: str, treatment_id: str, *, salt: str, shadow_rate: float = 1.0,
                 rng: random.Random | None = None) -> None:
        _check_weight("shadow_rate", shadow_rate)
        self.salt = salt
        self.threshold = round(shadow_rate * BUCKETS)
        self._with = Assignment(control_id, "control", treatment_id)
        self._without = Assignment(control_id, "control")
        self._rand = (rng or random.Random()).random

    def assign(self, unit: str | None) -> Assignment:
        b = bucket(self.salt, unit) if unit is not None else int(self._rand() * BUCKETS)
        return self._with if b < self.threshold else self._without


def make_assigner(mode: str, control_id: str, treatment_id: str, *, salt: str, treatment_weight: float = 0.1,
                  shadow_rate: float = 1.0, posteriors: dict | None = None, exploration_floor: float = 0.05,
                  seed: int | None = None) -> Assigner:
    """The assigner of an experiment ``mode`` (ab, canary, shadow, bandit).

    For canary, ``treatment_weight`` is the current ramp step's share; for bandit,
    ``posteriors`` maps ``control``/``treatment`` to Beta ``(alpha, beta)``.

    >>> make_assigner("shadow", "v1", "v2", salt="s").assign("u").shadow_version_id
    'v2'
    """
    rng = random.Random(seed)
    if mode in ("ab", "canary"):
        return ABAssigner(control_id, treatment_id, salt=salt, treatment_weight=treatment_weight, rng=rng)
    if mode == "shadow":
        return ShadowAssigner(control_id, treatment_id, salt=salt, shadow_rate=shadow_rate, rng=rng)
    if mode == "bandit":
        from tuneloop.experiments.bandit import ThompsonAssigner

        return ThompsonAssigner(control_id, treatment_id, posteriors=posteriors,
                                exploration_floor=exploration_floor, rng=seed)
    raise ValidationError(f"mode {mode!r} is not one of {', '.join(MODES)}", field="mode")
