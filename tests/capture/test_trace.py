"""``@trace`` end to end: spans of sync/async functions and generators, written by a real
UsageLogger into the database under test (SQLite or PostgreSQL), read back as trace trees."""
from __future__ import annotations

import asyncio
import inspect
import threading
import time

import pytest
import sqlalchemy as sa

import tuneloop
from capture_helpers import LiveServer, wait_until, write_lock
from tuneloop.capture import statistics, trace_tree
from tuneloop.capture import spans, tracing
from tuneloop.errors import ConfigError
from tuneloop.store import schema

I, F = schema.interactions, schema.feedback


@pytest.fixture(autouse=True)
def fresh_tracing():
    """Each test starts with default tracing settings and no logger."""
    yield
    state = spans._state
    with state._lock:
        state.logger, state.otel, state.config = None, None, tracing.TraceConfig()
        state._pending.clear()
        state._retry_at, state.failed, state._warn = 0.0, 0, spans._RateLimitedWarning(10.0)


@pytest.fixture
def lg(make_logger, db):
    logger = make_logger(db=db, flush_interval=0.05)
    tuneloop.configure_tracing(logger=logger)
    return logger


def rows(db, **where):
    stmt = sa.select(I).where(*[I.c[k] == v for k, v in where.items()]).order_by(I.c.ts, I.c.id)
    return db.fetch_all(stmt)


def names(node):
    return (node["meta"]["span"]["name"], [names(c) for c in node["children"]])


# ---------------------------------------------------------------- one request, one tree
def test_nested_sync_spans_are_one_tree_with_inputs_outputs_latency(lg, db):
    @tuneloop.trace(name="retrieve", kind="retrieval")
    def retrieve(question, k=2):
        return [f"doc about {question} #{i}" for i in range(k)]

    @tuneloop.trace
    def answer(question: str) -> str:
        docs = retrieve(question, k=3)
        with tuneloop.trace("rerank", input={"n": len(docs)}) as span:
            time.sleep(0.01)
            span.set_output(docs[:1])
            span.set_metadata(reranker="bge")
        return "refunds take 5 days"

    assert answer("refunds") == "refunds take 5 days"
    root_id = tuneloop.last_interaction_id()
    assert lg.flush(10)
    tree = trace_tree(db, root_id)
    assert names(tree) == ("test_nested_sync_spans_are_one_tree_with_inputs_outputs_latency.<locals>.answer",
                           [("retrieve", []), ("rerank", [])])
    assert tree["id"] == tree["trace_id"] == root_id and tree["parent_id"] is None
    assert (tree["kind"], tree["status"], tree["query"], tree["response"]) == \
        ("span", "ok", "refunds", "refunds take 5 days")
    retrieve_row, rerank_row = tree["children"]
    assert retrieve_row["meta"]["span"] == {
        "name": "retrieve", "kind": "retrieval", "input": {"question": "refunds", "k": 3},
        "output": [f"doc about refunds #{i}" for i in range(3)]}
    assert retrieve_row["parent_id"] == root_id and retrieve_row["trace_id"] == root_id
    assert rerank_row["meta"]["reranker"] == "bge" and rerank_row["meta"]["span"]["input"] == {"n": 3}
    assert rerank_row["latency_ms"] >= 10 and tree["latency_ms"] >= rerank_row["latency_ms"]
    assert trace_tree(db, retrieve_row["id"])["id"] == root_id  # any span's id finds its tree
    assert statistics(db)["total"] == 0  # spans are steps, not interactions


def test_concurrent_async_requests_keep_their_own_trees(lg, db):
    @tuneloop.trace(kind="tool")
    async def lookup(x):
        await asyncio.sleep(0.01)
        return x * 2

    @tuneloop.trace
    async def handle(request_id):
        a, b = await asyncio.gather(lookup(request_id), lookup(request_id + 1))  # tasks inherit the span
        return a + b

    async def main():
        return await asyncio.gather(*(handle(i) for i in (10, 20, 30)))

    assert asyncio.run(main()) == [42, 82, 122]
    assert lg.flush(10)
    roots = [r for r in rows(db) if r["parent_id"] is None]
    assert len(roots) == 3
    for root in roots:
        tree = trace_tree(db, root["id"])
        request_id = tree["meta"]["span"]["input"]["request_id"]
        assert sorted(c["meta"]["span"]["input"]["x"] for c in tree["children"]) == [request_id, request_id + 1]
        assert all(c["trace_id"] == root["id"] and c["children"] == [] for c in tree["children"])


