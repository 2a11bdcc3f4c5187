"""Rewards: seed 003's weights, explicit feedback, and incremental recomputation."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from tuneloop.errors import ValidationError
from tuneloop.signals.rewards import RewardWeights, compute_reward, reward_map, update_rewards
from tuneloop.store import schema


@pytest.mark.parametrize("rows, expected", [
    ([{"kind": "continue"}], 2.0),
    ([{"kind": "session", "value": 301}], 1.0),
    ([{"kind": "session", "value": 120}], 0.0),
    ([{"kind": "session", "value": 29}], -1.0),
    ([{"kind": "copy"}], 2.0),
    ([{"kind": "regenerate"}], -2.0),
    ([{"kind": "report"}], -5.0),
    ([{"kind": "thumbs", "value": 1}], 1.0),
    ([{"kind": "thumbs", "value": -1}], -1.0),
    ([{"kind": "rating", "value": 5}], 1.0),
    ([{"kind": "rating", "value": 3}], 0.0),
    ([{"kind": "rating", "value": 1}], -1.0),
    ([{"kind": "comment", "text": "meh"}], 0.0),
    ([], 0.0),
])
def test_seed_003_defaults(rows, expected):
    assert compute_reward(rows) == pytest.approx(expected)


def test_signals_add_up_like_the_seed():
    # continued +2, long session +1, copied +2, thumbs up +1
    rows = [{"kind": "continue"}, {"kind": "session", "value": 600}, {"kind": "copy"}, {"kind": "thumbs", "value": 1}]
    assert compute_reward(rows) == 6.0


def test_latest_thumb_wins_and_events_count_once_across_sources():
    rows = [{"kind": "thumbs", "value": 1, "ts": 1.0}, {"kind": "thumbs", "value": -1, "ts": 2.0},
            {"kind": "regenerate", "source": "user", "ts": 3.0}, {"kind": "regenerate", "source": "implicit", "ts": 4.0},
            {"kind": "copy"}, {"kind": "copy"}]
    assert compute_reward(rows) == -1.0 - 2.0 + 2.0


def test_judge_rating_counts_at_half_weight():
    assert compute_reward([{"kind": "rating", "value": 5, "source": "judge"}]) == 0.5
    both = [{"kind": "rating", "value": 5, "source": "judge"}, {"kind": "rating", "value": 1, "source": "user"}]
    assert compute_reward(both) == -0.5


def test_weights_are_configurable_and_validated():
    w = RewardWeights(copied=5.0, long_session_s=60.0)
    assert compute_reward([{"kind": "copy"}, {"kind": "session", "value": 90}], w) == 6.0
    with pytest.raises(ValidationError):
        RewardWeights(short_session_s=400.0)
    with pytest.raises(ValidationError):
        compute_reward([{"value": 1}])


def test_reward_map_groups_by_interaction():
    assert reward_map([{"interaction_id": "a", "kind": "copy"}, {"interaction_id": "a", "kind": "report"},
                       {"interaction_id": "b", "kind": "continue"}]) == {"a": -3.0, "b": 2.0}


def _interaction(i: str, ts: float) -> dict:
    return {"id": i, "ts": ts, "query": "q", "response": "r"}


def _fb(fid: str, iid: str, kind: str, ts: float, value=None, source="user") -> dict:
    return {"id": fid, "interaction_id": iid, "kind": kind, "value": value, "source": source, "ts": ts}


def _rewards(db) -> dict:
    it = schema.interactions
    return {r["id"]: r["reward"] for r in db.fetch_all(sa.select(it.c.id, it.c.reward))}


def test_update_rewards_is_incremental(db):
    with db.begin() as conn:
        db.insert_ignore(conn, schema.interactions, [_interaction("a", 1.0), _interaction("b", 2.0),
                                                     _interaction("c", 3.0)])
        db.insert_ignore(conn, schema.feedback, [_fb("f1", "a", "copy", 10.0), _fb("f2", "b", "thumbs", 11.0, -1.0),
                                                 _fb("f3", "b", "regenerate", 12.0)])
    first = update_rewards(db)
    assert first.updated == 2 and first.watermark == 12.0
    assert _rewards(db) == {"a": 2.0, "b": -3.0, "c": None}

    # Tamper with a's reward: an incremental run must not touch it (it has no new feedback).
    it = schema.interactions
    with db.begin() as conn:
        conn.execute(it.update().where(it.c.id == "a").values(reward=99.0))
        db.insert_ignore(conn, schema.feedback, [_fb("f4", "b", "thumbs", 20.0, 1.0)])
    second = update_rewards(db, since=first.watermark)
    assert second.updated == 1 and second.watermark == 20.0
    assert _rewards(db) == {"a": 99.0, "b": -1.0, "c": None}   # b: latest thumb up (+1) and regenerate (-2)

    none = update_rewards(db, since=second.watermark)
    assert none.updated == 0 and none.watermark == 20.0
