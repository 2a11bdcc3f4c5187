"""Implicit signals inferred from the log: regenerate / re-query and continuation."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from tuneloop.errors import ValidationError
from tuneloop.signals.implicit import ImplicitConfig, infer_implicit_feedback, infer_signals, similarity
from tuneloop.signals.rewards import update_rewards
from tuneloop.store import schema


def _row(i, ts, query, user="u", session="s"):
    return {"id": i, "ts": ts, "query": query, "user_id": user, "session_id": session, "response": "r"}


def test_similarity_catches_rephrasings_not_new_topics():
    assert similarity("capital of france?", "Capital of France") == 1.0
    assert similarity("what is the capital of france", "what's the capital of france?") > 0.6
    assert similarity("what is the capital of france", "how do I bake bread") < 0.3


def test_infer_signals_regenerate_then_continue():
    rows = [_row("a", 0, "capital of France?"), _row("b", 10, "capital of France?"),
            _row("c", 70, "and what about Spain"), _row("d", 5000, "unrelated later question")]
    sigs = [(s.interaction_id, s.kind, s.next_id) for s in infer_signals(rows)]
    assert sigs == [("a", "regenerate", "b"), ("b", "continue", "c")]   # d: too late to be a continuation


def test_similar_query_after_the_window_is_a_continuation_and_sessions_do_not_mix():
    cfg = ImplicitConfig(regenerate_window_s=30)
    rows = [_row("a", 0, "capital of France?"), _row("b", 60, "capital of France?"),
            _row("c", 61, "capital of France?", session="other")]
    sigs = [(s.interaction_id, s.kind) for s in infer_signals(rows, cfg)]
    assert sigs == [("a", "continue")]


def test_config_validation():
    with pytest.raises(ValidationError):
        ImplicitConfig(similarity_threshold=0)
    with pytest.raises(ValidationError):
        ImplicitConfig(regenerate_window_s=-1)


def test_written_as_implicit_feedback_idempotently_and_rewarded(db):
    rows = [_row("a", 100, "capital of France?"), _row("b", 105, "capital of France please"),
            _row("c", 130, "thanks, now Spain?"), _row("x", 100, "other user", user="v", session="s2")]
    with db.begin() as conn:
        db.insert_ignore(conn, schema.interactions, rows)
    res = infer_implicit_feedback(db)
    assert (res.regenerate, res.continued, res.watermark) == (1, 1, 130)
    again = infer_implicit_feedback(db)
    assert again.regenerate == 1
    fb = db.fetch_all(sa.select(schema.feedback).order_by(schema.feedback.c.ts))
    assert [(f["interaction_id"], f["kind"], f["source"]) for f in fb] == [("a", "regenerate", "implicit"),
                                                                        ("b", "continue", "implicit")]
    assert fb[0]["meta"]["next_id"] == "b"
    update_rewards(db)
    rewards = {r["id"]: r["reward"] for r in db.fetch_all(sa.select(schema.interactions.c.id,
                                                                   schema.interactions.c.reward))}
    assert rewards["a"] == -2.0 and rewards["b"] == 2.0 and rewards["c"] is None


def test_incremental_run_sees_pairs_straddling_the_watermark(db):
    with db.begin() as conn:
        db.insert_ignore(conn, schema.interactions, [_row("a", 100, "first question here")])
    res = infer_implicit_feedback(db)
    assert res.continued == 0 and res.watermark == 100
    with db.begin() as conn:
        db.insert_ignore(conn, schema.interactions, [_row("b", 200, "a different follow up")])
    res2 = infer_implicit_feedback(db, since=res.watermark)
    assert res2.continued == 1 and res2.watermark == 200