# ---------------------------------------------------------------- generators
def test_sync_generator_span_covers_only_its_own_code(lg, db):
    seen = []

    @tuneloop.trace
    def tokens(n):
        for i in range(n):
            seen.append(tuneloop.current_span().name)
            got = yield f"t{i} "
            if got:
                seen.append(got)

    @tuneloop.trace(name="consumer")
    def consume():
        gen = tokens(3)
        out = [next(gen)]
        with tuneloop.trace("between"):  # the consumer's code: not inside the generator's span
            pass
        out.append(gen.send("hello"))
        out.extend(gen)
        return "".join(out)

    assert consume() == "t0 t1 t2 "
    assert seen[0].endswith("tokens") and "hello" in seen
    assert tuneloop.current_span() is None
    assert lg.flush(10)
    tree = trace_tree(db, tuneloop.last_interaction_id())
    by_name = {c["meta"]["span"]["name"].rsplit(".", 1)[-1]: c for c in tree["children"]}
    assert set(by_name) == {"tokens", "between"}
    assert by_name["tokens"]["response"] == "t0 t1 t2 " and by_name["tokens"]["children"] == []


def test_generator_closed_early_runs_its_cleanup_and_is_logged(lg, db):
    cleaned = []

    @tuneloop.trace(name="numbers")
    def numbers():
        try:
            for i in range(100):
                yield i
        finally:
            cleaned.append(tuneloop.current_span().name)  # cleanup runs inside the span

    gen = numbers()
    assert [next(gen), next(gen)] == [0, 1]
    gen.close()
    assert cleaned == ["numbers"]
    assert lg.flush(10)
    [row] = rows(db)
    assert row["status"] == "ok" and row["meta"]["closed_early"] is True
    assert row["meta"]["span"]["output"] == [0, 1] and row["response"] == ""  # structured: in meta only


def test_async_generator_and_throw_into_generators(lg, db):
    @tuneloop.trace(name="agen")
    async def agen(n):
        for i in range(n):
            try:
                yield i
            except KeyError:
                yield "recovered"

    @tuneloop.trace(name="sgen")
    def sgen():
        try:
            yield 1
        except KeyError:
            yield "recovered"

    async def main():
        out = [x async for x in agen(3)]
        g = agen(2)
        first = await g.__anext__()
        recovered = await g.athrow(KeyError("k"))
        await g.aclose()
        return out, first, recovered

    assert asyncio.run(main()) == ([0, 1, 2], 0, "recovered")
    g = sgen()
    assert next(g) == 1 and g.throw(KeyError("k")) == "recovered"
    assert list(g) == []
    assert lg.flush(10)
    got = sorted((r["meta"]["span"]["name"], str(r["meta"]["span"]["output"]), bool(r["meta"].get("closed_early")))
                 for r in rows(db))
    assert got == [("agen", "[0, 'recovered']", True), ("agen", "[0, 1, 2]", False),
                   ("sgen", "[1, 'recovered']", False)]


# ---------------------------------------------------------------- errors
def test_errors_are_recorded_and_reraised_unchanged(lg, db):
    original = ValueError("bad input: 42")

    @tuneloop.trace
    def fails():
        raise original

    @tuneloop.trace
    async def afails():
        raise original

    @tuneloop.trace(name="gfails")
    def gfails():
        yield 1
        raise original

    for call in (fails, lambda: asyncio.run(afails()), lambda: list(gfails())):
        with pytest.raises(ValueError) as info:
            call()
        assert info.value is original
        assert info.traceback[-1].name in ("fails", "afails", "gfails")  # raised where it was raised
    with pytest.raises(KeyError):
        with tuneloop.trace("block"):
            raise KeyError("missing")
    assert lg.flush(10)
    errs = rows(db, status="error")
    assert len(errs) == 4
    assert {r["error"] for r in errs} == {"ValueError: bad input: 42", "KeyError: 'missing'"}
    assert all(r["latency_ms"] is not None for r in errs)


# ---------------------------------------------------------------- capture details
class Weird:
    def __repr__(self):
        raise RuntimeError("repr is broken")


