"""The gateway through the official OpenAI client against a real uvicorn server."""
from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import openai
import pytest
import sqlalchemy as sa
import uvicorn

from tuneloop.models.scripted import ScriptedBackend
from tuneloop.server.app import create_app
from tuneloop.server.gateway import StaticRouter
from tuneloop.server.keys import create_key
from tuneloop.store import schema


class LiveServer:
    """A real uvicorn serving ``app`` on a free loopback port, in a thread."""

    def __init__(self, app):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(20)


def answer(messages):
    last = messages[-1]["content"]
    return {"Capital of France?": "Paris is the capital", "2+2?": "4"}.get(last, f"echo: {last}")


@pytest.fixture
def live(db):
    backends = {"champion": ScriptedBackend(answer, name="champion"),
                "broken": ScriptedBackend(answer, fail_with=RuntimeError("upstream exploded: bad gpu")),
                "slowpoke": ScriptedBackend(answer, fail_with=TimeoutError("read timed out after 30 s"))}
    app = create_app(db=db, backends=backends)
    key = create_key(db, "ingest").secret
    with LiveServer(app) as server:
        server.key = key
        server.client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=20)
        yield server


def rows(db, **where):
    t = schema.interactions
    stmt = sa.select(t).where(*[t.c[k] == v for k, v in where.items()]).order_by(t.c.ts)
    return db.fetch_all(stmt)


def flush(app):
    gw = app.state.gateway
    deadline = time.time() + 10
    while gw.pending_shadows and time.time() < deadline:
        time.sleep(0.01)
    assert gw.logger.flush(10)


def test_non_streaming_then_feedback(live, db):
    raw = live.client.chat.completions.with_raw_response.create(
        model="champion", messages=[{"role": "user", "content": "Capital of France?"}], user="alice",
        temperature=0.2, max_tokens=16)
    r = raw.parse()
    assert r.choices[0].message.content == "Paris is the capital" and r.choices[0].finish_reason == "stop"
    assert r.object == "chat.completion" and r.model == "champion"
    assert r.usage.prompt_tokens == 3 and r.usage.completion_tokens == 4 and r.usage.total_tokens == 7
    assert raw.headers["x-tuneloop-interaction-id"] == r.id
    flush(live.app)
    [row] = rows(db, id=r.id)
    assert (row["query"], row["response"], row["model"], row["version_id"]) == \
        ("Capital of France?", "Paris is the capital", "champion", "champion")
    assert row["user_id"] == "alice" and row["latency_ms"] > 0 and row["status"] == "ok"
    assert row["prompt_tokens"] == 3 and row["completion_tokens"] == 4
    assert row["messages"] == [{"role": "user", "content": "Capital of France?"}]
    fb = httpx.post(live.url + "/v1/feedback", json={"id": r.id, "rating": 5},
                    headers={"Authorization": f"Bearer {live.key}"})
    assert fb.status_code == 200
    [f] = db.fetch_all(sa.select(schema.feedback))
    assert (f["interaction_id"], f["kind"], f["value"]) == (r.id, "rating", 5)


