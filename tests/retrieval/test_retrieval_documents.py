"""The document store: batches, content hashes, soft deletes, change feed, file loading."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tuneloop.errors import NotFoundError, ValidationError
from tuneloop.retrieval.documents import DocumentStore, changes_since, content_hash, load_documents
from tuneloop.store import schema


def test_upsert_classifies_added_updated_meta_only_unchanged(db):
    store = DocumentStore(db)
    r = store.upsert([{"id": "a", "text": "alpha"}, {"id": "b", "text": "beta", "meta": {"x": 1}}])
    assert r.added == ("a", "b") and r.to_embed == ("a", "b")
    r = store.upsert([{"id": "a", "text": "alpha"}, {"id": "b", "text": "beta", "meta": {"x": 2}},
                      {"id": "c", "text": "gamma"}])
    assert (r.unchanged, r.meta_only, r.added, r.to_embed) == (("a",), ("b",), ("c",), ("c",))
    r = store.upsert([{"id": "a", "text": "alpha 2"}])
    assert r.updated == ("a",) and r.to_embed == ("a",)
    row = db.fetch_one(sa.select(schema.documents).where(schema.documents.c.id == "a"))
    assert row["version"] == 2 and row["content_hash"] == content_hash("alpha 2")
    assert db.fetch_one(sa.select(schema.documents).where(schema.documents.c.id == "b"))["version"] == 2


def test_last_duplicate_in_a_batch_wins_and_extra_keys_go_to_meta(db):
    store = DocumentStore(db)
    r = store.upsert([{"id": "a", "text": "one"}, {"id": "a", "text": "two", "lang": "en"}])
    assert r.added == ("a",)
    doc = store.get("a")
    assert doc.text == "two" and doc.meta == {"lang": "en"}


def test_delete_is_soft_and_a_deleted_document_can_come_back(db):
    store = DocumentStore(db)
    store.upsert([{"id": "a", "text": "alpha"}, {"id": "b", "text": "beta"}])
    assert store.delete(["b", "nope", "b"]) == ("b",)
    assert store.delete(["b"]) == ()
    with pytest.raises(NotFoundError, match="'b'"):
        store.get("b")
    assert store.count() == 1 and store.count(include_deleted=True) == 2
    assert store.upsert([{"id": "b", "text": "beta"}]).added == ("b",)  # revived: must be embedded again
    assert store.purge(older_than=1e18) == 0


def test_large_batches_and_the_change_feed_pages_past_equal_timestamps(db):
    store = DocumentStore(db)
    store.upsert([{"id": f"d{i:04d}", "text": f"text {i}"} for i in range(1203)])  # one updated_at for all
    rows = list(changes_since(db, None, page=500))
    assert len(rows) == 1203 and len({r["id"] for r in rows}) == 1203
    t = rows[-1]["updated_at"]
    store.delete(["d0001"])
    later = list(changes_since(db, t))
    assert [(r["id"], r["deleted"]) for r in later] == [("d0001", True)]
    pages = list(store.iter_live(batch=500))
    assert [len(p) for p in pages] == [500, 500, 202]


@pytest.mark.parametrize("bad, match", [
    ({"text": "x"}, "'id' must be a non-empty string"),
    ({"id": "a", "text": ""}, "'text' must be a non-empty string"),
    ({"id": "a" * 256, "text": "x"}, "longer than 255"),
    ({"id": "a", "text": "x", "meta": [1]}, "'meta' must be an object"),
    ({"id": "a", "text": "x", "meta": {"o": object()}}, "meta is not JSON"),
    ("just text", "expected an object"),
])
def test_bad_documents_are_refused_by_name_and_nothing_is_written(db, bad, match):
    store = DocumentStore(db)
    with pytest.raises(ValidationError, match=match):
        store.upsert([{"id": "ok", "text": "fine"}, bad])
    assert store.count() == 0


def test_load_documents_from_jsonl_and_folders(tmp_path):
    f = tmp_path / "docs.jsonl"
    f.write_text(json.dumps({"id": "a", "text": "alpha", "metadata": {"s": 1}}) + "\n\n"
                 + json.dumps({"id": "b", "text": "beta", "source": "x"}) + "\n")
    docs = list(load_documents(f))
    assert [(d.id, dict(d.meta)) for d in docs] == [("a", {"s": 1}), ("b", {"source": "x"})]
    folder = tmp_path / "kb"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "faq.md").write_text("# FAQ\nanswers")
    (folder / "notes.txt").write_text("notes")
    (folder / "image.png").write_bytes(b"\x89PNG")
    (folder / "more.jsonl").write_text(json.dumps({"id": "c", "text": "gamma"}) + "\n")
    assert sorted(d.id for d in load_documents(folder)) == ["c", "notes.txt", "sub/faq.md"]
    f.write_text('{"id": "a", "text": "alpha"}\n{not json\n')
    with pytest.raises(ValidationError, match=r"docs.jsonl:2: not JSON"):
        list(load_documents(f))
    with pytest.raises(ValidationError, match="does not exist"):
        list(load_documents(tmp_path / "missing.jsonl"))