def test_inputs_are_json_safe_bounded_and_skip_self(lg, db):
    class Service:
        @tuneloop.trace(name="method")
        def run(self, doc, *extra, **options):
            return {"nan": float("nan"), "bytes": b"\x00\x01", "set": {1}}

        @tuneloop.trace(name="static")
        @staticmethod
        def helper(x):
            return x

    tuneloop.configure_tracing(max_chars=50, max_items=4)
    Service().run("x" * 500, 1, 2, 3, 4, 5, weird=Weird(), nested={"a": {"b": {"c": list(range(10))}}})
    assert Service.helper("\x00nul") == "\x00nul"
    assert lg.flush(10)
    method, static = sorted(rows(db), key=lambda r: r["meta"]["span"]["name"])
    inp = method["meta"]["span"]["input"]
    assert set(inp) == {"doc", "extra", "weird", "nested"}  # no self
    assert inp["doc"].startswith("x" * 50) and inp["doc"].endswith("…[+450 chars]")
    assert inp["extra"] == [1, 2, 3, 4, "…[+1 items]"] and inp["weird"] == "<Weird>"
    assert inp["nested"] == {"a": {"b": {"c": [0, 1, 2, 3, "…[+6 items]"]}}}
    assert method["meta"]["span"]["output"] == {"nan": "nan", "bytes": "<2 bytes>", "set": [1]}
    assert static["query"] == "\ufffdnul"


def test_chat_kind_spans_are_chat_interactions_and_take_feedback(lg, db):
    @tuneloop.trace(kind="chat", user_id="ann", session_id="s1")
    def chat(messages, temperature=0.2):
        return "Paris"

    @tuneloop.trace(kind="chat")
    def ask(question):
        return "4"

    chat([{"role": "system", "content": "be brief"}, {"role": "user", "content": "Capital of France?"}],
         temperature=0.5)
    chat_id = tuneloop.last_interaction_id()
    ask("2+2?")
    with tuneloop.trace("step") as span:
        span.update(user_id="bob", model="m1", prompt_tokens=3, completion_tokens=1, cost=0.01)
    lg.record_feedback(chat_id, feedback=1)
    span.record_feedback(value=4, kind="rating")
    assert lg.flush(10)
    [c] = rows(db, id=chat_id)
    assert (c["kind"], c["query"], c["response"], c["user_id"], c["session_id"]) == \
        ("chat", "Capital of France?", "Paris", "ann", "s1")
    assert c["messages"][0] == {"role": "system", "content": "be brief"}
    assert c["meta"]["span"]["input"] == {"temperature": 0.5}  # messages are in their own column
    [a] = rows(db, query="2+2?")
    assert a["kind"] == "chat" and a["response"] == "4"
    [s] = rows(db, id=span.interaction_id)
    assert (s["user_id"], s["model"], s["prompt_tokens"], s["completion_tokens"], s["cost"]) == \
        ("bob", "m1", 3, 1, 0.01)
    fb = {r["interaction_id"]: (r["kind"], r["value"]) for r in db.fetch_all(sa.select(F))}
    assert fb == {chat_id: ("thumbs", 1.0), span.interaction_id: ("rating", 4.0)}
    assert statistics(db)["total"] == 2 and statistics(db)["positive_rate"] == 1.0


def test_decorator_forms_keep_the_function_signature():
    def plain(a, b=1):
        """doc"""

    async def coro():
        pass

    async def agen():
        yield

    for traced in (tuneloop.trace(plain), tuneloop.trace()(plain), tuneloop.trace("x")(plain)):
        assert traced.__name__ == "plain" and traced.__doc__ == "doc" and traced.__wrapped__ is plain
        assert str(inspect.signature(traced)) == "(a, b=1)"
    assert inspect.iscoroutinefunction(tuneloop.trace(coro))
    assert inspect.isasyncgenfunction(tuneloop.trace(agen))
    with pytest.raises(ConfigError, match="kind"):
        tuneloop.trace(kind="")
    with pytest.raises(ConfigError, match="max_chars"):
        tuneloop.configure_tracing(max_chars=0)
    with pytest.raises(ConfigError, match="not a tracing option"):
        tuneloop.configure_tracing(max_char=10)


# ---------------------------------------------------------------- never in the way
def test_a_traced_call_does_no_io_while_the_database_is_locked(lg, db):
    @tuneloop.trace
    def fast(i):
        return i

    with write_lock(db):  # the writer thread is stuck behind this lock
        t0 = time.perf_counter()
        for i in range(200):
            fast(i)
        took = time.perf_counter() - t0
        assert rows(db) == []  # nothing written yet
    assert took < 1.0, f"200 traced calls took {took:.3f}s with the store locked"
    assert lg.flush(30)
    assert len(rows(db)) == 200


