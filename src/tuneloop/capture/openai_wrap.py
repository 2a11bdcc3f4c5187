"""``wrap_openai(client)``: log every chat completion of an existing OpenAI client.

    import openai, tuneloop

    client = tuneloop.wrap_openai(openai.OpenAI(), logger=tuneloop.UsageLogger(db_path="usage.db"))
    r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    r.tuneloop_interaction_id            # the logged interaction: send feedback to it
    logger.record_feedback(r.tuneloop_interaction_id, feedback=1)

    stream = client.chat.completions.create(model=..., messages=..., stream=True)
    stream.tuneloop_interaction_id       # known before the first chunk
    for chunk in stream: ...             # chunks pass through untouched; logged at the end

Sync and async clients (``openai.OpenAI``, ``openai.AsyncOpenAI``, Azure ones alike), plain
and streaming calls. Each call becomes one chat interaction: the model asked for, the
messages, the answer (or the tool calls, as JSON), prompt and completion tokens (from
``usage``; a stream has them only with ``stream_options={"include_usage": True}``, else the
store estimates), latency (to the end of the stream; ``meta.ttft_ms`` to its first chunk),
sampling parameters (``meta.params``) and errors (``status="error"``; the exception is
re-raised unchanged). Inside a ``@trace`` span the call is that span's child, and it takes
the span's ``user_id``/``session_id`` (else the request's ``user``). The id is also
:func:`tuneloop.last_interaction_id` right after the call. Logging only queues a row for
the logger's writer thread: no I/O is added to the call, and logging failures never reach it.

The client is patched in place (and returned): ``client.chat.completions.create``, also
through ``with_raw_response`` (a raw response is parsed, which the SDK caches) and on
clients made by ``client.with_options(...)``. Not logged: ``.parse()``, ``.stream()`` and
``with_streaming_response``. Pointing a wrapped client at tuneloop's own gateway logs each
call twice (the gateway logs it too): there, use the gateway's response id for feedback.
"""
from __future__ import annotations

import functools
import inspect
import time
from typing import Any

from tuneloop.capture.jsonsafe import jsonable
from tuneloop.capture.spans import Span, _state, start_span

__all__ = ["wrap_openai", "TracedStream", "TracedAsyncStream"]

_NOT_PARAMS = {"messages", "model", "stream", "extra_headers", "extra_query", "extra_body", "timeout", "user"}
_MARK = "__tuneloop_wrapped__"
_NO_PARTS: dict = {}  # never written: a plain (not streamed) call has no parts


def wrap_openai(client: Any, logger: Any = None) -> Any:
    """Log every ``client.chat.completions.create`` call as an interaction; returns ``client``.

    ``logger``: the :class:`~tuneloop.capture.UsageLogger` to log to (default: the enclosing
    span's, else the one of :func:`tuneloop.configure_tracing`, else the default logger).
    Wrapping twice is harmless.
    """
    completions = client.chat.completions
    original = completions.create
    if getattr(original, _MARK, False):
        return client
    completions.create = _wrap_create(original, logger)
    for cached in ("with_raw_response", "with_streaming_response"):
        completions.__dict__.pop(cached, None)  # rebuilt around the wrapped create on next use
    copy = client.copy

    @functools.wraps(copy)
    def copy_wrapped(*args: Any, **kwargs: Any) -> Any:
        return wrap_openai(copy(*args, **kwargs), logger)

    client.copy = client.with_options = copy_wrapped
    return client


