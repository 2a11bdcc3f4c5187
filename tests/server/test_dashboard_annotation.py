"""Annotation queues: filling the pairwise queue from two backends, recording choices and
ratings, and the DPO builder turning done pairs into training pairs."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tuneloop.datasets.generator import DataGeneratorConfig, TrainingDataGenerator
from tuneloop.errors import ConflictError, NotFoundError, ValidationError
from tuneloop.ids import new_id, now
from tuneloop.models.scripted import ScriptedBackend
from tuneloop.server.dashboard import annotation as an
from tuneloop.store import schema

PROMPTS = ["What is the capital of France?", "Name a prime number larger than ten.",
           "Which planet is known as the red planet?", "How many legs does a spider have?"]
SHORT = ScriptedBackend({}, default="", name="short")


def _short(messages):
    return "Short: " + messages[-1]["content"][:12]


def _long(messages):
    return "A longer and more careful answer to: " + messages[-1]["content"]


def _rows(db):
    return db.fetch_all(sa.select(schema.annotations).order_by(schema.annotations.c.created_at))


def test_queue_pairs_from_two_backends(db):
    calls = []
    result = an.queue_pairs(db, ScriptedBackend(_short), ScriptedBackend(_long), prompts=PROMPTS,
                            label_a="v1", label_b="v2", batch_size=3, seed=1,
                            progress=lambda done, total: calls.append((done, total)))
    assert result.queued == 4 and len(result.ids) == 4
    assert calls == [(3, 4), (4, 4)]
    rows = _rows(db)
    assert {r["kind"] for r in rows} == {"pairwise"} and {r["status"] for r in rows} == {"queued"}
    for r in rows:
        meta = r["meta"]
        # The side each answer landed on is recorded, and matches the answer's source.
        left_source = meta["a"]["source"]
        assert r["response_a"].startswith("Short" if left_source == "v1" else "A longer")
        assert meta["swapped"] == (left_source == "v2")
        assert r["prompt"] in PROMPTS
    assert len({r["meta"]["swapped"] for r in rows}) == 2  # positions are randomised (seed 1 gives both)


def test_queue_pairs_is_idempotent_and_skips_identical_and_empty(db):
    first = an.queue_pairs(db, ScriptedBackend(_short), ScriptedBackend(_long), prompts=PROMPTS[:2])
    again = an.queue_pairs(db, ScriptedBackend(_short), ScriptedBackend(_long), prompts=PROMPTS[:2])
    assert (first.queued, again.queued, again.skipped_existing) == (2, 0, 2)
    same = an.queue_pairs(db, ScriptedBackend(_short), ScriptedBackend(_short), prompts=PROMPTS[2:],
                          label_a="x", label_b="y")
    assert (same.queued, same.skipped_identical) == (0, 2)
    empty = an.queue_pairs(db, SHORT, ScriptedBackend(_long), prompts=PROMPTS[2:], label_a="e", label_b="f")
    assert (empty.queued, empty.skipped_empty) == (0, 2)
    twice = an.queue_pairs(db, ScriptedBackend(_short), ScriptedBackend(_long), prompts=[PROMPTS[3]] * 2,
                           label_a="p", label_b="q")
    assert (twice.queued, twice.skipped_existing) == (1, 1)
    assert len(_rows(db)) == 3


def _interaction(db, messages, response, **extra):
    iid = new_id()
    row = {"id": iid, "ts": now(), "query": messages[-1]["content"], "messages": messages, "response": response,
           "version_id": "v1", **extra}
    with db.begin() as conn:
        conn.execute(schema.interactions.insert(), row)
    return iid


def test_queue_pairs_from_interactions_with_the_logged_answer(db):
    single = _interaction(db, [{"role": "user", "content": "Capital of Peru?"}], "Lima.")
    multi = _interaction(db, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                              {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Capital of Chile?"}],
                         "Santiago.")
    seen = []

    def alt(messages):
        seen.append([m["role"] for m in messages])
        return "I think it is " + messages[-1]["content"]

    result = an.queue_pairs(db, None, ScriptedBackend(alt), interaction_ids=[single, multi], randomize=False,
                            label_a="logged", label_b="v2")
    assert result.queued == 2
    assert seen == [["user"], ["system", "user", "assistant", "user"]]  # the whole prompt went to the model
    rows = {r["interaction_id"]: r for r in _rows(db)}
    assert rows[single]["response_a"] == "Lima." and rows[single]["prompt"] == "Capital of Peru?"
    # A multi-turn prompt is left on the interaction (the DPO builder reads its messages).
    assert rows[multi]["prompt"] is None and rows[multi]["response_a"] == "Santiago."
    item = an.get_pair(db, rows[multi]["id"])
    assert [m["role"] for m in item.conversation] == ["system", "user", "assistant", "user"]


def test_queue_pairs_validates_its_input(db):
    b = ScriptedBackend(_long)
    with pytest.raises(ValidationError, match="either prompts or interaction_ids"):
        an.queue_pairs(db, b, b)
    with pytest.raises(ValidationError, match="list of texts"):
        an.queue_pairs(db, b, b, prompts="one string")
    with pytest.raises(ValidationError, match="needs interaction_ids"):
        an.queue_pairs(db, None, b, prompts=["q"])
    with pytest.raises(NotFoundError, match="not found"):
        an.queue_pairs(db, None, b, interaction_ids=["nope"])


def test_record_choice_statuses_conflicts_and_progress(db):
    an.queue_pairs(db, ScriptedBackend(_short), ScriptedBackend(_long), prompts=PROMPTS)
    first = an.next_pair(db)
    done = an.record_choice(db, first.id, "b", annotator="ann1")
    assert (done.status, done.choice, done.annotator) == ("done", "b", "ann1")
    with pytest.raises(ConflictError, match="already done"):
        an.record_choice(db, first.id, "a", annotator="ann2")
    second = an.next_pair(db)
    assert second.id != first.id
    assert an.record_choice(db, second.id, "skip", annotator="ann2").status == "skipped"
    with pytest.raises(ValidationError, match="choice must be one of"):
        an.record_choice(db, an.next_pair(db).id, "c", annotator="ann1")
    with pytest.raises(NotFoundError):
        an.record_choice(db, "missing", "a", annotator="ann1")
    progress = an.pair_progress(db, "ann1")
    assert (progress.queued, progress.done, progress.skipped, progress.by_annotator, progress.total) == (2, 1, 1, 1, 4)


def test_record_rating_writes_feedback_and_closes_the_queued_item(db):
    iid = _interaction(db, [{"role": "user", "content": "Capital of Peru?"}], "Lima.")
    with db.begin() as conn:
        conn.execute(schema.annotations.insert(), {"id": "r1", "interaction_id": iid, "kind": "rating",
                                                   "prompt": "Capital of Peru?", "response_a": "Lima.",
                                                   "status": "queued", "created_at": now()})
    assert an.next_rating(db).id == "r1"
    ids = an.record_rating(db, iid, 4, annotator="ann", comment=" concise ")
    fb = db.fetch_all(sa.select(schema.feedback).order_by(schema.feedback.c.kind))
    assert len(ids) == 2 and [(f["kind"], f["value"], f["text"], f["source"]) for f in fb] == [
        ("comment", None, "concise", "annotator"), ("rating", 4.0, None, "annotator")]
    row = db.fetch_one(sa.select(schema.annotations).where(schema.annotations.c.id == "r1"))
    assert (row["status"], row["value"], row["text"], row["annotator"]) == ("done", 4.0, "concise", "ann")
    assert an.next_rating(db) is None
    for bad in (0, 6, 3.5, True):
        with pytest.raises(ValidationError, match="1 to 5"):
            an.record_rating(db, iid, bad, annotator="ann")
    with pytest.raises(NotFoundError):
        an.record_rating(db, "missing", 3, annotator="ann")


def test_done_pairs_become_dpo_pairs(db, tmp_path):
    """a/b choices become chosen/rejected pairs; equal, both bad and skip carry no preference."""
    an.queue_pairs(db, ScriptedBackend(_short), ScriptedBackend(_long), prompts=PROMPTS, label_a="v1",
                   label_b="v2", seed=3)
    choices = {}
    for choice in ("a", "b", "equal", "both_bad"):
        item = an.next_pair(db)
        an.record_choice(db, item.id, choice, annotator="ann")
        choices[item.conversation[-1]["content"]] = (choice, item.response_a, item.response_b)
    cfg = DataGeneratorConfig(kind="dpo", format_type="standard", dpo_sources=("annotations",),
                              min_quality_score=None, leak_guard=False, llamafactory_info=False)
    result = TrainingDataGenerator(db, cfg).generate(tmp_path / "dpo.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "dpo.jsonl").read_text().splitlines()]
    assert result.final_count == len(rows) == 2
    for row in rows:
        choice, a, b = choices[row["prompt"]]
        assert (row["chosen"], row["rejected"]) == ((a, b) if choice == "a" else (b, a))
