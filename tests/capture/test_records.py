"""Interaction and feedback rows: normalization, validation, idempotent batched writes."""
from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa

from tuneloop.capture.records import (
    INTERACTION_COLUMNS,
    dedupe_hash,
    feedback_row,
    interaction_row,
    normalize_feedback,
    normalize_interaction,
    write_feedback,
    write_interactions,
)
from tuneloop.errors import ValidationError
from tuneloop.store import schema


def test_messages_give_the_query_and_every_column_is_present():
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "image_url"}]}]
    row = interaction_row(messages=msgs, response="answer", model="m", metadata={"app": "x"}, tenant="t1")
    assert set(row) == set(INTERACTION_COLUMNS)
    assert row["query"] == "second"
    assert row["messages"] == msgs
    assert row["meta"] == {"app": "x", "tenant": "t1"}  # unknown keywords join the metadata
    assert row["kind"] == "chat" and row["status"] == "ok" and row["consent"] is True
    assert len(row["id"]) == 36 and row["ts"] > 0


def test_explicit_query_wins_over_messages():
    row = interaction_row(query="explicit", messages=[{"role": "user", "content": "hi"}])
    assert row["query"] == "explicit"


def test_token_count_given_summed_or_estimated():
    assert interaction_row(query="q", token_count=7)["token_count"] == 7
    assert interaction_row(query="q", prompt_tokens=3, completion_tokens=4)["token_count"] == 7
    assert interaction_row(query="a" * 40, response="b" * 40)["token_count"] == 20


def test_dedupe_hash_is_sha256_of_normalized_query_and_response():
    row = interaction_row(query="  Hello   World ", response="OK")
    expected = hashlib.sha256("hello world\x1fok".encode()).hexdigest()
    assert row["dedupe_hash"] == expected == dedupe_hash("hello world", "ok")
    assert dedupe_hash("a", "bc") != dedupe_hash("ab", "c")


