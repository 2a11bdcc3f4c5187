"""LLM-as-judge through the scripted backend: parsing, position swap, ensemble, storage."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from tuneloop.errors import ValidationError
from tuneloop.models.scripted import ScriptedBackend
from tuneloop.signals.judge import (Judge, combine_orders, ensemble_quality, parse_category, parse_preference,
                                    parse_rating, record_preferences, score_interactions)
from tuneloop.store import schema


@pytest.mark.parametrize("reply, score", [
    ("Score: 4", 4), ("score=2\nCategory: refusal", 2), ("**Rating**: 5 out of 5", 5), ("3/5", 3),
    ('{"score": 1, "why": "wrong"}', 1), ("  4 ", 4), ("I would grade this a 2 / 5.", 2),
    ("Score: 7", None), ("10/10", None), ("no idea", None), ("Score: 4.5", None),
])
def test_parse_rating(reply, score):
    assert parse_rating(reply) == score


def test_parse_category_and_preference():
    assert parse_category("Score: 2\nCategory: hallucination") == "hallucination"
    assert parse_category("Category: out of scope") == "out_of_scope"
    assert parse_category("Category: none") is None
    assert [parse_preference(t) for t in ["[[A]]", "[[tie]]", "The better answer is B.", "B", "a lot of text"]] == \
        ["A", "tie", "B", "B", None]


def _answer_judge(good: str):
    """A judge that prefers whichever answer contains ``good``, wherever it is placed."""
    def script(messages):
        text = messages[-1]["content"]
        a = text.split("ANSWER A:\n", 1)[1].split("\n\nANSWER B:", 1)[0]
        return "[[A]]" if good in a else "[[B]]"
    return ScriptedBackend(script)


def test_pairwise_asks_both_orders_and_finds_the_better_answer():
    seen = []
    backend = _answer_judge("Paris")
    original = backend._answer
    backend._answer = lambda msgs: (seen.append(msgs[-1]["content"]), original(msgs))[1]
    judge = Judge(backend)
    out = judge.pairwise([("Capital of France?", "Paris", "Lyon"), ("Capital of France?", "Lyon", "Paris")])
    assert [o.winner for o in out] == ["a", "b"]
    assert all(o.consistent for o in out) and out[0].p_a == 1.0 and out[1].p_a == 0.0
    assert len(seen) == 4   # each pair judged twice, positions swapped
    assert seen[0].index("Paris") < seen[0].index("Lyon") and seen[1].index("Lyon") < seen[1].index("Paris")


def test_position_bias_cancels_to_a_tie():
    always_first = Judge(ScriptedBackend(lambda m: "[[A]]"))
    v = always_first.pairwise([("q", "x", "y")])[0]
    assert (v.winner, v.p_a, v.consistent) == ("tie", 0.5, False)
    assert combine_orders("A", None).p_a == 0.75 and not combine_orders("A", None).consistent


def test_pointwise_and_bad_backend():
    judge = Judge(ScriptedBackend(lambda m: "Score: 2\nCategory: hallucination"))
    v = judge.pointwise([("q", "a")])[0]
    assert (v.score, v.category, v.normalized) == (2, "hallucination", 0.25)
    with pytest.raises(ValidationError):
        Judge(object())


def test_ensemble():
    assert ensemble_quality(heuristic=1.0, judge=1.0, reward=10.0) == pytest.approx(1.0, abs=0.01)
    assert ensemble_quality(heuristic=0.0, judge=1.0) == 0.0
    assert ensemble_quality(judge=0.5) == 0.5
    assert ensemble_quality(reward=0.0) == 0.5
    assert ensemble_quality(heuristic=1.0, judge=0.0) == pytest.approx(0.375)


def test_score_interactions_writes_quality_category_and_judge_feedback(db):
    rows = [{"id": "a", "ts": 1.0, "query": "Capital of France?", "response": "Paris.", "quality_score": None},
            {"id": "b", "ts": 2.0, "query": "Capital of Spain?", "response": "I'm sorry, but I can't help with that.",
             "quality_score": None},
            {"id": "c", "ts": 3.0, "query": "Capital of Italy?", "response": "Rome.", "quality_score": 0.99}]
    with db.begin() as conn:
        db.insert_ignore(conn, schema.interactions, rows)
    judge = Judge(ScriptedBackend(lambda m: "Score: 5" if "Paris" in m[-1]["content"] else "Score: 1\nCategory: refusal"),
                  name="tiny-judge")
    res = score_interactions(db, judge)
    assert (res.scored, res.judged, res.watermark) == (2, 2, 2.0)   # c keeps its client score
    it = schema.interactions
    got = {r["id"]: r for r in db.fetch_all(sa.select(it.c.id, it.c.quality_score, it.c.failure_category))}
    assert got["a"]["quality_score"] == pytest.approx(1.0) and got["a"]["failure_category"] is None
    assert got["b"]["quality_score"] < 0.2 and got["b"]["failure_category"] == "refusal"
    assert got["c"]["quality_score"] == 0.99
    fb = db.fetch_all(sa.select(schema.feedback).order_by(schema.feedback.c.interaction_id))
    assert [(f["interaction_id"], f["kind"], f["value"], f["source"]) for f in fb] == \
        [("a", "rating", 5.0, "judge"), ("b", "rating", 1.0, "judge")]
    assert score_interactions(db, judge, since=res.watermark).scored == 0


def test_record_preferences_stores_done_pairwise_annotations(db):
    judge = Judge(_answer_judge("Paris"), name="j")
    out = record_preferences(db, judge, [(None, "Capital of France?", "Lyon", "Paris"), (None, "q", "x", "y")])
    assert [o.winner for o in out] == ["b", "tie"]
    rows = db.fetch_all(sa.select(schema.annotations).order_by(schema.annotations.c.prompt))
    assert [(r["choice"], r["annotator"], r["status"]) for r in rows] == [("b", "judge:j", "done"), ("equal", "judge:j", "done")]
