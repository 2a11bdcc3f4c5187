import json

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tuneloop.config import Settings
from tuneloop.ids import new_id
from tuneloop.server.app import create_app
from tuneloop.store import schema



def auth(key):
    return {"Authorization": f"Bearer {key}"} if key else {}


def count(db, table):
    return db.scalar(sa.select(sa.func.count()).select_from(table))


def item(**kw):
    return {"query": "What is 2+2?", "response": "4", "model": "m1", "latency_ms": 12.5, **kw}


def test_single_batch_and_list(client, keys, db):
    h = auth(keys["ingest"])
    r = client.post("/v1/interactions", json=item(id="one", user_id="u1", metadata={"k": 1}), headers=h)
    assert r.status_code == 200 and r.json() == {"accepted": 1, "inserted": 1, "ids": ["one"]}
    r = client.post("/v1/interactions", json={"interactions": [item(), item(model="m2")]}, headers=h)
    assert r.json()["accepted"] == 2 and r.json()["inserted"] == 2
    r = client.post("/v1/interactions", json=[item(messages=[{"role": "user", "content": "hi"}], query=None)],
                    headers=h)
    assert r.status_code == 200, r.text
    assert count(db, schema.interactions) == 4
    row = db.fetch_one(sa.select(schema.interactions).where(schema.interactions.c.id == "one"))
    assert (row["query"], row["response"], row["model"], row["latency_ms"]) == ("What is 2+2?", "4", "m1", 12.5)
    assert row["user_id"] == "u1" and row["meta"] == {"k": 1}
    listed = db.fetch_one(sa.select(schema.interactions).where(schema.interactions.c.query == "hi"))
    assert listed["messages"] == [{"role": "user", "content": "hi"}]


def test_idempotent_on_ids(client, keys, db):
    h = auth(keys["ingest"])
    batch = {"interactions": [item(id=new_id()) for _ in range(5)]}
    assert client.post("/v1/interactions", json=batch, headers=h).json()["inserted"] == 5
    again = client.post("/v1/interactions", json=batch, headers=h).json()
    assert again["accepted"] == 5 and again["inserted"] == 0
    assert count(db, schema.interactions) == 5
    fb = {"feedback_id": "f1", "interaction_id": batch["interactions"][0]["id"], "kind": "thumbs", "value": 1}
    assert client.post("/v1/feedback", json=fb, headers=h).json()["inserted"] == 1
    assert client.post("/v1/feedback", json=fb, headers=h).json()["inserted"] == 0
    assert count(db, schema.feedback) == 1