@pytest.mark.parametrize("kwargs, field", [
    ({"query": 3}, "query"),
    ({}, "query"),
    ({"query": "q", "response": b"x"}, "response"),
    ({"query": "q", "latency_ms": -1}, "latency_ms"),
    ({"query": "q", "latency_ms": "fast"}, "latency_ms"),
    ({"query": "q", "quality_score": float("nan")}, "quality_score"),
    ({"query": "q", "token_count": 1.5}, "token_count"),
    ({"query": "q", "token_count": -2}, "token_count"),
    ({"query": "q", "metadata": [1]}, "metadata"),
    ({"query": "q", "id": ""}, "id"),
    ({"query": "q", "id": "x" * 65}, "id"),
    ({"query": "q", "model": 5}, "model"),
    ({"query": "q", "consent": "yes"}, "consent"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"content": "no role"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
])
def test_bad_interactions_name_the_field(kwargs, field):
    with pytest.raises(ValidationError) as err:
        interaction_row(**kwargs)
    assert err.value.details["field"] == field
    assert str(err.value).startswith(field)


@pytest.mark.parametrize("kind, value, text", [
    ("thumbs", 1, None), ("thumbs", -1, None), ("thumbs", 0, None), ("rating", 1, None),
    ("rating", 4.5, None), ("comment", None, "too long"), ("report", None, None),
    ("regenerate", None, None), ("copy", None, None), ("dwell", 12.5, None), ("continue", None, None),
    ("session", 300, None),
])
def test_every_feedback_kind(kind, value, text):
    row = feedback_row("i1", kind=kind, value=value, text=text)
    assert row["kind"] == kind and row["interaction_id"] == "i1"
    assert row["value"] == (None if value is None else float(value))


@pytest.mark.parametrize("kwargs, field", [
    ({"kind": "thumbs", "value": 2}, "value"),
    ({"kind": "thumbs", "value": 0.5}, "value"),
    ({"kind": "thumbs", "value": True}, "value"),
    ({"kind": "rating", "value": 0}, "value"),
    ({"kind": "rating", "value": 6}, "value"),
    ({"kind": "rating", "value": None}, "value"),
    ({"kind": "dwell", "value": -3}, "value"),
    ({"kind": "dwell"}, "value"),
    ({"kind": "comment", "text": "  "}, "text"),
    ({"kind": "smile", "value": 1}, "kind"),
    ({"kind": "thumbs", "value": 1, "source": "robot"}, "source"),
])
def test_bad_feedback_names_the_field(kwargs, field):
    with pytest.raises(ValidationError) as err:
        feedback_row("i1", **kwargs)
    assert err.value.details["field"] == field


def test_normalize_feedback_shapes():
    a = normalize_feedback({"interaction_id": "i1", "kind": "thumbs", "value": -1, "id": "f1"})
    assert (a["interaction_id"], a["id"], a["value"]) == ("i1", "f1", -1.0)
    b = normalize_feedback({"id": "i2", "rating": 5})  # seed 000
    assert (b["interaction_id"], b["kind"], b["value"]) == ("i2", "rating", 5.0)
    c = normalize_feedback({"id": "i3", "feedback": 1, "feedback_id": "f3"})  # seed 002
    assert (c["interaction_id"], c["kind"], c["id"]) == ("i3", "thumbs", "f3")
    d = normalize_feedback({"interaction_id": "i4", "kind": "comment", "text": "nice", "metadata": {"a": 1}})
    assert d["meta"] == {"a": 1} and d["value"] is None
    with pytest.raises(ValidationError, match="interaction_id"):
        normalize_feedback({"kind": "thumbs", "value": 1})
    with pytest.raises(ValidationError, match="colour"):
        normalize_feedback({"id": "i5", "rating": 3, "colour": "red"})
    with pytest.raises(ValidationError, match="rating"):
        normalize_feedback({"id": "i5", "rating": 3, "value": 3})


def test_normalize_interaction_accepts_meta_or_metadata_and_recomputes_hash():
    row = normalize_interaction({"query": "q", "response": "r", "meta": {"a": 1}, "dedupe_hash": "forged"})
    assert row["meta"] == {"a": 1} and row["dedupe_hash"] == dedupe_hash("q", "r")
    with pytest.raises(ValidationError, match="metadata"):
        normalize_interaction({"query": "q", "meta": {}, "metadata": {}})
    with pytest.raises(ValidationError, match="interaction"):
        normalize_interaction(["not", "an", "object"])


def test_writes_are_idempotent_and_round_trip(db):
    msgs = [{"role": "user", "content": "héllo ✓"}]
    rows = [interaction_row(messages=msgs, response=f"r{i}", model="m", metadata={"i": i, "nested": [1, {"x": None}]},
                            latency_ms=1.5 * i, consent=i % 2 == 0) for i in range(250)]
    rows.append(dict(rows[0]))  # a duplicate inside the batch
    assert write_interactions(db, rows) == 250
    assert write_interactions(db, rows[:10]) == 0
    stored = db.fetch_all(sa.select(schema.interactions).order_by(schema.interactions.c.ts))
    assert len(stored) == 250
    first = next(r for r in stored if r["id"] == rows[3]["id"])
    assert first["messages"] == msgs and first["meta"] == {"i": 3, "nested": [1, {"x": None}]}
    assert first["latency_ms"] == 4.5 and first["consent"] is False and first["query"] == "héllo ✓"
    empty = interaction_row(query="q")
    write_interactions(db, [empty])
    got = db.fetch_one(sa.select(schema.interactions).where(schema.interactions.c.id == empty["id"]))
    assert got["meta"] is None and got["messages"] is None  # SQL NULL, not JSON null text
    assert db.scalar(sa.select(sa.func.count()).where(schema.interactions.c.meta.is_(None))) == 1

    fb = [feedback_row(rows[0]["id"], value=1), feedback_row(rows[1]["id"], kind="rating", value=2, text="meh")]
    assert write_feedback(db, fb) == 2
    assert write_feedback(db, fb) == 0
    assert db.scalar(sa.select(sa.func.count()).select_from(schema.feedback)) == 2


def test_write_in_a_callers_transaction(db):
    rows = [interaction_row(query=f"q{i}") for i in range(3)]
    with db.begin() as conn:
        assert write_interactions(db, rows, conn=conn) == 3
        assert write_feedback(db, [feedback_row(rows[0]["id"], value=1)], conn=conn) == 1
        assert write_interactions(db, rows, conn=conn) == 0  # same transaction, same batch again
    assert db.scalar(sa.select(sa.func.count()).select_from(schema.interactions)) == 3


def test_a_failed_transaction_writes_nothing(db):
    rows = [interaction_row(query=f"q{i}") for i in range(3)]
    with pytest.raises(RuntimeError), db.begin() as conn:
        write_interactions(db, rows, conn=conn)
        raise RuntimeError("abort")
    assert db.scalar(sa.select(sa.func.count()).select_from(schema.interactions)) == 0
