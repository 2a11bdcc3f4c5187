"""``wrap_openai``: the official ``openai`` client, sync and async, plain and streaming, against
tuneloop's OpenAI-compatible gateway served by a real uvicorn (scripted model backend).

The gateway keeps its own log in a separate SQLite file; what the wrapped client logs goes
through a real UsageLogger into the database under test (SQLite or PostgreSQL).
"""
from __future__ import annotations

import asyncio

import openai
import pytest
import sqlalchemy as sa

import tuneloop
from capture_helpers import LiveServer
from tuneloop.capture import spans, trace_tree, tracing
from tuneloop.models.scripted import ScriptedBackend
from tuneloop.store import Database, schema

I, F = schema.interactions, schema.feedback
ASK = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Capital of France?"}]


def answer(messages):
    last = messages[-1]["content"]
    return {"Capital of France?": "Paris is the capital", "2+2?": "4"}.get(last, f"echo: {last}")


@pytest.fixture(autouse=True)
def fresh_tracing():
    yield
    state = spans._state
    state.logger, state.otel, state.config = None, None, tracing.TraceConfig()
    state.failed, state._warn = 0, spans._RateLimitedWarning(10.0)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    from tuneloop.server.app import create_app
    from tuneloop.server.keys import create_key

    gw_db = Database.open(f"sqlite:///{tmp_path_factory.mktemp('gw') / 'gateway.db'}")
    backends = {"champion": ScriptedBackend(answer, name="champion"),
                "broken": ScriptedBackend(answer, fail_with=RuntimeError("upstream exploded: bad gpu"))}
    key = create_key(gw_db, "ingest").secret
    with LiveServer(create_app(db=gw_db, backends=backends)) as server:
        server.key = key
        yield server
    gw_db.close()


@pytest.fixture
def lg(make_logger, db):
    return make_logger(db=db, flush_interval=0.05)


def sync_client(gateway):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0, timeout=20)


def async_client(gateway):
    return openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=gateway.key, max_retries=0, timeout=20)


def one(db, iid):
    [row] = db.fetch_all(sa.select(I).where(I.c.id == iid))
    return row


# ---------------------------------------------------------------- sync
def test_sync_completion_is_logged_with_an_id_for_feedback(gateway, lg, db):
    client = tuneloop.wrap_openai(sync_client(gateway), logger=lg)
    messages = [dict(m) for m in ASK]
    r = client.chat.completions.create(model="champion", messages=messages, temperature=0.2, max_tokens=16,
                                       user="alice")
    assert r.choices[0].message.content == "Paris is the capital"
    iid = r.tuneloop_interaction_id
    assert iid == tuneloop.last_interaction_id() and iid != r.id
    assert "tuneloop_interaction_id" not in r.model_dump() and "tuneloop" not in r.to_json()
    messages.append({"role": "assistant", "content": "changed after the call"})  # must not reach the log
    lg.record_feedback(iid, feedback=1)
    assert lg.flush(10)
    row = one(db, iid)
    assert (row["kind"], row["model"], row["query"], row["response"], row["status"], row["user_id"]) == \
        ("chat", "champion", "Capital of France?", "Paris is the capital", "ok", "alice")
    assert row["messages"] == ASK
    assert (row["prompt_tokens"], row["completion_tokens"], row["token_count"]) == (5, 4, 9)
    assert row["latency_ms"] > 0 and row["trace_id"] == iid and row["parent_id"] is None
    meta = row["meta"]
    assert meta["params"] == {"temperature": 0.2, "max_tokens": 16}
    assert (meta["response_id"], meta["response_model"], meta["finish_reasons"], meta["stream"]) == \
        (r.id, "champion", ["stop"], False)
    [fb] = db.fetch_all(sa.select(F))
    assert (fb["interaction_id"], fb["value"]) == (iid, 1.0)


