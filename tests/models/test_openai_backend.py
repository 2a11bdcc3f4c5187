"""The openai backend against a real HTTP server on loopback (no mocks of httpx)."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tuneloop.errors import UpstreamError, UpstreamTimeout
from tuneloop.models.openai_backend import OpenAIBackend, parse_sse


class _Upstream(BaseHTTPRequestHandler):
    """Behaves by the requested model name: ok, slow, fail500, bad400, flaky, midstream."""

    protocol_version = "HTTP/1.1"
    calls: dict[str, int] = {}
    bodies: list[dict] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _json(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _completion(self, body: dict) -> dict:
        text = "echo: " + body["messages"][-1]["content"]
        return {"id": "cmpl-1", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}

    def _stream(self, body: dict, fail_midway: bool = False) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(obj) -> None:
            payload = f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode()
            self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            self.wfile.flush()

        for word in ["Hel", "lo", " world"]:
            send({"choices": [{"index": 0, "delta": {"content": word}}]})
            if fail_midway:
                send({"error": {"message": "model crashed"}})
                break
        send({"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}})
        send("[DONE]")
        self.wfile.write(b"0\r\n\r\n")

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        model = body["model"]
        _Upstream.calls[model] = _Upstream.calls.get(model, 0) + 1
        _Upstream.bodies.append({"auth": self.headers.get("Authorization"), **body})
        if model == "slow":
            time.sleep(1.5)
        if model == "fail500":
            return self._json(500, {"error": {"message": "CUDA out of memory", "type": "server_error"}})
        if model == "bad400":
            return self._json(400, {"error": {"message": "max_tokens is too large"}})
        if model == "flaky" and _Upstream.calls[model] == 1:
            return self._json(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
        if body.get("stream"):
            return self._stream(body, fail_midway=(model == "midstream"))
        self._json(200, self._completion(body))

    def do_GET(self) -> None:  # noqa: N802
        self._json(200, {"object": "list", "data": [{"id": "ok"}, {"id": "slow"}]})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # the client hung up on "slow": expected
        pass


@pytest.fixture(scope="module")
def upstream():
    server = _Server(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def backend(url: str, model: str, **kw) -> OpenAIBackend:
    return OpenAIBackend(url, api_key="sk-test", model=model, backoff_s=0.01, **kw)


def test_chat_returns_text_usage_and_sends_auth(upstream):
    b = backend(upstream, "ok")
    out = b.chat([{"role": "user", "content": "hi"}], max_tokens=7, temperature=0.0)
    assert out.text == "echo: hi" and out.prompt_tokens == 5 and out.completion_tokens == 3
    assert out.finish_reason == "stop" and out.model == "ok"
    sent = _Upstream.bodies[-1]
    assert sent["auth"] == "Bearer sk-test" and sent["max_tokens"] == 7 and sent["temperature"] == 0.0
    b.close()


def test_chat_batch_keeps_order(upstream):
    b = backend(upstream, "ok")
    outs = b.chat_batch([[{"role": "user", "content": str(i)}] for i in range(10)])
    assert [o.text for o in outs] == [f"echo: {i}" for i in range(10)]
    b.close()


def test_stream_parses_sse_chunks(upstream):
    b = backend(upstream, "ok")
    assert list(b.stream([{"role": "user", "content": "hi"}])) == ["Hel", "lo", " world"]
    b.close()


def test_500_raises_upstream_error_with_the_upstreams_message_after_retries(upstream):
    b = backend(upstream, "fail500", retries=2)
    before = _Upstream.calls.get("fail500", 0)
    with pytest.raises(UpstreamError, match="CUDA out of memory") as info:
        b.chat([{"role": "user", "content": "hi"}])
    assert info.value.status == 502 and info.value.details["upstream_status"] == 500
    assert _Upstream.calls["fail500"] - before == 3  # 1 try + 2 retries
    with pytest.raises(UpstreamError, match="CUDA out of memory"):
        list(b.stream([{"role": "user", "content": "hi"}]))
    b.close()


def test_400_is_not_retried(upstream):
    b = backend(upstream, "bad400", retries=3)
    with pytest.raises(UpstreamError, match="max_tokens is too large"):
        b.chat([{"role": "user", "content": "hi"}])
    assert _Upstream.calls["bad400"] == 1
    b.close()


def test_429_is_retried_then_succeeds(upstream):
    b = backend(upstream, "flaky", retries=1)
    assert b.chat([{"role": "user", "content": "x"}]).text == "echo: x"
    assert _Upstream.calls["flaky"] == 2
    b.close()


def test_timeout_raises_upstream_timeout(upstream):
    b = backend(upstream, "slow", timeout=0.3, retries=0)
    t0 = time.perf_counter()
    with pytest.raises(UpstreamTimeout) as info:
        b.chat([{"role": "user", "content": "hi"}])
    assert info.value.status == 504 and time.perf_counter() - t0 < 1.4
    b.close()


def test_error_event_mid_stream(upstream):
    b = backend(upstream, "midstream")
    got = []
    with pytest.raises(UpstreamError, match="model crashed"):
        for piece in b.stream([{"role": "user", "content": "hi"}]):
            got.append(piece)
    assert got == ["Hel"]
    b.close()


def test_unreachable_upstream():
    b = OpenAIBackend("http://127.0.0.1:9/v1", model="m", retries=1, backoff_s=0.01, connect_timeout=0.5)
    with pytest.raises(UpstreamError, match="cannot reach upstream"):
        b.chat([{"role": "user", "content": "hi"}])
    b.close()


def test_models_lists_ids(upstream):
    b = backend(upstream, "ok")
    assert b.models() == ["ok", "slow"]
    b.close()


def test_parse_sse_multiline_and_comments():
    lines = iter([": ping", "data: {\"a\":", "data: 1}", "", "data: [DONE]", "", "data: {\"never\": 1}"])
    assert list(parse_sse(lines)) == [{"a": 1}]
