"""Canary ramp: the treatment's share climbs step by step while the guardrails hold.

>>> s = CanaryState()
>>> s.weight((0.01, 0.05, 0.25, 0.5))
0.01
>>> s, action = next_step(s, (0.01, 0.05, 0.25, 0.5), breached=False, samples_at_step=500,
...                       min_samples=100, now=10.0)
>>> action, s.weight((0.01, 0.05, 0.25, 0.5))
('advance', 0.05)
>>> s, action = next_step(s, (0.01, 0.05, 0.25, 0.5), breached=True, samples_at_step=0,
...                       min_samples=100, now=20.0)
>>> action, s.weight((0.01, 0.05, 0.25, 0.5))
('halt', 0.0)

The state is plain data (``to_dict``/``from_dict``) kept in ``experiments.state``.
Because assignment buckets are nested (see :mod:`tuneloop.experiments.assignment`), users
who saw the treatment at 1% keep seeing it at 5%.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tuneloop.errors import ValidationError

__all__ = ["CanaryState", "DEFAULT_STEPS", "next_step", "validate_steps"]

DEFAULT_STEPS = (0.01, 0.05, 0.25, 0.5)


def validate_steps(steps: Sequence[float]) -> tuple[float, ...]:
    """Steps must be a non-empty, strictly increasing list of shares in (0, 1]."""
    s = tuple(float(x) for x in steps)
    if not s or any(not 0 < x <= 1 for x in s) or any(b <= a for a, b in zip(s, s[1:])):
        raise ValidationError(f"canary steps must increase strictly within (0, 1], got {list(steps)}",
                              field="canary_steps")
    return s


@dataclass(frozen=True)
class CanaryState:
    """Where the ramp stands: ``step`` index, or ``halted`` at 0% after a guardrail breach."""

    step: int = 0
    halted: bool = False
    step_started_at: float = 0.0

    def weight(self, steps: Sequence[float]) -> float:
        """The treatment's current share of traffic."""
        return 0.0 if self.halted else float(steps[min(self.step, len(steps) - 1)])

    def at_last_step(self, steps: Sequence[float]) -> bool:
        return self.step >= len(steps) - 1

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "halted": self.halted, "step_started_at": self.step_started_at}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "CanaryState":
        data = data or {}
        return cls(int(data.get("step", 0)), bool(data.get("halted", False)),
                   float(data.get("step_started_at", 0.0)))


def next_step(state: CanaryState, steps: Sequence[float], *, breached: bool, samples_at_step: int,
              min_samples: int, now: float, min_step_seconds: float = 0.0) -> tuple[CanaryState, str]:
    """Decide the ramp's next move: ``advance``, ``hold``, ``halt`` (breach: back to 0%) or
    ``complete`` (at the last step: the statistical decision takes over)."""
    if state.halted:
        return state, "halt"
    if breached:
        return replace(state, halted=True, step_started_at=now), "halt"
    if state.at_last_step(steps):
        return state, "complete"
    if samples_at_step < min_samples or now - state.step_started_at < min_step_seconds:
        return state, "hold"
    return CanaryState(state.step + 1, False, now), "advance"