def test_sync_stream_passes_chunks_through_and_logs_at_the_end(gateway, lg, db):
    plain = sync_client(gateway)
    client = tuneloop.wrap_openai(sync_client(gateway), logger=lg)
    kw = dict(model="champion", messages=ASK, stream=True, stream_options={"include_usage": True})
    expected = [c.model_dump(exclude={"id", "created"}) for c in plain.chat.completions.create(**kw)]
    stream = client.chat.completions.create(**kw)
    iid = stream.tuneloop_interaction_id  # known before the first chunk
    assert stream.response.status_code == 200  # the stream's own attributes pass through
    got = [c.model_dump(exclude={"id", "created"}) for c in stream]
    assert got == expected
    assert tuneloop.last_interaction_id() == iid
    assert lg.flush(10)
    row = one(db, iid)
    assert row["response"] == "Paris is the capital" and row["status"] == "ok"
    assert row["completion_tokens"] == 4 and row["meta"]["stream"] is True
    assert row["meta"]["finish_reasons"] == ["stop"] and 0 < row["meta"]["ttft_ms"] <= row["latency_ms"]


def test_stream_left_early_is_logged_as_closed(gateway, lg, db):
    client = tuneloop.wrap_openai(sync_client(gateway), logger=lg)
    with client.chat.completions.create(model="champion", messages=ASK, stream=True) as stream:
        first = next(iter(stream))
        assert first.choices[0].delta.role == "assistant"
    assert lg.flush(10)
    row = one(db, stream.tuneloop_interaction_id)
    assert row["meta"]["closed_early"] is True and row["status"] == "ok"
    assert len(row["response"]) < len("Paris is the capital")


def test_errors_are_logged_and_reraised_unchanged(gateway, lg, db):
    client = tuneloop.wrap_openai(sync_client(gateway), logger=lg)
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="broken", messages=ASK)
    assert e.value.status_code == 502
    with pytest.raises(openai.InternalServerError):
        list(client.chat.completions.create(model="broken", messages=ASK, stream=True))
    assert lg.flush(10)
    errs = db.fetch_all(sa.select(I).where(I.c.status == "error"))
    assert len(errs) == 2
    assert all(r["error"].startswith("InternalServerError:") and "exploded" in r["error"] for r in errs)
    assert all(r["query"] == "Capital of France?" and r["model"] == "broken" for r in errs)


