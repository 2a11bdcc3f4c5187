"""One reward per interaction, from explicit and implicit feedback.

The defaults are seed 003's implicit-feedback weights (continued +2, session > 5 min +1,
copied +2, regenerated -2, session < 30 s -1, reported -5) plus explicit feedback:
thumbs +-1 and a 1-5 rating mapped linearly onto [-1, 1], each scaled by its weight.

>>> compute_reward([{"kind": "thumbs", "value": 1}, {"kind": "copy"}])
3.0
>>> compute_reward([{"kind": "rating", "value": 1}])
-1.0

:func:`update_rewards` recomputes incrementally: only interactions that received feedback
after a watermark are touched, and the new watermark is returned for the next call.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import sqlalchemy as sa

from tuneloop.errors import ValidationError
from tuneloop.store import schema

# Kinds where only the newest row per (kind, source) counts: a user who flips a thumb
# from up to down means down, not zero.
_LATEST_WINS = {"thumbs", "rating", "session", "dwell"}
# Events that count once whatever their repetition or source: copying twice is not twice
# as good, and a regenerate the client sent is the same event the log inference finds.
_ONCE = {"copy", "regenerate", "report", "continue"}


@dataclass(frozen=True, slots=True)
class RewardWeights:
    """Weights of each signal in the reward. Every field is configurable.

    >>> w = RewardWeights(regenerated=-3.0)
    >>> compute_reward([{"kind": "regenerate"}], w)
    -3.0
    """

    continued: float = field(default=2.0, metadata={"help": "the user kept chatting after this answer"})
    long_session: float = field(default=1.0, metadata={"help": "session lasted more than long_session_s"})
    long_session_s: float = field(default=300.0, metadata={"help": "seconds above which a session is long"})
    copied: float = field(default=2.0, metadata={"help": "the user copied the answer"})
    regenerated: float = field(default=-2.0, metadata={"help": "the user regenerated / re-asked"})
    short_session: float = field(default=-1.0, metadata={"help": "session lasted less than short_session_s"})
    short_session_s: float = field(default=30.0, metadata={"help": "seconds below which a session is short"})
    reported: float = field(default=-5.0, metadata={"help": "the user reported / flagged the answer"})
    thumbs: float = field(default=1.0, metadata={"help": "scale of a thumb (+1 / 0 / -1)"})
    rating: float = field(default=1.0, metadata={"help": "scale of a 1-5 rating mapped to [-1, 1]"})
    long_dwell: float = field(default=0.0, metadata={"help": "dwell on the answer above long_dwell_s"})
    long_dwell_s: float = field(default=60.0, metadata={"help": "seconds above which dwell counts"})
    source_weights: Mapping[str, float] = field(
        default_factory=lambda: {"user": 1.0, "implicit": 1.0, "annotator": 1.0, "judge": 0.5},
        metadata={"help": "multiplier per feedback source; unknown sources count 1.0"})

    def __post_init__(self) -> None:
        if self.short_session_s > self.long_session_s:
            raise ValidationError("short_session_s must not exceed long_session_s",
                                  field="short_session_s", value=self.short_session_s)
        for f in fields(self):
            if f.name != "source_weights" and not isinstance(getattr(self, f.name), (int, float)):
                raise ValidationError(f"RewardWeights.{f.name} must be a number", field=f.name)


DEFAULT_WEIGHTS = RewardWeights()


def _signal_value(kind: str, value: float | None, w: RewardWeights) -> float:
    """Reward contribution of one feedback row (before its source multiplier)."""
    if kind == "thumbs":
        return w.thumbs * max(-1.0, min(1.0, float(value or 0.0)))
    if kind == "rating":
        if value is None:
            return 0.0
        r = max(1.0, min(5.0, float(value)))
        return w.rating * (r - 3.0) / 2.0
    if kind == "continue":
        return w.continued
    if kind == "copy":
        return w.copied
    if kind == "regenerate":
        return w.regenerated
    if kind == "report":
        return w.reported
    if kind == "session" and value is not None:
        if value > w.long_session_s:
            return w.long_session
        if value < w.short_session_s:
            return w.short_session
        return 0.0
    if kind == "dwell" and value is not None and value > w.long_dwell_s:
        return w.long_dwell
    return 0.0  # comment, pairwise and unknown kinds carry no scalar reward


def compute_reward(feedback_rows: Iterable[Mapping[str, Any]], weights: RewardWeights = DEFAULT_WEIGHTS) -> float:
    """Reward of one interaction from its feedback rows (dicts with kind, value, source, ts).

    Pure: no database, no clock. Rows of a latest-wins kind (thumbs, rating, session,
    dwell) count only their newest value per source; event kinds (copy, regenerate,
    report, continue) count once, whichever source reported them.

    >>> compute_reward([{"kind": "thumbs", "value": 1, "ts": 1}, {"kind": "thumbs", "value": -1, "ts": 2}])
    -1.0
    """
    latest: dict[tuple[str, str], Mapping[str, Any]] = {}
    for row in feedback_rows:
        kind = row.get("kind")
        if not kind:
            raise ValidationError("feedback row without a kind", field="kind")
        source = row.get("source") or "user"
        key = (kind, "*" if kind in _ONCE else source)
        if kind in _LATEST_WINS:
            prev = latest.get(key)
            if prev is None or float(row.get("ts") or 0.0) >= float(prev.get("ts") or 0.0):
                latest[key] = row
        else:
            latest.setdefault(key, row)
    total = 0.0
    for (kind, _), row in latest.items():
        mult = weights.source_weights.get(row.get("source") or "user", 1.0)
        total += mult * _signal_value(kind, row.get("value"), weights)
    return float(total)


@dataclass(frozen=True, slots=True)
class RewardUpdate:
    """What :func:`update_rewards` did: ``updated`` interactions, and the next ``watermark``."""

    updated: int
    watermark: float | None


def _changed_interactions(db, since: float | None, chunk: int) -> tuple[list[str], float | None]:
    fb = schema.feedback
    stmt = sa.select(fb.c.interaction_id, sa.func.max(fb.c.ts).label("ts")).group_by(fb.c.interaction_id)
    if since is not None:
        stmt = stmt.where(fb.c.ts > since)
    ids: list[str] = []
    high = since
    for row in db.iter_rows(stmt, chunk):
        ids.append(row["interaction_id"])
        if high is None or row["ts"] > high:
            high = row["ts"]
    return ids, high


def update_rewards(db, since: float | None = None, *, weights: RewardWeights = DEFAULT_WEIGHTS,
                   chunk: int = 500) -> RewardUpdate:
    """Recompute ``interactions.reward`` for interactions with feedback newer than ``since``.

    Pass the returned ``watermark`` as ``since`` next time: only interactions with new
    feedback are read again (all their feedback, so the reward stays exact). The watermark
    is the newest feedback ``ts`` seen, so feedback written later with an older client
    timestamp is picked up only by a full run (``since=None``); run one now and then.

    >>> # first = update_rewards(db); later = update_rewards(db, since=first.watermark)
    """
    ids, watermark = _changed_interactions(db, since, chunk)
    fb, it = schema.feedback, schema.interactions
    updated = 0
    for start in range(0, len(ids), chunk):
        part = ids[start:start + chunk]
        rows = db.fetch_all(sa.select(fb.c.interaction_id, fb.c.kind, fb.c.value, fb.c.source, fb.c.ts)
                            .where(fb.c.interaction_id.in_(part)))
        grouped: dict[str, list[dict[str, Any]]] = {i: [] for i in part}
        for r in rows:
            grouped[r["interaction_id"]].append(r)
        params = [{"b_id": i, "b_reward": compute_reward(g, weights)} for i, g in grouped.items()]
        stmt = it.update().where(it.c.id == sa.bindparam("b_id")).values(reward=sa.bindparam("b_reward"))
        with db.begin() as conn:
            res = conn.execute(stmt, params)
            updated += max(res.rowcount or 0, 0) if db.is_sqlite else len(params)
    return RewardUpdate(updated=updated, watermark=watermark)


def reward_map(feedback_rows: Sequence[Mapping[str, Any]], weights: RewardWeights = DEFAULT_WEIGHTS) -> dict[str, float]:
    """Rewards of many interactions at once from their feedback rows (pure).

    >>> reward_map([{"interaction_id": "a", "kind": "copy"}, {"interaction_id": "b", "kind": "report"}])
    {'a': 2.0, 'b': -5.0}
    """
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for r in feedback_rows:
        grouped.setdefault(r["interaction_id"], []).append(r)
    return {k: compute_reward(v, weights) for k, v in grouped.items()}
