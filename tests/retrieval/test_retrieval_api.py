"""The HTTP routes: retrieve, documents, feedback, builds — with real keys and the real app."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tuneloop.retrieval.search import RetrievalIndex
from tuneloop.server.app import create_app
from tuneloop.server.keys import create_key
from tuneloop.store import schema

from retrieval_helpers import DOCS


@pytest.fixture
def client(db, index_root, embedder):
    app = create_app(db=db)
    app.state.retrieval_index = RetrievalIndex(db, embedder=embedder, root=index_root)
    with TestClient(app) as c:
        yield c


@pytest.fixture
def keys(db):
    return {s: create_key(db, s).secret for s in ("ingest", "read", "admin")}


def _h(key):
    return {"Authorization": f"Bearer {key}"}


def test_documents_retrieve_feedback_delete(client, keys, db):
    r = client.post("/v1/documents", json={"documents": DOCS}, headers=_h(keys["admin"]))
    assert r.status_code == 200, r.text
    assert r.json()["added"] == [d["id"] for d in DOCS]
    r = client.post("/v1/documents", json=DOCS[0], headers=_h(keys["admin"]))
    assert r.json()["unchanged"] == ["pw"]
    r = client.post("/v1/retrieve", json={"query": "reset your account password", "k": 2,
                                          "interaction_id": "chat-1"}, headers=_h(keys["ingest"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["hits"][0]["id"] == "pw" and body["hits"][0]["rank"] == 1 and len(body["hits"]) == 2
    assert body["retriever_version"] == "hashing-256" and body["retrieval_id"]
    r = client.post("/v1/retrieval/feedback", json={"interaction_id": "chat-1", "used": ["pw"]},
                    headers=_h(keys["ingest"]))
    assert r.status_code == 200, r.text
    assert r.json()["retrieval"]["docs"][0]["used"] is True
    log = db.fetch_one(sa.select(schema.retrieval_logs.c.meta))
    assert log["meta"]["used"] == ["pw"]
    assert client.get("/v1/documents/pw", headers=_h(keys["read"])).json()["text"] == DOCS[0]["text"]
    assert client.delete("/v1/documents/pw", headers=_h(keys["admin"])).json() == {"deleted": ["pw"]}
    r = client.delete("/v1/documents/pw", headers=_h(keys["admin"]))
    assert r.status_code == 404 and "does not exist" in r.json()["error"]["message"]
    r = client.post("/v1/retrieve", json={"query": "reset your account password", "k": 5}, headers=_h(keys["ingest"]))
    assert "pw" not in [h["id"] for h in r.json()["hits"]]
    builds = client.get("/v1/retrieval/builds", headers=_h(keys["read"])).json()
    assert builds["active"] == builds["builds"][0]["id"]


def test_auth_and_bad_bodies(client, keys):
    assert client.post("/v1/retrieve", json={"query": "x"}).status_code == 401
    assert client.post("/v1/documents", json=DOCS, headers=_h(keys["ingest"])).status_code == 403
    assert client.post("/v1/retrieve", json={"query": "x"}, headers=_h(keys["read"])).status_code == 403
    r = client.post("/v1/retrieve", json={"query": "", "k": 0}, headers=_h(keys["ingest"]))
    assert r.status_code == 422 and "query" in r.json()["error"]["message"]
    r = client.post("/v1/documents", json={"documents": [{"id": "a"}]}, headers=_h(keys["admin"]))
    assert r.status_code == 422
    r = client.post("/v1/retrieval/feedback", json={"used": ["a"]}, headers=_h(keys["ingest"]))
    assert r.status_code == 422 and "retrieval_id" in r.json()["error"]["message"]
    r = client.post("/v1/retrieval/feedback", json={"retrieval_id": "nope", "used": []}, headers=_h(keys["ingest"]))
    assert r.status_code == 404