def test_logging_failures_never_reach_the_caller(lg, db, caplog):
    @tuneloop.trace(user_id="u" * 300)  # longer than the column: log() refuses the row
    def refused():
        return "still answers"

    @tuneloop.trace(logger=object())  # not a logger at all
    def nowhere():
        return "still answers"

    @tuneloop.trace
    def weird_io(x):
        return Weird()

    assert refused() == nowhere() == "still answers"
    assert isinstance(weird_io(Weird()), Weird)
    assert lg.flush(10)  # the row of `refused` is built, and refused, on the writer thread
    assert spans._state.failed == 2
    assert "was not logged" in caplog.text and "user_id" in caplog.text
    [row] = rows(db)
    assert row["response"] == "<Weird>" and row["query"] == "<Weird>"


def test_tracing_off_runs_functions_bare(lg, db):
    tuneloop.configure_tracing(enabled=False)

    @tuneloop.trace
    def f(x):
        return x + 1

    with tuneloop.trace("block") as span:
        span.set_output("ignored")
    assert f(1) == 2 and span.interaction_id is None
    assert lg.flush(10) and rows(db) == []


# ---------------------------------------------------------------- where spans go
def test_default_logger_opens_in_the_background_and_keeps_early_spans(db, keys_for_remote, monkeypatch,
                                                                       tmp_path):
    """No logger configured: $TUNELOOP_ENDPOINT names a real server; spans finished before
    the logger is open are kept and delivered."""
    url, key = keys_for_remote
    monkeypatch.setenv(tracing.ENDPOINT_ENV, url)
    monkeypatch.setenv("TUNELOOP_API_KEY", key)
    monkeypatch.setenv("TUNELOOP_SPOOL_DIR", str(tmp_path))

    @tuneloop.trace
    def outer():
        inner()
        return "ok"

    @tuneloop.trace(kind="retrieval")
    def inner():
        return ["d1"]

    t0 = time.perf_counter()
    for _ in range(5):
        outer()
    assert time.perf_counter() - t0 < 0.5  # opening the logger happens elsewhere
    wait_until(lambda: spans._state.logger is not None, what="the default logger")
    logger = spans._state.logger
    try:
        assert logger.flush(20)
        got = rows(db)
        assert len(got) == 10
        assert {r["kind"] for r in got} == {"span"}
        children = [r for r in got if r["parent_id"] is not None]
        assert len(children) == 5 and all(r["meta"]["span"]["kind"] == "retrieval" for r in children)
    finally:
        logger.close()


@pytest.fixture
def keys_for_remote(db):
    from tuneloop.server.app import create_app
    from tuneloop.server.keys import create_key

    key = create_key(db, "ingest").secret
    with LiveServer(create_app(db=db)) as server:
        yield server.url, key


def test_spans_from_threads_join_the_tree_with_a_copied_context(lg, db):
    import contextvars

    @tuneloop.trace
    def work(i):
        return i

    @tuneloop.trace(name="fan-out")
    def fan_out():
        threads = [threading.Thread(target=contextvars.copy_context().run, args=(work, i)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    fan_out()
    assert lg.flush(10)
    tree = trace_tree(db, tuneloop.last_interaction_id())
    assert len(tree["children"]) == 3


# ---------------------------------------------------------------- public surface
def test_public_api_and_a_light_import():
    import subprocess
    import sys

    from tuneloop.capture.records import INTERACTION_COLUMNS

    for name in ("trace", "wrap_openai", "configure_tracing", "current_span", "last_interaction_id",
                 "TraceConfig"):
        assert name in tuneloop.__all__ and getattr(tuneloop, name).__name__ == name
    code = ("import sys, tuneloop; tuneloop.trace; tuneloop.wrap_openai; tuneloop.configure_tracing; "
            "print(sorted(m for m in ('torch', 'numpy', 'scipy', 'openai', 'opentelemetry', 'fastapi') "
            "if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"
    span = spans.start_span("x", logger=None)
    span.ended = True  # never delivered: only its row is looked at
    assert list(span.row()) == list(INTERACTION_COLUMNS)  # every column, in the writer's order
