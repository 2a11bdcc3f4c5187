"""Annotation sampling: priorities, 70/30 top/random split, the queue in the store."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from tuneloop.errors import ValidationError
from tuneloop.models.embed import HashingEmbedder
from tuneloop.signals.sampling import Candidate, choose, priority, sample_for_annotation
from tuneloop.store import schema


def test_priority_points_and_reason():
    assert priority({"reward": 2.0}) == (2.0, "engagement")
    assert priority({"reward": -1.0}) == (2.0, "negative_feedback")
    assert priority({"query": "x"}, novelty=0.9) == (3.0, "new_topic")
    assert priority({"query": "x" * 500}, length_bounds=(1, 100)) == (3.0, "edge_case")
    assert priority({"meta": {"uncertainty": 0.8}}) == (2.0, "uncertainty")
    assert priority({"reward": -2.0}, judge_rating=5) == (4.0, "uncertainty")   # judge and user disagree
    assert priority({"query": "plain"}) == (0.0, "random")


def test_choose_takes_the_top_share_then_random():
    cands = [Candidate(f"c{i:02d}", float(i), "r") for i in range(50)]
    picked = choose(cands, 10, top_fraction=0.7, seed=1)
    ids = [c.interaction_id for c in picked]
    assert ids[:7] == [f"c{i:02d}" for i in range(49, 42, -1)]
    assert len(set(ids)) == 10 and all(int(i[1:]) < 43 for i in ids[7:])
    assert choose(cands, 10, seed=1) == choose(cands, 10, seed=1)
    with pytest.raises(ValidationError):
        choose(cands, 5, top_fraction=2)


def test_sample_for_annotation_fills_the_queue(db):
    rows = []
    for i in range(40):
        rows.append({"id": f"i{i:02d}", "ts": 100.0 + i, "query": f"how do I bake bread number {i}", "response": "knead",
                     "reward": None, "failure_category": None, "consent": True})
    rows[5].update(reward=-5.0)
    rows[6].update(failure_category="refusal", reward=-1.0)
    rows[7].update(query="quantum chromodynamics lattice gauge theory", reward=None)
    rows[8].update(consent=False, reward=-5.0)        # never shown to annotators
    with db.begin() as conn:
        conn.execute(schema.interactions.insert(), rows)
        conn.execute(schema.interactions.insert(), [{"id": "old", "ts": 1.0, "query": "how do I bake bread",
                                                     "response": "knead", "reward": None, "failure_category": None,
                                                     "consent": True}])
    res = sample_for_annotation(db, 5, since=50.0, embedder=HashingEmbedder(128), novelty_threshold=0.5, seed=0)
    assert res.queued == 5 and res.considered == 39
    queue = db.fetch_all(sa.select(schema.annotations).order_by(schema.annotations.c.priority.desc()))
    ids = [q["interaction_id"] for q in queue]
    assert set(ids[:3]) == {"i05", "i06", "i07"}
    assert "i08" not in ids and all(q["status"] == "queued" and q["kind"] == "rating" for q in queue)
    assert {q["reason"] for q in queue[:3]} <= {"edge_case", "new_topic", "negative_feedback"}
    again = sample_for_annotation(db, 5, since=50.0, seed=0)   # queued ones are not picked twice
    assert again.considered == 34
