"""Which lever a cycle pulls: a new prompt, or a fine-tuned adapter (seed 000: iterate on the
cheapest lever that still helps; every change must justify its cost).

    levers = {"order": ["prompt", "adapter"], "prompt_min_gain": 0.02, "prompt_patience": 1}

Per cycle the policy walks ``order`` and takes the first lever that is available and not
exhausted. A lever is *exhausted* when its last ``<lever>_patience`` cycles all failed to
help: rejected (by the gate, an approver or the online test), rolled back, failed, or
promoted with a gain below ``<lever>_min_gain``. Only cycles since the last promotion won by
another lever count, so a new fine-tuned champion gets fresh prompt attempts. The prompt
lever is *unavailable* when no candidate is left untried and no rewriter is configured.
The last lever in ``order`` is the fallback when every lever is exhausted.

The gain of a cycle is the online experiment's improvement of its primary metric (relative
lift; absolute when the control's value was <= 0); without an A/B test, the golden pass-rate
difference at the gate.

>>> policy = LeverPolicy(order=("prompt", "adapter"))
>>> choose_lever(policy, [], {"prompt": True}).lever
'prompt'
>>> flat = CycleOutcome("r1", "prompt", "promoted", 0.001)
>>> choose = choose_lever(policy, [flat], {"prompt": True})
>>> choose.lever, choose.reason
('adapter', 'prompt exhausted: its last cycle gained +0.1% < 2.0% (promoted); adapter next in order')
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from tuneloop.errors import ConfigError
from tuneloop.store import Database, schema

__all__ = ["LEVERS", "CycleOutcome", "LeverChoice", "LeverPolicy", "choose_lever", "cycle_gain", "lever_history",
           "lever_status", "summarize_levers"]

LEVERS = ("prompt", "adapter")
_FINAL = ("promoted", "rolled_back", "rejected", "failed", "completed")


@dataclass(frozen=True)
class LeverPolicy:
    """How the loop picks a lever per cycle. ``LoopConfig.levers`` holds these fields."""

    order: tuple[str, ...] = field(default=("adapter",), metadata={"help": "levers in the order to try them"})
    prompt_min_gain: float = field(default=0.02, metadata={"help": "a prompt cycle gaining less did not help"})
    prompt_patience: int = field(default=1, metadata={"help": "prompt cycles that did not help before fine-tuning"})
    adapter_min_gain: float = field(default=0.0, metadata={"help": "an adapter cycle gaining less did not help"})
    adapter_patience: int = field(default=2, metadata={"help": "adapter cycles that did not help before the next lever"})

    def __post_init__(self) -> None:
        order = (self.order,) if isinstance(self.order, str) else tuple(self.order)
        object.__setattr__(self, "order", order)
        if not order:
            raise ConfigError("levers.order must name at least one lever (prompt, adapter)")
        bad = [x for x in order if x not in LEVERS]
        if bad or len(set(order)) != len(order):
            raise ConfigError(f"levers.order {list(order)}: each of {', '.join(LEVERS)} at most once")
        for lever in LEVERS:
            if getattr(self, f"{lever}_patience") < 1:
                raise ConfigError(f"levers.{lever}_patience must be >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "LeverPolicy":
        data = dict(data or {})
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown levers keys: {', '.join(unknown)} (known: {', '.join(cls.__dataclass_fields__)})")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["order"] = list(self.order)
        return d


@dataclass(frozen=True)
class CycleOutcome:
    """A finished cycle as the policy sees it: its lever, end state and gain (None: no gain)."""

    run_id: str
    lever: str
    state: str
    gain: float | None
    version_id: str | None = None

    @property
    def helped(self) -> bool:
        return self.state == "promoted" and self.gain is not None


@dataclass(frozen=True)
class LeverChoice:
    """The lever of one cycle and the rule that picked it (kept in the cycle's details)."""

    lever: str
    reason: str


def cycle_gain(details: Mapping[str, Any] | None) -> float | None:
    """What a promoted cycle bought: the experiment's improvement, else the gate's difference."""
    d = details or {}
    imp = (d.get("experiment") or {}).get("improvement")
    if isinstance(imp, (int, float)):
        return float(imp)
    gate = d.get("gate") or {}
    rate, champ = gate.get("pass_rate"), gate.get("champion_pass_rate")
    if isinstance(rate, (int, float)):
        return float(rate) - float(champ if isinstance(champ, (int, float)) else 0.0)
    return None


def _why_not(outcome: CycleOutcome, min_gain: float) -> str | None:
    """Why a cycle did not help (None when it did)."""
    if outcome.state != "promoted":
        return f"was {outcome.state.replace('_', ' ')}"
    if outcome.gain is None:
        return "was promoted with an unknown gain"
    if outcome.gain < min_gain:
        return f"gained {outcome.gain:+.1%} < {min_gain:.1%} (promoted)"
    return None


def _exhausted(policy: LeverPolicy, lever: str, history: Sequence[CycleOutcome]) -> str | None:
    """Why ``lever`` is exhausted (None when it is not). ``history`` is newest first."""
    since: list[CycleOutcome] = []
    for o in history:
        if o.lever != lever and o.state == "promoted":
            break  # another lever changed the champion: this lever gets fresh attempts
        if o.lever == lever:
            since.append(o)
    patience, min_gain = getattr(policy, f"{lever}_patience"), getattr(policy, f"{lever}_min_gain")
    recent = since[:patience]
    if len(recent) < patience:
        return None
    reasons = [_why_not(o, min_gain) for o in recent]
    if any(r is None for r in reasons):
        return None
    if patience == 1:
        return f"its last cycle {reasons[0]}"
    return f"its last {patience} cycles did not help ({'; '.join(r or '' for r in reasons)})"


def choose_lever(policy: LeverPolicy, history: Sequence[CycleOutcome],
                 available: Mapping[str, bool | str] | None = None) -> LeverChoice:
    """The lever of the next cycle. ``available[lever]``: True, or a text saying why not. Pure."""
    available = dict(available or {})
    skipped: list[str] = []
    for lever in policy.order:
        ok = available.get(lever, True)
        if ok is not True:
            skipped.append(f"{lever} unavailable: {ok or 'not configured'}")
            continue
        why = _exhausted(policy, lever, history)
        if why is not None:
            skipped.append(f"{lever} exhausted: {why}")
            continue
        if not skipped:
            return LeverChoice(lever, f"{lever}: first lever in order")
        return LeverChoice(lever, f"{'; '.join(skipped)}; {lever} next in order")
    fallback = policy.order[-1]
    return LeverChoice(fallback, f"{'; '.join(skipped)}; {fallback} as the last resort")


def lever_history(db: Database, *, limit: int = 50, before: float | None = None) -> list[CycleOutcome]:
    """Finished cycles, newest first, as :class:`CycleOutcome` (cycles before levers count as adapter)."""
    lr = schema.loop_runs
    stmt = sa.select(lr.c.id, lr.c.state, lr.c.details, lr.c.version_id).where(lr.c.state.in_(_FINAL))
    if before is not None:
        stmt = stmt.where(lr.c.started_at < before)
    rows = db.fetch_all(stmt.order_by(lr.c.started_at.desc()).limit(limit))
    out = []
    for r in rows:
        d = r["details"] or {}
        if r["state"] == "completed" and not d.get("lever"):
            continue  # not a retraining cycle (seed 002's AutoRetrainer)
        gain = cycle_gain(d) if r["state"] == "promoted" else None
        out.append(CycleOutcome(r["id"], d.get("lever", "adapter"), r["state"], gain, r["version_id"]))
    return out


def summarize_levers(history: Sequence[CycleOutcome]) -> dict[str, Any]:
    """Per lever: cycles, promotions, best and last gain; and the last win. Pure.

    >>> summarize_levers([CycleOutcome("r2", "adapter", "promoted", 0.35, "v2"),
    ...                   CycleOutcome("r1", "prompt", "promoted", 2.5, "v1")])["last_win"]
    {'lever': 'adapter', 'version_id': 'v2', 'gain': 0.35, 'run_id': 'r2'}
    """
    per: dict[str, dict[str, Any]] = {}
    for o in reversed(history):  # oldest first, so "last" ends as the newest
        p = per.setdefault(o.lever, {"cycles": 0, "promoted": 0, "best_gain": None, "last": None})
        p["cycles"] += 1
        if o.helped:
            p["promoted"] += 1
            p["best_gain"] = o.gain if p["best_gain"] is None else max(p["best_gain"], o.gain)
        p["last"] = {"run_id": o.run_id, "state": o.state, "gain": o.gain, "version_id": o.version_id}
    win = next((o for o in history if o.helped), None)
    last_win = {"lever": win.lever, "version_id": win.version_id, "gain": win.gain, "run_id": win.run_id} if win else None
    return {"per_lever": per, "last_win": last_win}


def lever_status(db: Database, config: Any) -> dict[str, Any]:
    """What ``tuneloop loop status`` shows about levers: the order, the next pick and why, wins."""
    from tuneloop.loop.prompting import plan_lever

    nxt = plan_lever(db, config)
    return {"order": list(config.levers.order), "next": {"lever": nxt.lever, "reason": nxt.reason},
            **summarize_levers(lever_history(db))}