def test_streaming(live, db):
    stream = live.client.chat.completions.create(
        model="champion", messages=[{"role": "system", "content": "be brief"},
                                    {"role": "user", "content": "Capital of France?"}],
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Paris is the capital"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)
    iid = chunks[0].id
    flush(live.app)
    [row] = rows(db, id=iid)
    assert row["response"] == "Paris is the capital" and row["meta"]["stream"] is True
    assert httpx.post(live.url + "/v1/feedback", json={"interaction_id": iid, "kind": "thumbs", "value": 1},
                      headers={"Authorization": f"Bearer {live.key}"}).status_code == 200
    assert db.fetch_one(sa.select(schema.feedback))["interaction_id"] == iid


def test_raw_sse_shape(live):
    body = {"model": "champion", "messages": [{"role": "user", "content": "2+2?"}], "stream": True}
    with httpx.stream("POST", live.url + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {live.key}", "X-Tuneloop-User": "bob"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        iid = r.headers["x-tuneloop-interaction-id"]
        text = r.read().decode()
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    first = json.loads(events[0][6:])
    assert first["id"] == iid and first["choices"][0] == {"index": 0, "delta": {"role": "assistant", "content": ""},
                                                          "logprobs": None, "finish_reason": None}
    assert "usage" not in first  # only with stream_options.include_usage
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "stop"


def test_user_header_models_and_content_parts(live, db):
    raw = live.client.chat.completions.with_raw_response.create(
        model="champion", messages=[{"role": "user", "content": [{"type": "text", "text": "2+2?"}]}],
        extra_headers={"X-Tuneloop-User": "carol", "X-Tuneloop-Session": "s1"})
    r = raw.parse()
    assert r.choices[0].message.content == "4"
    flush(live.app)
    [row] = rows(db, id=r.id)
    assert row["user_id"] == "carol" and row["session_id"] == "s1" and row["query"] == "2+2?"
    assert {m.id for m in live.client.models.list()} == {"champion", "broken", "slowpoke"}


def test_upstream_errors_are_502_and_504_with_the_message(live, db):
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.InternalServerError) as e:
        live.client.chat.completions.create(model="broken", messages=msgs)
    assert e.value.status_code == 502 and "upstream exploded: bad gpu" in e.value.message
    with pytest.raises(openai.InternalServerError) as e:
        live.client.chat.completions.create(model="slowpoke", messages=msgs)
    assert e.value.status_code == 504 and "timed out" in e.value.message
    with pytest.raises(openai.InternalServerError) as e:  # streaming fails before the first byte: still 502
        list(live.client.chat.completions.create(model="broken", messages=msgs, stream=True))
    assert e.value.status_code == 502
    flush(live.app)
    errs = rows(db, status="error")
    assert len(errs) == 3 and all("exploded" in r["error"] or "timed out" in r["error"] for r in errs)


def test_bad_requests(live):
    with pytest.raises(openai.NotFoundError, match="nope"):
        live.client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.UnprocessableEntityError, match="messages"):
        live.client.chat.completions.create(model="champion", messages=[])
    with pytest.raises(openai.UnprocessableEntityError, match="n"):
        live.client.chat.completions.create(model="champion", messages=[{"role": "user", "content": "x"}], n=2)
    r = httpx.post(live.url + "/v1/chat/completions", content=b"{oops",
                   headers={"Authorization": f"Bearer {live.key}"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "body"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=live.url + "/v1", api_key="tl_ingest_wrong", max_retries=0).models.list()


def test_slow_shadow_never_delays_the_answer(db):
    shadow = ScriptedBackend(lambda m: "shadow says hi", delay_s=1.5, name="shadow")
    router = StaticRouter({"champion": ScriptedBackend(answer)}, shadows={"champion": ("v2-shadow", shadow)})
    app = create_app(db=db, router=router, insecure_dev=True)
    with LiveServer(app) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        ids, took = [], []
        for i in range(3):  # the same keep-alive connection each time
            t0 = time.perf_counter()
            r = client.chat.completions.create(model="champion", messages=[{"role": "user", "content": "2+2?"}],
                                               user="dave", stream=bool(i == 2))
            if i == 2:
                r = list(r)[0]
            took.append(time.perf_counter() - t0)
            ids.append(r.id)
        assert max(took) < 0.5, took  # the shadow takes 1.5 s each
        assert shadow.calls <= 3
        flush(app)
    shadows = rows(db, arm="shadow")
    assert len(shadows) == 3 and shadow.calls == 3
    assert {s["meta"]["shadow_of"] for s in shadows} == set(ids)
    assert all(s["version_id"] == "v2-shadow" and s["response"] == "shadow says hi" and s["user_id"] == "dave"
               and s["latency_ms"] >= 1500 for s in shadows)
    assert {r["id"] for r in rows(db, version_id="champion")} == set(ids)


def test_request_body_errors_name_the_field(live):
    h = {"Authorization": f"Bearer {live.key}"}
    for body, field in [(b"", "body"), (b"[1, 2]", "body"), (b'{"messages": []}', "model"),
                        (b'{"model": "champion", "messages": [{"content": "x"}]}', "messages[0].role"),
                        (b'{"model": "champion", "messages": [{"role": "user"}], "temperature": 9}', "temperature")]:
        r = httpx.post(live.url + "/v1/chat/completions", content=body, headers=h)
        assert r.status_code == 422 and r.json()["error"]["field"] == field, (body, r.text)


class SlowStream(ScriptedBackend):
    """A scripted backend whose stream takes a while per piece, like a real model."""

    def stream(self, messages, **params):
        for word in ["one", " two", " three", " four", " five"]:
            time.sleep(0.2)
            yield word


def test_client_disconnect_mid_stream_is_logged(db):
    app = create_app(db=db, backends={"slow": SlowStream({}, default="x")}, insecure_dev=True)
    with LiveServer(app) as server:
        body = {"model": "slow", "messages": [{"role": "user", "content": "count"}], "stream": True}
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body) as r:
            iid = r.headers["x-tuneloop-interaction-id"]
            next(r.iter_lines())  # the role chunk, then hang up
        deadline = time.time() + 10
        while not rows(db, id=iid) and time.time() < deadline:
            app.state.gateway.logger.flush(1)
            time.sleep(0.1)
    [row] = rows(db, id=iid)
    assert row["meta"]["disconnected"] is True and row["response"].startswith("one")
    assert row["response"] != "one two three four five"


def test_user_longer_than_the_column_is_refused(live, db):
    with pytest.raises(openai.UnprocessableEntityError, match="user"):
        live.client.chat.completions.create(model="champion", messages=[{"role": "user", "content": "x"}],
                                            user="u" * 256)
    flush(live.app)
    assert rows(db) == []


def test_default_router_is_the_registry(db):
    from fastapi.testclient import TestClient

    from tuneloop.server.gateway import LazyRouter

    app = create_app(db=db, insecure_dev=True)
    assert isinstance(app.state.gateway.router, LazyRouter)
    with TestClient(app) as c:
        r = c.post("/v1/chat/completions", json={"model": "champion", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 404 and "champion" in r.json()["error"]["message"]
        assert "champion" in {m["id"] for m in c.get("/v1/models").json()["data"]}


def test_failing_shadow_is_logged_and_a_full_shadow_pool_drops_and_counts(db):
    from fastapi.testclient import TestClient

    broken = ScriptedBackend(answer, fail_with=RuntimeError("shadow gpu on fire"))
    router = StaticRouter({"champion": ScriptedBackend(answer)}, shadows={"champion": ("v-bad", broken)})
    app = create_app(db=db, router=router, insecure_dev=True)
    body = {"model": "champion", "messages": [{"role": "user", "content": "2+2?"}]}
    with TestClient(app) as c:
        assert c.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"] == "4"
        flush(app)
        [shadow] = rows(db, arm="shadow")
        assert shadow["status"] == "error" and "shadow gpu on fire" in shadow["error"]
        app.state.gateway.max_pending_shadows = 0
        assert c.post("/v1/chat/completions", json=body).status_code == 200
        assert app.state.gateway.shadow_dropped == 1