# ---------------------------------------------------------------- async
def test_async_client_plain_and_streaming(gateway, lg, db):
    client = tuneloop.wrap_openai(async_client(gateway), logger=lg)

    async def main():
        r = await client.chat.completions.create(model="champion", messages=[{"role": "user", "content": "2+2?"}])
        after_plain = tuneloop.last_interaction_id()
        stream = await client.chat.completions.create(model="champion", messages=ASK, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        async with await client.chat.completions.create(model="champion", messages=ASK, stream=True) as s2:
            async for _ in s2:
                break
        return r, after_plain, stream.tuneloop_interaction_id, text, s2.tuneloop_interaction_id

    r, after_plain, sid, text, early = asyncio.run(main())
    assert r.choices[0].message.content == "4" and after_plain == r.tuneloop_interaction_id
    assert text == "Paris is the capital"
    assert lg.flush(10)
    assert one(db, r.tuneloop_interaction_id)["response"] == "4"
    assert one(db, r.tuneloop_interaction_id)["prompt_tokens"] == 1
    assert one(db, sid)["response"] == "Paris is the capital"
    assert one(db, early)["meta"]["closed_early"] is True


# ---------------------------------------------------------------- with @trace, copies, raw responses
def test_calls_inside_a_trace_are_children_and_take_its_user(gateway, lg, db):
    client = tuneloop.wrap_openai(sync_client(gateway))  # no logger: the span's

    @tuneloop.trace(name="handler", logger=lg, user_id="carol", session_id="s9")
    def handler(question):
        first = client.chat.completions.create(model="champion", messages=[{"role": "user", "content": question}])
        again = client.with_options(timeout=5).chat.completions.create(  # a copy: wrapped too
            model="champion", messages=iter([{"role": "user", "content": "2+2?"}]))  # any iterable
        raw = client.chat.completions.with_raw_response.create(model="champion", messages=ASK)
        return first.choices[0].message.content + " / " + again.choices[0].message.content + \
            " / " + raw.parse().choices[0].message.content

    assert handler("Capital of France?") == "Paris is the capital / 4 / Paris is the capital"
    assert tuneloop.wrap_openai(client) is client  # wrapping twice changes nothing
    assert lg.flush(10)
    tree = trace_tree(db, tuneloop.last_interaction_id())
    assert tree["meta"]["span"]["name"] == "handler"
    kids = tree["children"]
    assert [k["response"] for k in kids] == ["Paris is the capital", "4", "Paris is the capital"]
    assert all(k["kind"] == "chat" and k["user_id"] == "carol" and k["session_id"] == "s9" for k in kids)
    assert kids[1]["messages"] == [{"role": "user", "content": "2+2?"}]
    assert db.scalar(sa.select(sa.func.count()).select_from(I)) == 4


def test_logging_failures_never_reach_the_call(gateway, lg, db):
    client = tuneloop.wrap_openai(sync_client(gateway), logger=lg)
    lg.close()  # a closed logger drops rows: the call must not notice
    r = client.chat.completions.create(model="champion", messages=ASK)
    assert r.choices[0].message.content == "Paris is the capital"
    assert lg.dropped == 1
    broken = tuneloop.wrap_openai(sync_client(gateway), logger=object())
    assert broken.chat.completions.create(model="champion", messages=ASK).choices[0].message.content
    assert spans._state.failed == 1


# ---------------------------------------------------------------- OpenTelemetry
def test_otel_export_with_genai_semantic_conventions(gateway, lg, db):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, StatusCode

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tuneloop.configure_tracing(logger=lg, otel=True, tracer_provider=provider)
    client = tuneloop.wrap_openai(sync_client(gateway))

    @tuneloop.trace(name="retrieve", kind="retrieval")
    def retrieve(q):
        return ["doc"]

    @tuneloop.trace(name="handler", session_id="s1")
    def handler():
        retrieve("q")
        r = client.chat.completions.create(model="champion", messages=ASK, temperature=0.3, max_tokens=20)
        try:
            client.chat.completions.create(model="broken", messages=ASK)
        except openai.InternalServerError:
            pass
        return r

    r = handler()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"handler", "retrieve", "chat champion", "chat broken"}
    root, chat = spans["handler"], spans["chat champion"]
    assert all(s.context.trace_id == root.context.trace_id for s in spans.values())
    assert {s.parent.span_id for n, s in spans.items() if n != "handler"} == {root.context.span_id}
    assert chat.kind == SpanKind.CLIENT and spans["retrieve"].kind == SpanKind.INTERNAL
    a = chat.attributes
    assert (a["gen_ai.operation.name"], a["gen_ai.system"], a["gen_ai.provider.name"]) == ("chat", "openai", "openai")
    assert (a["gen_ai.request.model"], a["gen_ai.request.temperature"], a["gen_ai.request.max_tokens"]) == \
        ("champion", 0.3, 20)
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (5, 4)
    assert (a["gen_ai.response.id"], a["gen_ai.response.model"]) == (r.id, "champion")
    assert tuple(a["gen_ai.response.finish_reasons"]) == ("stop",) and a["gen_ai.conversation.id"] == "s1"
    assert a["tuneloop.interaction_id"] == r.tuneloop_interaction_id
    assert "gen_ai.input.messages" not in a  # contents only on request
    assert spans["retrieve"].attributes["gen_ai.operation.name"] == "retrieval"
    failed = spans["chat broken"]
    assert failed.status.status_code == StatusCode.ERROR and failed.attributes["error.type"] == "InternalServerError"
    assert failed.events[0].name == "exception"
    assert lg.flush(10)
    assert db.scalar(sa.select(sa.func.count()).select_from(I)) == 4  # and the store has them all


def test_a_stream_dropped_unfinished_is_logged_at_once(gateway, lg, db):
    client = tuneloop.wrap_openai(sync_client(gateway), logger=lg)
    stream = client.chat.completions.create(model="champion", messages=ASK, stream=True)
    iid = stream.tuneloop_interaction_id
    next(stream)
    del stream  # no cycle keeps it alive: reference counting ends the span right here
    assert tuneloop.last_interaction_id() == iid
    assert lg.flush(10)
    assert one(db, iid)["meta"]["closed_early"] is True