def _wrap_create(original: Any, logger: Any) -> Any:
    # AsyncCompletions.create is an async def under a plain decorator: look beneath it.
    if inspect.iscoroutinefunction(original) or inspect.iscoroutinefunction(inspect.unwrap(original)):
        @functools.wraps(original)
        async def acreate(*args: Any, **kwargs: Any) -> Any:
            call = _Call.begin(kwargs, logger)
            if call is None:
                return await original(*args, **kwargs)
            try:
                result = await original(*args, **kwargs)
            except BaseException as exc:
                call.fail(exc)
                raise
            if kwargs.get("stream") is True and hasattr(result, "__aiter__"):
                return TracedAsyncStream(result, call)
            return call.done(result)

        setattr(acreate, _MARK, True)
        return acreate

    @functools.wraps(original)
    def create(*args: Any, **kwargs: Any) -> Any:
        call = _Call.begin(kwargs, logger)
        if call is None:
            return original(*args, **kwargs)
        try:
            result = original(*args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        if kwargs.get("stream") is True and hasattr(result, "__iter__"):
            return TracedStream(result, call)
        return call.done(result)

    setattr(create, _MARK, True)
    return create


def _get(obj: Any, name: str, default: Any = None) -> Any:
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


class _Call:
    """One logged completion: a chat span. The caller's thread only takes what could change
    later (a shallow copy of the messages, the parameters, the response object, stream
    text as it arrives); the logger's writer thread turns that into the row (``_finish``)."""

    __slots__ = ("span", "t0", "ttft_ms", "parts", "tools", "reasons", "usage", "ended", "result", "params",
                 "stream", "closed")

    def __init__(self, span: Span) -> None:
        self.span, self.t0, self.ttft_ms, self.ended = span, time.perf_counter(), None, False
        # A stream's answer as it arrives: text parts, tool-call fragments, finish reason per
        # choice. Only these are kept, not the chunks: holding every chunk object until the
        # writer runs costs the caller more (fresh memory for each) than folding it now.
        self.parts: dict[int, list[str]] = _NO_PARTS  # made for streams only (begin)
        self.tools: dict[int, dict[int, dict[str, Any]]] = _NO_PARTS
        self.reasons: dict[int, str] = _NO_PARTS
        self.usage: Any = None
        self.result: Any = None
        self.params: dict[str, Any] = {}
        self.stream = self.closed = False

    @classmethod
    def begin(cls, kwargs: dict[str, Any], logger: Any) -> "_Call | None":
        model = kwargs.get("model")
        span = start_span(f"chat {model}", "chat", logger=logger, activate=False)
        if span is None:
            return None
        call = cls(span)
        try:
            messages = kwargs.get("messages")
            if messages is not None and messages.__class__ is not list and not isinstance(messages, (list, tuple)):
                kwargs["messages"] = messages = list(messages)  # an iterator would be consumed by the log
            if messages is not None and span.config.capture_input:
                # A copy now: apps append to their messages list right after the call.
                span.messages = [m.copy() if m.__class__ is dict else m for m in messages]
            span.model = model if model.__class__ is str else str(model)
            user = kwargs.get("user")
            if span.user_id is None and user.__class__ is str:
                span.user_id = user
            call.params = {k: v for k, v in kwargs.items()
                           if k not in _NOT_PARAMS and type(v).__name__ not in ("Omit", "NotGiven")}
            if kwargs.get("stream") is True:
                call.streaming()
        except Exception as exc:
            _state.warn("tuneloop wrap_openai: cannot record the request: %s", exc)
        return call

    def streaming(self) -> None:
        if self.parts is _NO_PARTS:
            self.stream, self.parts, self.tools, self.reasons = True, {}, {}, {}

    def fail(self, exc: BaseException) -> None:
        if not self.ended:
            self.ended = True
            self.span.prepare = self._finish
            self.span.end(exc)

    def done(self, result: Any) -> Any:
        """Log a complete response; returns it with ``tuneloop_interaction_id`` attached."""
        try:
            parsed = result
            if not hasattr(result, "choices") and callable(getattr(result, "parse", None)):
                parsed = result.parse()  # with_raw_response: parse() caches, the caller's costs nothing
            self.result = parsed
            _attach(parsed, self.span.id)
            if parsed is not result:
                _attach(result, self.span.id)
        except Exception as exc:
            _state.warn("tuneloop wrap_openai: cannot record the response: %s", exc)
        self.ended = True
        self.span.prepare = self._finish
        self.span.end()
        return result

    def _finish(self) -> None:
        """The row's fields from what the call left (on the writer thread, or before an
        OpenTelemetry export)."""
        span, c = self.span, self.span.config
        if span.messages is not None:
            span.messages = jsonable(span.messages, max_chars=c.max_chars, max_items=10_000, max_nodes=100_000)
        meta = {"provider": "openai", "stream": self.stream,
                "params": jsonable(self.params, max_chars=c.max_chars, max_items=c.max_items)}
        span.metadata = meta if span.metadata is None else {**span.metadata, **meta}
        if self.stream:
            self._stream_summary()
        elif self.result is not None:
            self._response(self.result)

    def _response(self, r: Any) -> None:
        span, meta = self.span, self.span.metadata
        meta["response_id"], meta["response_model"] = _get(r, "id"), _get(r, "model")
        choices = _get(r, "choices") or []
        texts, reasons = [], []
        for choice in choices:
            message = _get(choice, "message")
            texts.append(_message_text(message))
            reasons.append(_get(choice, "finish_reason"))
        meta["finish_reasons"] = [x for x in reasons if x is not None]
        if choices:
            calls = _get(_get(choices[0], "message"), "tool_calls")
            if calls:
                meta["tool_calls"] = jsonable(calls, max_chars=span.config.max_chars)
        if len(texts) > 1:
            meta["choices"] = texts[1:]
        self._usage(_get(r, "usage"))
        if span.capture_output:
            span.output = texts[0] if texts else ""

    def _usage(self, usage: Any) -> None:
        if usage is not None:
            pt, ct = _get(usage, "prompt_tokens"), _get(usage, "completion_tokens")
            self.span.prompt_tokens = pt if isinstance(pt, int) else None
            self.span.completion_tokens = ct if isinstance(ct, int) else None

    # -- streams
    def chunk(self, chunk: Any) -> None:
        """Fold one stream chunk into the answer (called for every chunk: keep it cheap)."""
        if self.ttft_ms is None:
            self.ttft_ms = (time.perf_counter() - self.t0) * 1000.0
            self.result = chunk  # its id and model are the response's
        if chunk.__class__ is dict:
            return self._dict_chunk(chunk)
        usage = chunk.usage  # the SDK's chunk objects: plain attribute reads, no helper calls
        if usage is not None:
            self.usage = usage
        for choice in chunk.choices:
            i, delta, reason = choice.index or 0, choice.delta, choice.finish_reason
            if delta is not None:
                text = delta.content
                if text:
                    parts = self.parts.get(i)
                    if parts is None:
                        parts = self.parts[i] = []
                    parts.append(text)
                if delta.tool_calls:
                    _tool_deltas(self.tools.setdefault(i, {}), delta.tool_calls)
            if reason is not None:
                self.reasons[i] = reason

    def _dict_chunk(self, chunk: dict[str, Any]) -> None:
        if chunk.get("usage") is not None:
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            i, delta = choice.get("index") or 0, choice.get("delta") or {}
            if delta.get("content"):
                self.parts.setdefault(i, []).append(delta["content"])
            if delta.get("tool_calls"):
                _tool_deltas(self.tools.setdefault(i, {}), delta["tool_calls"])
            if choice.get("finish_reason") is not None:
                self.reasons[i] = choice["finish_reason"]

    def stream_end(self, exc: BaseException | None = None, closed: bool = False) -> None:
        if self.ended:
            return
        self.ended, self.closed = True, closed
        self.span.prepare = self._finish
        self.span.end(exc)

    def _stream_summary(self) -> None:
        """The stream's answer into the row: text per choice, tool calls, finish reasons, usage."""
        span, meta = self.span, self.span.metadata
        parts, tools, reasons = self.parts, self.tools, self.reasons
        self._usage(self.usage)
        if self.result is not None:
            meta["response_id"], meta["response_model"] = _get(self.result, "id"), _get(self.result, "model")
        meta["ttft_ms"], meta["finish_reasons"] = self.ttft_ms, [reasons[i] for i in sorted(reasons)]
        if self.closed:
            meta["closed_early"] = True
        texts = ["".join(parts.get(i, ())) for i in sorted(set(parts) | set(tools) | {0})]
        if tools.get(0):
            meta["tool_calls"] = [tools[0][k] for k in sorted(tools[0])]
            if not texts[0]:
                texts[0] = _tool_text(meta["tool_calls"])
        if len(texts) > 1:
            meta["choices"] = texts[1:]
        if span.capture_output:
            span.output = texts[0]


def _tool_deltas(acc: dict[int, dict[str, Any]], calls: Any) -> None:
    """Fold streamed tool-call fragments (by index) into whole calls."""
    for call in calls:
        slot = acc.setdefault(_get(call, "index", 0) or 0, {"id": None, "type": "function",
                                                            "function": {"name": "", "arguments": ""}})
        if _get(call, "id"):
            slot["id"] = _get(call, "id")
        fn = _get(call, "function")
        if fn is not None:
            slot["function"]["name"] += _get(fn, "name") or ""
            slot["function"]["arguments"] += _get(fn, "arguments") or ""


def _attach(obj: Any, interaction_id: str) -> None:
    # Straight into __dict__, past pydantic: the id is readable as an attribute, and
    # model_dump()/to_json() stay exactly what the API sent.
    try:
        object.__setattr__(obj, "tuneloop_interaction_id", interaction_id)
    except Exception:
        pass


def _tool_text(calls: Any) -> str:
    from tuneloop.capture.records import encode_json

    return encode_json([{"name": _get(_get(c, "function"), "name"), "arguments": _get(_get(c, "function"), "arguments")}
                        for c in calls])


def _message_text(message: Any) -> str:
    """The answer's text; for a tool-calling answer without text, the calls as JSON."""
    if message is None:
        return ""
    content = _get(message, "content")
    if isinstance(content, str) and content:
        return content
    calls = _get(message, "tool_calls")
    if calls:
        return _tool_text(calls)
    refusal = _get(message, "refusal")
    return refusal if isinstance(refusal, str) else ""


def _fold(stream: Any, call: _Call) -> Any:
    """Hand each chunk on, folding it into the call's answer; end the call with the stream."""
    fold = call.chunk
    try:
        for chunk in stream:
            if not call.ended:
                fold(chunk)
            yield chunk
    except GeneratorExit:  # closed, or dropped, before the end
        call.stream_end(closed=True)
        raise
    except BaseException as exc:
        call.stream_end(exc)
        raise
    call.stream_end()


async def _afold(stream: Any, call: _Call) -> Any:
    fold = call.chunk
    try:
        async for chunk in stream:
            if not call.ended:
                fold(chunk)
            yield chunk
    except GeneratorExit:
        call.stream_end(closed=True)
        raise
    except BaseException as exc:
        call.stream_end(exc)
        raise
    call.stream_end()


class TracedStream:
    """A sync stream of chunks, passed through untouched; the interaction is logged at its end
    (exhausted, failed, closed, left in a ``with`` block, or garbage-collected). Every other
    attribute is the stream's own (``response``, ...).

    Iterating it runs a generator (resumed in C, cheaper per chunk than a Python
    ``__next__``) that folds each chunk's text into the answer and hands the chunk on;
    dropping an unfinished stream logs it as closed early.
    """

    def __init__(self, stream: Any, call: _Call) -> None:
        call.streaming()
        self._stream, self._call = stream, call
        self.tuneloop_interaction_id = call.span.id
        self._chunks = _fold(stream, call)  # not a method: the generator must not hold self (a cycle)

    def __iter__(self) -> Any:
        return self._chunks

    def __next__(self) -> Any:
        return next(self._chunks)

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._chunks.close()
            self._call.stream_end(closed=True)

    def __enter__(self) -> "TracedStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        stream = self.__dict__.get("_stream")
        if stream is None:
            raise AttributeError(name)
        return getattr(stream, name)

    def __del__(self) -> None:  # never iterated: the generator has no frame to end the span
        call = self.__dict__.get("_call")
        if call is not None and not call.ended:
            call.stream_end(closed=True)


class TracedAsyncStream:
    """:class:`TracedStream` for ``openai.AsyncOpenAI``: ``async for``, ``async with``."""

    def __init__(self, stream: Any, call: _Call) -> None:
        call.streaming()
        self._stream, self._call = stream, call
        self.tuneloop_interaction_id = call.span.id
        self._chunks = _afold(stream, call)

    def __aiter__(self) -> Any:
        return self._chunks

    async def __anext__(self) -> Any:
        return await self._chunks.__anext__()

    async def close(self) -> None:
        try:
            await self._stream.close()
        finally:
            await self._chunks.aclose()
            self._call.stream_end(closed=True)

    aclose = close

    async def __aenter__(self) -> "TracedAsyncStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        stream = self.__dict__.get("_stream")
        if stream is None:
            raise AttributeError(name)
        return getattr(stream, name)

    def __del__(self) -> None:
        call = self.__dict__.get("_call")
        if call is not None and not call.ended:
            call.stream_end(closed=True)
