"""The update-rate policy (seed 000, "Rate of update"): how often each lever may change production.

Seed 000: daily prompt changes are fine (low risk), weekly fine-tunes with an eval, monthly
base models, and "every day a deploy plus a bug = chaos". In a loop config::

    "update_policy": {
        "min_interval": {"prompt": "1d", "adapter": "7d", "base": "30d"},
        "freeze_windows": [{"start": "2026-12-20", "end": "2027-01-03", "reason": "year-end freeze"}],
        "max_promotions": {"count": 2, "period": "7d"}
    }

Durations are hours (a number) or strings: ``"90m"``, ``"12h"``, ``"1d"``, ``"2w"``, or the
seed's words ``hourly``, ``daily``, ``weekly``, ``monthly`` (30 d), ``quarterly`` (90 d).
Freeze-window bounds are ISO dates or datetimes in UTC (a bare end date includes that day).

The rules, where they act, and what a held action does (each hold names its rule):

====================  ======================================  =====================================
rule                  checked                                 when it holds
====================  ======================================  =====================================
``min_interval``      before a cycle starts (planned lever)   no cycle starts (the trigger is kept)
                      and before a promotion (cycle's lever)  the cycle waits, promotion deferred
``freeze_window``     before a promotion                      the cycle waits in ``experimenting``
                      before an experiment starts             the cycle waits in ``gated``
                      (``freeze_holds_experiments``)
``max_promotions``    before a promotion                      the cycle waits in ``experimenting``
====================  ======================================  =====================================

A held cycle *waits* rather than ending: its candidate passed the gate and its experiment
keeps collecting evidence, so it is promoted as soon as the rule lets go (nothing is
retrained, nothing is lost). Safety actions are never held: a guardrail breach or a worse
challenger still rolls back during a freeze. Manual triggers (``tuneloop loop trigger``)
bypass the start-time rules -- an operator asked -- but never the promotion-time ones.

This module is pure: rules take the promotion history and a time and return a
:class:`Hold` or None. ``loop/holds.py`` reads the store and records the holds.

>>> p = UpdatePolicy.from_dict({"min_interval": {"adapter": "weekly"}, "max_promotions": 2})
>>> p.min_interval_hours["adapter"], p.max_promotions, p.promotion_period_hours
(168.0, 2, 168.0)
>>> hold = start_hold(p, "adapter", [Promotion(ts=0.0, version_id="v2", lever="adapter")], t=86400.0)
>>> hold.rule, hold.until
('min_interval', 604800.0)
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from tuneloop.errors import ConfigError

HOUR = 3600.0
LEVERS = ("prompt", "adapter", "model", "base")  # as registry.versions.LEVERS: what changed to make a version
FINETUNE_LEVERS = ("adapter", "model")  # trained weights: a LoRA adapter, or a merged / fully tuned model
LEVER_ALIASES = {"fine_tune": "adapter", "finetune": "adapter", "fine-tune": "adapter", "lora": "adapter",
                 "weights": "model", "base_model": "base"}
_WORDS = {"hourly": 1.0, "daily": 24.0, "weekly": 168.0, "monthly": 720.0, "quarterly": 2160.0}
_UNITS = {"m": 1 / 60, "min": 1 / 60, "h": 1.0, "d": 24.0, "w": 168.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(min|m|h|d|w)\s*$", re.I)


def parse_duration(value: Any, name: str) -> float:
    """Hours from a number of hours or a string such as ``"7d"``, ``"12h"``, ``"weekly"``.

    >>> parse_duration("1.5d", "x"), parse_duration(6, "x"), parse_duration("monthly", "x")
    (36.0, 6.0, 720.0)
    """
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected a duration such as 24, '12h', '7d' or 'weekly', got {value!r}")
    if isinstance(value, (int, float)):
        hours = float(value)
    elif isinstance(value, str) and value.strip().lower() in _WORDS:
        hours = _WORDS[value.strip().lower()]
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        hours = float(m.group(1)) * _UNITS[m.group(2).lower()]
    else:
        raise ConfigError(f"{name}: {value!r} is not a duration; use hours (24), '90m', '12h', '7d', '2w', "
                          f"or one of {', '.join(_WORDS)}")
    if hours < 0:
        raise ConfigError(f"{name}: a duration must be >= 0, got {value!r}")
    return hours


def lever_name(value: str, name: str = "lever") -> str:
    """The canonical lever (``prompt``, ``adapter``, ``model``, ``base``) for a name or seed-style alias."""
    key = str(value).strip().lower()
    key = LEVER_ALIASES.get(key, key)
    if key not in LEVERS:
        raise ConfigError(f"{name}: unknown lever {value!r}; use one of {', '.join(LEVERS)} "
                          f"(or {', '.join(LEVER_ALIASES)})")
    return key


def parse_utc(value: Any, name: str, *, end: bool = False) -> float:
    """Epoch seconds of an ISO date/datetime (UTC unless it says otherwise) or a number.

    A bare date as an ``end`` means the end of that day, so ``{"start": "2026-12-24",
    "end": "2026-12-26"}`` freezes three whole days.

    >>> parse_utc("2026-01-01", "x"), parse_utc("2026-01-01", "x", end=True) - parse_utc("2026-01-01", "x")
    (1767225600.0, 86400.0)
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day) + (timedelta(days=1) if end else timedelta())
    elif isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:  # YYYY-MM-DD
                d = date.fromisoformat(text)
                dt = datetime(d.year, d.month, d.day) + (timedelta(days=1) if end else timedelta())
            else:
                dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError as exc:
            raise ConfigError(f"{name}: {value!r} is not an ISO date or datetime ({exc})") from exc
    else:
        raise ConfigError(f"{name}: expected an ISO date or datetime, got {value!r}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def iso(ts: float | None) -> str | None:
    """``2026-12-20T00:00:00Z`` for epoch seconds (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class FreezeWindow:
    """No promotion between ``start`` and ``end`` (epoch seconds, UTC); ``reason`` is shown."""

    start: float
    end: float
    reason: str = "freeze window"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str = "freeze_windows") -> "FreezeWindow":
        if not isinstance(data, Mapping):
            raise ConfigError(f"{name}: each freeze window is {{start, end, reason}}, got {data!r}")
        unknown = sorted(set(data) - {"start", "end", "reason"})
        if unknown or "start" not in data or "end" not in data:
            raise ConfigError(f"{name}: a freeze window needs start and end (and an optional reason); "
                              f"got keys {sorted(data)}")
        start, end = parse_utc(data["start"], f"{name}.start"), parse_utc(data["end"], f"{name}.end", end=True)
        if end <= start:
            raise ConfigError(f"{name}: end {data['end']!r} must be after start {data['start']!r}")
        return cls(start, end, str(data.get("reason") or "freeze window"))

    def contains(self, t: float) -> bool:
        return self.start <= t < self.end

    def to_dict(self) -> dict[str, Any]:
        return {"start": iso(self.start), "end": iso(self.end), "reason": self.reason}


@dataclass(frozen=True)
class Promotion:
    """One past promotion: when, which version, and which lever it changed."""

    ts: float
    version_id: str
    lever: str = "adapter"
    actor: str = "loop"


@dataclass(frozen=True)
class Hold:
    """An action the policy held: the ``rule`` that held it, why, and when it may go (if known)."""

    rule: str
    reason: str
    until: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "reason": self.reason, "until": self.until, "until_utc": iso(self.until),
                **self.details}


@dataclass
class UpdatePolicy:
    """How often the loop may change production. Empty (the default) holds nothing."""

    min_interval_hours: dict[str, float] = field(default_factory=dict, metadata={
        "help": "per lever (prompt, adapter, model, base): hours or '1d'/'7d'/'weekly' since its last promotion"})
    freeze_windows: list[FreezeWindow] = field(default_factory=list, metadata={
        "help": "[{start, end, reason}] UTC dates/datetimes during which nothing is promoted"})
    max_promotions: int | None = field(default=None, metadata={"help": "promotions allowed per period (None: no cap)"})
    promotion_period_hours: float = field(default=168.0, metadata={"help": "the period of max_promotions"})
    freeze_holds_experiments: bool = field(default=True, metadata={
        "help": "during a freeze no new experiment starts either (no new traffic reaches a challenger)"})

    def __post_init__(self) -> None:
        self.min_interval_hours = {lever_name(k, "update_policy.min_interval"): parse_duration(v, f"update_policy.min_interval.{k}")
                                   for k, v in dict(self.min_interval_hours or {}).items()}
        self.freeze_windows = [w if isinstance(w, FreezeWindow) else FreezeWindow.from_dict(w, f"update_policy.freeze_windows[{i}]")
                               for i, w in enumerate(self.freeze_windows or [])]
        if self.max_promotions is not None and (isinstance(self.max_promotions, bool) or int(self.max_promotions) < 1):
            raise ConfigError(f"update_policy.max_promotions must be >= 1 (or null for no cap), got {self.max_promotions!r}")
        self.promotion_period_hours = parse_duration(self.promotion_period_hours, "update_policy.promotion_period")
        if self.max_promotions is not None and self.promotion_period_hours <= 0:
            raise ConfigError("update_policy.promotion_period must be > 0 when max_promotions is set")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "UpdatePolicy":
        """Seed-style keys: ``min_interval``, ``freeze_windows``, ``max_promotions`` (a count, or
        ``{"count", "period"}``), ``promotion_period``; the field names work too."""
        data = dict(data or {})
        if "min_interval" in data:
            data["min_interval_hours"] = data.pop("min_interval")
        if "promotion_period" in data:
            data["promotion_period_hours"] = data.pop("promotion_period")
        cap = data.get("max_promotions")
        if isinstance(cap, Mapping):
            extra = sorted(set(cap) - {"count", "period"})
            if extra or "count" not in cap:
                raise ConfigError(f"update_policy.max_promotions: use {{count, period}}, got keys {sorted(cap)}")
            data["max_promotions"] = cap["count"]
            data["promotion_period_hours"] = cap.get("period", data.get("promotion_period_hours", 168.0))
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown update_policy keys: {', '.join(unknown)}; use min_interval, freeze_windows, "
                              "max_promotions, promotion_period, freeze_holds_experiments")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {"min_interval_hours": dict(self.min_interval_hours),
                "freeze_windows": [w.to_dict() for w in self.freeze_windows],
                "max_promotions": self.max_promotions, "promotion_period_hours": self.promotion_period_hours,
                "freeze_holds_experiments": self.freeze_holds_experiments}

    @property
    def empty(self) -> bool:
        return not self.min_interval_hours and not self.freeze_windows and self.max_promotions is None

    def lookback_hours(self) -> float:
        """How much promotion history the rules need."""
        return max([self.promotion_period_hours if self.max_promotions else 0.0, *self.min_interval_hours.values(), 0.0])


# --------------------------------------------------------------------------- the rules (pure)
def freeze_at(policy: UpdatePolicy, t: float) -> FreezeWindow | None:
    """The freeze window ``t`` falls in (the one ending last, when windows overlap)."""
    inside = [w for w in policy.freeze_windows if w.contains(t)]
    return max(inside, key=lambda w: w.end) if inside else None


def freeze_hold(policy: UpdatePolicy, t: float) -> Hold | None:
    w = freeze_at(policy, t)
    if w is None:
        return None
    return Hold("freeze_window", f"freeze window '{w.reason}' until {iso(w.end)}", w.end,
                {"window": w.to_dict()})


def min_interval_hold(policy: UpdatePolicy, lever: str, promotions: Iterable[Promotion], t: float) -> Hold | None:
    """Held when ``lever`` was promoted less than its minimum interval ago."""
    hours = policy.min_interval_hours.get(lever)
    if not hours:
        return None
    last = max((p for p in promotions if p.lever == lever), key=lambda p: p.ts, default=None)
    if last is None or t - last.ts >= hours * HOUR:
        return None
    until = last.ts + hours * HOUR
    return Hold("min_interval", f"min_interval[{lever}]: last {lever} promotion ({last.version_id}) "
                f"{(t - last.ts) / HOUR:.1f} h ago < {hours:g} h; next at {iso(until)}", until,
                {"lever": lever, "last_promotion": last.version_id, "last_promotion_at": last.ts, "interval_hours": hours})


def max_promotions_hold(policy: UpdatePolicy, promotions: Sequence[Promotion], t: float) -> Hold | None:
    """Held when ``max_promotions`` promotions already happened in the last period."""
    if policy.max_promotions is None:
        return None
    period = policy.promotion_period_hours * HOUR
    recent = sorted(p.ts for p in promotions if t - period < p.ts <= t)
    if len(recent) < policy.max_promotions:
        return None
    # the slot frees when enough of the recent promotions have aged out of the period
    until = recent[len(recent) - policy.max_promotions] + period
    return Hold("max_promotions", f"max_promotions: {len(recent)} promotions in the last "
                f"{policy.promotion_period_hours:g} h (cap {policy.max_promotions}); next slot at {iso(until)}", until,
                {"promotions_in_period": len(recent), "cap": policy.max_promotions,
                 "period_hours": policy.promotion_period_hours})


def start_hold(policy: UpdatePolicy, lever: str, promotions: Sequence[Promotion], t: float) -> Hold | None:
    """Should a cycle on ``lever`` start now? Only the minimum interval matters here:
    a freeze or a full promotion quota may be over by the time the candidate is ready."""
    return min_interval_hold(policy, lever, promotions, t)


def promotion_hold(policy: UpdatePolicy, lever: str, promotions: Sequence[Promotion], t: float) -> Hold | None:
    """May a candidate on ``lever`` be promoted now? Freeze first, then the quota, then the interval."""
    return (freeze_hold(policy, t) or max_promotions_hold(policy, promotions, t)
            or min_interval_hold(policy, lever, promotions, t))