@pytest.mark.parametrize("body,field", [
    (b"{not json", "body"),
    (b"", "body"),
    (b'"a string"', "body"),
    (json.dumps({"interactions": {"query": "x"}}).encode(), "interactions"),
    (json.dumps({"interactions": [], "extra": 1}).encode(), "extra"),
    (json.dumps(item(latency_ms="fast")).encode(), "latency_ms"),
    (json.dumps(item(token_count=1.5)).encode(), "token_count"),
    (json.dumps(item(consent="yes")).encode(), "consent"),
    (json.dumps(item(latency_ms=-3)).encode(), "latency_ms"),
    (json.dumps(item(id="x" * 65)).encode(), "id"),
    (json.dumps({"response": "no query"}).encode(), "query"),
    (json.dumps({"interactions": [item(), item(messages="hi")]}).encode(), "interactions[1].messages"),
    (json.dumps({"interactions": [item(), item(), item(model=3)]}).encode(), "interactions[2].model"),
])
def test_bad_interactions_get_422_naming_the_field_and_write_nothing(client, keys, db, body, field):
    r = client.post("/v1/interactions", content=body, headers={**auth(keys["ingest"]),
                                                                "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["field"] == field and field.split("[")[0] in err["message"]
    assert count(db, schema.interactions) == 0


def test_feedback_shapes(client, keys, db):
    h = auth(keys["ingest"])
    iid = client.post("/v1/interactions", json=item(), headers=h).json()["ids"][0]
    assert client.post("/v1/feedback", json={"id": iid, "rating": 5}, headers=h).status_code == 200  # seed 000
    assert client.post("/v1/feedback", json={"id": iid, "feedback": -1}, headers=h).status_code == 200  # seed 002
    r = client.post("/v1/feedback", json={"feedback": [
        {"interaction_id": iid, "kind": "comment", "text": "too short"},
        {"interaction_id": iid, "kind": "dwell", "value": 12.0, "source": "implicit"}]}, headers=h)
    assert r.json()["inserted"] == 2
    rows = {r["kind"]: r for r in db.fetch_all(sa.select(schema.feedback))}
    assert rows["rating"]["value"] == 5 and rows["thumbs"]["value"] == -1
    assert rows["comment"]["text"] == "too short" and rows["dwell"]["source"] == "implicit"
    assert all(r["interaction_id"] == iid for r in rows.values())
    # feedback may arrive before its interaction (the gateway logs asynchronously)
    assert client.post("/v1/feedback", json={"id": "later", "rating": 3}, headers=h).status_code == 200


@pytest.mark.parametrize("body,field", [
    ({"id": "x", "rating": 9}, "rating"),
    ({"id": "x", "rating": "good"}, "rating"),
    ({"id": "x", "feedback": 2}, "feedback"),
    ({"interaction_id": "x", "kind": "stars", "value": 1}, "kind"),
    ({"interaction_id": "x", "kind": "comment"}, "text"),
    ({"kind": "thumbs", "value": 1}, "interaction_id"),
    ({"feedback": [{"id": "x", "rating": 4}, {"id": "y", "ratin": 4}]}, "feedback[1].ratin"),
    ({"feedback": [{"id": "x", "rating": 4}, {"id": "y", "rating": 0}]}, "feedback[1].rating"),
])
def test_bad_feedback(client, keys, db, body, field):
    r = client.post("/v1/feedback", json=body, headers=auth(keys["ingest"]))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field
    assert count(db, schema.feedback) == 0


def test_oversized_bodies_get_413_and_write_nothing(db, keys):
    app = create_app(db=db, settings=Settings(max_body_bytes=2000))
    client = TestClient(app)
    h = auth(keys["ingest"])
    big = {"interactions": [item(response="x" * 500) for _ in range(10)]}
    r = client.post("/v1/interactions", json=big, headers=h)
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]

    def chunks():  # no Content-Length: counted as it streams in
        data = json.dumps(big).encode()
        for i in range(0, len(data), 500):
            yield data[i:i + 500]

    r = client.post("/v1/interactions", content=chunks(), headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 413
    r = client.post("/v1/feedback", json={"id": "x", "rating": 4, "text": "y" * 5000}, headers=h)
    assert r.status_code == 413
    assert count(db, schema.interactions) == 0 and count(db, schema.feedback) == 0
    assert client.post("/v1/interactions", json=item(), headers=h).status_code == 200  # small is fine


def test_stats(client, keys):
    h = auth(keys["ingest"])
    ids = client.post("/v1/interactions", json={"interactions": [item(latency_ms=float(i)) for i in range(1, 11)]},
                      headers=h).json()["ids"]
    client.post("/v1/feedback", json={"feedback": [{"id": ids[0], "rating": 5}, {"id": ids[1], "rating": 1}]},
                headers=h)
    s = client.get("/v1/stats", headers=auth(keys["read"])).json()
    assert s["total"] == 10 and s["models"] == {"m1": 10} and s["feedback_rate"] == pytest.approx(0.2)
    assert s["positive_rate"] == pytest.approx(0.5) and s["latency_p50"] == pytest.approx(5.5)
    assert client.get("/v1/stats?since=9999999999", headers=auth(keys["read"])).json()["total"] == 0
    assert client.get("/v1/stats?since=2020-01-01", headers=auth(keys["read"])).json()["total"] == 10
    r = client.get("/v1/stats?since=yesterday", headers=auth(keys["read"]))
    assert r.status_code == 422 and r.json()["error"]["field"] == "since"


def test_healthz_and_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    spec = client.get("/openapi.json").json()
    assert {"/v1/interactions", "/v1/feedback", "/v1/stats", "/healthz", "/v1/chat/completions",
            "/v1/models"} <= set(spec["paths"])
    assert {"InteractionIn", "InteractionBatch", "FeedbackIn", "FeedbackBatch"} <= set(spec["components"]["schemas"])
    assert "latency_ms" in spec["components"]["schemas"]["InteractionIn"]["properties"]
    assert spec["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert spec["paths"]["/v1/interactions"]["post"]["security"] == [{"apiKey": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_unknown_route_renders_error_shape(client):
    r = client.get("/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["type"] == "NotFoundError"


def test_app_from_env(db_url, monkeypatch):
    from tuneloop.server.app import SETTINGS_ENV, app_from_env

    monkeypatch.setenv(SETTINGS_ENV, Settings(db_url=db_url, insecure_dev=True, max_body_bytes=1234).model_dump_json())
    app = app_from_env()
    assert app.state.insecure_dev and app.state.settings.max_body_bytes == 1234
    with TestClient(app) as c:
        assert c.get("/v1/stats").status_code == 200
