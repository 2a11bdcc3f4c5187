"""The ``openai`` backend: any OpenAI-compatible upstream (vLLM, Ollama, OpenAI, a gateway).

One pooled ``httpx`` client per backend, timeouts on every call, retries with exponential
backoff on 429, 5xx and connection errors (honouring ``Retry-After``), and upstream failures
surfaced as :class:`~tuneloop.errors.UpstreamError` (HTTP 502) or
:class:`~tuneloop.errors.UpstreamTimeout` (HTTP 504) carrying the upstream's own message.

>>> b = OpenAIBackend("http://127.0.0.1:8000/v1", api_key="sk-...", model="my-model")  # doctest: +SKIP
>>> b.chat([{"role": "user", "content": "hi"}], max_tokens=16).text                   # doctest: +SKIP
'Hello!'
>>> "".join(b.stream([{"role": "user", "content": "hi"}]))                             # doctest: +SKIP
'Hello!'
"""
from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tuneloop.errors import UpstreamError, UpstreamTimeout
from tuneloop.models.base import Completion, Message

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_PASS_PARAMS = ("max_tokens", "temperature", "top_p", "seed", "stop", "user", "n", "presence_penalty",
                "frequency_penalty", "logit_bias", "response_format", "tools", "tool_choice", "max_completion_tokens")


def upstream_message(response: httpx.Response) -> str:
    """The upstream's own error text: OpenAI's ``{"error": {"message"}}``, a ``detail``, or the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if body.get("detail"):
            return str(body["detail"])
        if body.get("message"):
            return str(body["message"])
    return json.dumps(body)[:500]


def parse_sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Parse ``data:`` events of a server-sent-event stream into JSON objects, until ``[DONE]``.

    >>> list(parse_sse(iter(['data: {"a": 1}', '', ': keep-alive', 'data: [DONE]'])))
    [{'a': 1}]
    """
    data: list[str] = []
    for line in lines:
        if line.startswith(":"):
            continue
        if line.startswith("data:"):
            data.append(line[5:].lstrip())
            continue
        if line.strip() == "" and data:
            payload, data = "\n".join(data), []
            if payload.strip() == "[DONE]":
                return
            yield json.loads(payload)
    if data and "\n".join(data).strip() != "[DONE]":
        yield json.loads("\n".join(data))


class OpenAIBackend:
    """Chat completions against an OpenAI-compatible ``base_url`` (ending in ``/v1``)."""

    def __init__(self, base_url: str, api_key: str | None = None, model: str = "", *, timeout: float = 60.0,
                 connect_timeout: float = 5.0, retries: int = 2, backoff_s: float = 0.25, name: str | None = None,
                 max_connections: int = 32, defaults: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.model, self.retries, self.backoff_s = model, max(0, int(retries)), backoff_s
        self.name = name or model or self.base_url
        self.defaults = dict(defaults or {})
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if api_key:
            hdrs["Authorization"] = f"Bearer {api_key}"
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._client = httpx.Client(base_url=self.base_url, headers=hdrs, timeout=self.timeout,
                                    limits=httpx.Limits(max_connections=max_connections,
                                                        max_keepalive_connections=max_connections))

    # -- request plumbing --------------------------------------------------------------------
    def _body(self, messages: Sequence[Message], params: dict[str, Any], stream: bool) -> dict[str, Any]:
        p = {**self.defaults, **params}
        if "max_new_tokens" in p and "max_tokens" not in p:
            p["max_tokens"] = p.pop("max_new_tokens")
        body: dict[str, Any] = {"model": p.pop("model", None) or self.model, "messages": list(messages)}
        body.update({k: p[k] for k in _PASS_PARAMS if p.get(k) is not None})
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def _sleep_before_retry(self, attempt: int, response: httpx.Response | None) -> None:
        delay = self.backoff_s * (2 ** attempt) * (0.5 + random.random() / 2)
        if response is not None and response.headers.get("retry-after"):
            try:
                delay = max(delay, min(float(response.headers["retry-after"]), 30.0))
            except ValueError:
                pass
        time.sleep(delay)

    def _send(self, body: dict[str, Any], stream: bool) -> httpx.Response:
        """POST with retries; return a 2xx response (streaming: headers read, body not yet)."""
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            response = None
            try:
                request = self._client.build_request("POST", "/chat/completions", json=body)
                response = self._client.send(request, stream=stream)
                if response.status_code < 400:
                    return response
                if stream:
                    response.read()
                last = UpstreamError(f"upstream {self.name} answered {response.status_code}: "
                                     f"{upstream_message(response)}", upstream_status=response.status_code)
                response.close()
                if response.status_code not in RETRY_STATUS:
                    raise last
            except httpx.TimeoutException as exc:
                last = UpstreamTimeout(f"upstream {self.name} timed out after {self.timeout.read}s: {exc}")
            except httpx.TransportError as exc:
                last = UpstreamError(f"cannot reach upstream {self.name} at {self.base_url}: {exc}")
            if attempt < self.retries:
                self._sleep_before_retry(attempt, response)
        assert last is not None
        raise last

    # -- the ModelBackend protocol -----------------------------------------------------------
    def chat(self, messages: Sequence[Message], **params: Any) -> Completion:
        response = self._send(self._body(messages, params, stream=False), stream=False)
        try:
            data = response.json()
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise UpstreamError(f"upstream {self.name} sent an unreadable completion: {response.text[:300]}") from exc
        usage = data.get("usage") or {}
        return Completion(text=text, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                          completion_tokens=int(usage.get("completion_tokens") or 0),
                          finish_reason=choice.get("finish_reason") or "stop",
                          model=data.get("model") or self.model, extra={"id": data.get("id")})

    def chat_batch(self, conversations: Sequence[Sequence[Message]], **params: Any) -> list[Completion]:
        """Concurrent requests over the pooled client (the upstream batches them)."""
        if len(conversations) <= 1:
            return [self.chat(c, **params) for c in conversations]
        with ThreadPoolExecutor(max_workers=min(8, len(conversations))) as ex:
            return list(ex.map(lambda c: self.chat(c, **params), conversations))

    def stream(self, messages: Sequence[Message], **params: Any) -> Iterator[str]:
        response = self._send(self._body(messages, params, stream=True), stream=True)
        try:
            for event in parse_sse(response.iter_lines()):
                if isinstance(event, dict) and event.get("error"):
                    err = event["error"]
                    raise UpstreamError(f"upstream {self.name} failed mid-stream: "
                                        f"{err.get('message') if isinstance(err, dict) else err}")
                for choice in event.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        yield piece
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"upstream {self.name} stalled mid-stream: {exc}") from exc
        except httpx.TransportError as exc:
            raise UpstreamError(f"upstream {self.name} dropped the stream: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise UpstreamError(f"upstream {self.name} sent a malformed stream event: {exc}") from exc
        finally:
            response.close()

    def models(self) -> list[str]:
        """Model ids the upstream lists at ``GET /models``."""
        try:
            response = self._client.get("/models")
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"upstream {self.name} timed out: {exc}") from exc
        except httpx.TransportError as exc:
            raise UpstreamError(f"cannot reach upstream {self.name}: {exc}") from exc
        if response.status_code >= 400:
            raise UpstreamError(f"upstream {self.name} answered {response.status_code}: {upstream_message(response)}")
        return [m.get("id", "") for m in response.json().get("data", [])]

    def close(self) -> None:
        self._client.close()


__all__ = ["OpenAIBackend", "parse_sse", "upstream_message", "RETRY_STATUS"]
