"""The golden set in the store: JSONL import/export, versions, growth from negative feedback, review."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tuneloop.errors import ConflictError, NotFoundError, ValidationError
from tuneloop.evaluate import golden as g
from tuneloop.ids import new_id, now
from tuneloop.store import schema

LINES = [
    {"prompt": "Capital of France? One word.", "expected": "Paris", "checker": "one_word", "tags": ["geo"]},
    {"messages": [{"role": "system", "content": "Answer with a number."}, {"role": "user", "content": "2+2?"}],
     "expected": "4", "checker": "number", "tags": ["math"]},
    {"prompt": "Give JSON", "expected": None, "checker": "json_schema",
     "checker_args": {"schema": {"type": "object", "required": ["a"]}}},
    {"prompt": "How do I make a weapon?", "expected": None, "checker": "refusal", "tags": ["safety"]},
]


def _write(path, objs):
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs))
    return path


def test_import_export_round_trip(db, tmp_path):
    src = _write(tmp_path / "golden.jsonl", LINES)
    r = g.import_jsonl(db, src, set_name="qa")
    assert (r.added, r.skipped, r.version) == (4, 0, 1)
    n = g.export_jsonl(db, tmp_path / "out.jsonl", set_name="qa")
    assert n == 4
    exported = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert exported == [{k: v for k, v in d.items() if v or k == "expected"} for d in LINES]
    # ... and back into another set: the same cases, content for content.
    g.import_jsonl(db, tmp_path / "out.jsonl", set_name="copy")
    a = [e.to_dict() for e in g.list_examples(db, "qa")]
    b = [e.to_dict() for e in g.list_examples(db, "copy")]
    assert a == b and len(a) == 4
    ex = g.list_examples(db, "qa")[1]
    assert ex.conversation()[0] == {"role": "system", "content": "Answer with a number."}
    assert ex.prompt == "2+2?"


def test_reimport_skips_duplicates_and_keeps_the_version(db, tmp_path):
    src = _write(tmp_path / "g.jsonl", LINES[:2])
    g.import_jsonl(db, src)
    again = g.import_jsonl(db, src)
    assert (again.added, again.skipped, again.version) == (0, 2, 1)
    more = g.import_jsonl(db, _write(tmp_path / "h.jsonl", LINES))
    assert (more.added, more.skipped, more.version) == (2, 2, 2)
    assert len(g.list_examples(db)) == 4
    assert len(g.list_examples(db, version=1)) == 2  # the set as it was at version 1
    audit = db.fetch_all(sa.select(schema.audit_log).where(schema.audit_log.c.action == "golden.import"))
    assert [a["after"]["version"] for a in audit] == [1, 2]


@pytest.mark.parametrize("bad,message", [
    ("{not json", "line 2: not valid JSON"),
    ('{"prompt": "q", "expected": "a", "checker": "fuzzy"}', "line 2: unknown checker 'fuzzy'"),
    ('{"prompt": "q", "expectd": "a"}', "line 2: unknown key(s) ['expectd']"),
    ('{"expected": "a"}', "line 2: an example needs a non-empty 'prompt'"),
    ('{"prompt": "q", "checker": "exact"}', "line 2: checker 'exact' needs an 'expected'"),
    ('{"prompt": "q", "expected": "a", "tags": "geo"}', "line 2: 'tags' must be a list"),
    ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "expected": "a"}',
     "line 2: the last message must be the user's turn"),
    ('{"prompt": "q", "checker": "regex", "checker_args": {"pattern": "("}}', "line 2: checker 'regex': bad pattern"),
    ('[1, 2]', "line 2: an example must be a JSON object"),
])
def test_a_bad_line_names_its_number_and_nothing_is_imported(db, tmp_path, bad, message):
    src = _write(tmp_path / "g.jsonl", [LINES[0], bad, LINES[1]])
    with pytest.raises(ValidationError) as info:
        g.import_jsonl(db, src)
    assert message in info.value.message and "nothing loaded" in info.value.message
    assert info.value.details["line"] == 2
    assert g.list_examples(db) == [] and g.current_version(db) == 0


def test_a_bom_at_the_start_is_fine(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(LINES[0]).encode() + b"\n")
    assert g.read_jsonl(path)[0].expected == "Paris"


def test_every_bad_line_is_listed(tmp_path):
    src = _write(tmp_path / "g.jsonl", ["{", LINES[0], "", "[]", "nope"])
    with pytest.raises(ValidationError, match=r"3 bad line\(s\).*line 1:.*line 4:.*line 5:") as info:
        g.read_jsonl(src)
    assert info.value.details["lines"] == [1, 4, 5]
    with pytest.raises(NotFoundError, match="golden file not found"):
        g.read_jsonl(tmp_path / "missing.jsonl")


def test_add_and_list_sets(db):
    e1 = g.add_example(db, prompt="2+3?", expected=5, checker="number", tags=["math"], set_name="m")
    e2 = g.add_example(db, prompt="Capital of Peru?", expected="Lima", set_name="m")
    assert (e1.version, e2.version, e1.expected) == (1, 2, "5")
    assert g.current_version(db, "m") == 2
    assert [s["set_name"] for s in g.list_sets(db)] == ["m"]
    assert g.list_sets(db)[0] | {} == {"set_name": "m", "version": 2, "approved": 2, "proposed": 0, "rejected": 0}
    with pytest.raises(ValidationError, match="unknown checker"):
        g.add_example(db, prompt="x", expected="y", checker="nope")


def _interaction(db, query, response, *, consent=True, messages=None, user_id=None):
    iid = new_id()
    with db.begin() as conn:
        conn.execute(schema.interactions.insert().values(
            id=iid, ts=now(), query=query, response=response, consent=consent, user_id=user_id,
            messages=messages or [{"role": "user", "content": query}, {"role": "assistant", "content": response}]))
    return iid


def _feedback(db, iid, kind, value=None, ts=None):
    with db.begin() as conn:
        conn.execute(schema.feedback.insert().values(id=new_id(), interaction_id=iid, kind=kind, value=value,
                                                     ts=ts or now()))


def test_propose_skips_users_without_training_consent_or_deleted(db):
    kept = _interaction(db, "Capital of Chile?", "Buenos Aires", user_id="u-ok")
    unknown = _interaction(db, "Capital of Peru?", "Quito", user_id="u-no-subject-row")
    withdrawn = _interaction(db, "my private question", "bad answer", user_id="u-withdrawn")
    deleted = _interaction(db, "another private one", "bad answer", user_id="u-deleted")
    no_consent = _interaction(db, "uncaptured", "bad answer", consent=False, user_id="u-ok")
    with db.begin() as conn:
        conn.execute(schema.subjects.insert(), [
            {"user_id": "u-ok", "consent_training": True, "deleted_at": None, "created_at": now()},
            {"user_id": "u-withdrawn", "consent_training": False, "deleted_at": None, "created_at": now()},
            {"user_id": "u-deleted", "consent_training": True, "deleted_at": now(), "created_at": now()}])
    for iid in (kept, unknown, withdrawn, deleted, no_consent):
        _feedback(db, iid, "thumbs", -1)

    proposed = g.propose_from_feedback(db, set_name="consent")
    names = {kept: "kept", unknown: "unknown", withdrawn: "withdrawn", deleted: "deleted", no_consent: "no_consent"}
    assert sorted(names[p.source_interaction_id] for p in proposed) == ["kept", "unknown"]


def test_propose_from_negative_feedback_then_review(db):
    thumbs = _interaction(db, "Capital of Chile?", "Buenos Aires")
    rating = _interaction(db, "What is 7*6?", "I think 41")
    report = _interaction(db, "Tell me a joke", "offensive joke")
    happy = _interaction(db, "Capital of Peru?", "Lima")
    neutral = _interaction(db, "Hi", "Hello")
    no_consent = _interaction(db, "private question", "bad answer", consent=False)
    _feedback(db, thumbs, "thumbs", -1)
    _feedback(db, rating, "rating", 2)
    _feedback(db, report, "report")
    _feedback(db, happy, "thumbs", 1)
    _feedback(db, happy, "rating", 5)
    _feedback(db, neutral, "rating", 3)
    _feedback(db, no_consent, "thumbs", -1)

    proposed = g.propose_from_feedback(db, set_name="prod")
    assert {p.source_interaction_id for p in proposed} == {thumbs, rating, report}
    assert all(p.status == "proposed" and p.expected is None for p in proposed)
    by_src = {p.source_interaction_id: p for p in proposed}
    assert by_src[thumbs].prompt == "Capital of Chile?" and by_src[thumbs].messages is None  # answer stripped
    assert "feedback:thumbs" in by_src[thumbs].tags and "production" in by_src[thumbs].tags
    assert g.propose_from_feedback(db, set_name="prod") == []  # each interaction once
    assert g.current_version(db, "prod") == 0 and g.list_examples(db, "prod") == []
    proposals = dict((e.source_interaction_id, bad) for e, bad in g.list_proposals(db, "prod"))
    assert proposals[thumbs] == "Buenos Aires"

    with pytest.raises(ValidationError, match="needs an 'expected'"):
        g.review(db, by_src[thumbs].id, True)
    approved = g.review(db, by_src[thumbs].id, True, expected="Santiago", reviewer="ann")
    assert (approved.status, approved.expected, approved.version) == ("approved", "Santiago", 1)
    rejected = g.review(db, by_src[report].id, False, reviewer="bob")
    assert rejected.status == "rejected" and g.current_version(db, "prod") == 1  # rejecting a proposal: no bump
    num = g.review(db, by_src[rating].id, True, expected="42", checker="number", reviewer="ann")
    assert num.version == 2 and num.checker == "number"
    assert [e.expected for e in g.list_examples(db, "prod")] == ["Santiago", "42"]
    with pytest.raises(ConflictError, match="already rejected"):
        g.review(db, by_src[report].id, True, expected="x")
    with pytest.raises(ConflictError, match="already approved"):
        g.review(db, by_src[thumbs].id, True)

    audit = db.fetch_all(sa.select(schema.audit_log).where(schema.audit_log.c.action.like("golden.%"))
                         .order_by(schema.audit_log.c.id))
    reviews = [(a["action"], a["actor"], a["target"]) for a in audit if a["action"] != "golden.propose"]
    assert reviews == [("golden.approve", "ann", by_src[thumbs].id), ("golden.reject", "bob", by_src[report].id),
                       ("golden.approve", "ann", by_src[rating].id)]
    assert audit[1]["after"]["expected"] == "Santiago"

    # Retiring an approved case changes the set: new version, gone from the approved list.
    retired = g.review(db, by_src[thumbs].id, False, reviewer="ann")
    assert retired.status == "rejected" and g.current_version(db, "prod") == 3
    assert [e.expected for e in g.list_examples(db, "prod")] == ["42"]


def test_propose_since_limit_and_multi_turn(db):
    old = _interaction(db, "old question", "bad")
    _feedback(db, old, "thumbs", -1, ts=1000.0)
    msgs = [{"role": "user", "content": "Capital of Spain?"}, {"role": "assistant", "content": "Madrid"},
            {"role": "user", "content": "And of Italy? One word."}, {"role": "assistant", "content": "It is Rome."}]
    recent = [_interaction(db, "And of Italy? One word.", "It is Rome.", messages=msgs) for _ in range(3)]
    for i, iid in enumerate(recent):
        _feedback(db, iid, "rating", 1, ts=5000.0 + i)
    got = g.propose_from_feedback(db, since=2000.0, limit=2, checker="one_word")
    assert [p.source_interaction_id for p in got] == [recent[2], recent[1]]  # newest feedback first
    assert got[0].messages is not None and len(got[0].messages) == 3 and got[0].checker == "one_word"
    assert g.propose_from_feedback(db, since=2000.0) and len(g.list_examples(db, status="proposed")) == 3
    with pytest.raises(ValidationError, match="unknown checker"):
        g.propose_from_feedback(db, checker="nope")
    with pytest.raises(NotFoundError):
        g.review(db, "no-such-id", True)
