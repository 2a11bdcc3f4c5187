"""The OpenAI-compatible gateway: ``POST /v1/chat/completions`` and ``GET /v1/models``.

>>> from openai import OpenAI                                  # doctest: +SKIP
>>> client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="tl_ingest_...")
>>> r = client.chat.completions.create(model="champion", messages=[{"role": "user", "content": "Hi"}])
>>> r.id        # the interaction id: POST /v1/feedback {"id": r.id, "rating": 5}

Per request:
1. pick a route: ``router.route(model, user)`` (user from the ``user`` field or the
   ``X-Tuneloop-User`` header) names the version, experiment, arm and backend;
2. call the backend in a worker thread (streaming: one chunk per SSE event, OpenAI's shapes);
3. log the interaction through the capture queue without waiting on the database;
4. answer with the interaction id as ``id`` and in the ``X-Tuneloop-Interaction-Id`` header;
5. if the route has a shadow, ask it the same question on the shadow pool, after the
   answer and independent of it, and log it as arm ``shadow``.

The router protocol is what the experiments package implements over the registry;
:class:`StaticRouter` serves a fixed ``{model name: backend}`` mapping.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import pydantic
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from tuneloop.capture.records import check_messages, estimate_tokens
from tuneloop.errors import NotFoundError, TuneloopError, UpstreamError, UpstreamTimeout, ValidationError
from tuneloop.ids import new_id
from tuneloop.models.base import Completion, ModelBackend
from tuneloop.server.auth import SECURITY, requires
from tuneloop.server.ingest import parse_json

__all__ = ["Route", "Router", "StaticRouter", "LazyRouter", "Gateway", "ChatRequest", "router"]

log = logging.getLogger("tuneloop.gateway")
router = APIRouter(prefix="/v1", tags=["gateway"])
USER_HEADER, SESSION_HEADER = "x-tuneloop-user", "x-tuneloop-session"
ID_HEADER = "X-Tuneloop-Interaction-Id"


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes: the version that answers, and the shadow that also answers."""

    version_id: str
    backend: ModelBackend
    experiment_id: str | None = None
    arm: str | None = None
    shadow: tuple[str, ModelBackend] | None = None  # (version_id, backend)


@runtime_checkable
class Router(Protocol):
    """Picks a route per request; ``models()`` lists the names clients may ask for.

    ``route`` runs in a worker thread together with the backend call, so it may read the
    database, but it runs on every request: cache what it can. Raise
    :class:`~tuneloop.errors.NotFoundError` for a model that does not exist.
    """

    def route(self, request_model: str, user: str | None) -> Route: ...

    def models(self) -> list[str]: ...


class StaticRouter:
    """A fixed mapping of model names to backends (no experiment).

    >>> from tuneloop.models.scripted import ScriptedBackend
    >>> r = StaticRouter({"m": ScriptedBackend({}, default="hi")})
    >>> r.route("m", None).version_id
    'm'
    """

    def __init__(self, backends: Mapping[str, ModelBackend], *,
                 shadows: Mapping[str, tuple[str, ModelBackend]] | None = None) -> None:
        self.backends, self.shadows = dict(backends), dict(shadows or {})

    def route(self, request_model: str, user: str | None) -> Route:
        backend = self.backends.get(request_model)
        if backend is None:
            names = ", ".join(sorted(self.backends)) or "none configured"
            raise NotFoundError(f"model {request_model!r} does not exist (models: {names})",
                                param="model", model=request_model)
        return Route(version_id=request_model, backend=backend, shadow=self.shadows.get(request_model))

    def models(self) -> list[str]:
        return sorted(self.backends)


class LazyRouter:
    """A router built on first use, off the event loop (the registry router imports the
    experiments' statistics stack, seconds that an ingestion-only server need not pay)."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory, self._router, self._lock = factory, None, threading.Lock()

    def get(self) -> Any:
        if self._router is None:
            with self._lock:
                if self._router is None:
                    self._router = self._factory()
        return self._router

    def route(self, request_model: str, user: str | None) -> Route:
        return self.get().route(request_model, user)

    def models(self) -> list[str]:
        return list(self.get().models())


class ChatRequest(BaseModel):
    """The OpenAI chat-completions body; fields the backends do not use are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    user: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1, description="Only 1 is supported.")

    def params(self) -> dict[str, Any]:
        out = {"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed,
               "max_tokens": self.max_tokens or self.max_completion_tokens,
               "stop": [self.stop] if isinstance(self.stop, str) else self.stop}
        return {k: v for k, v in out.items() if v is not None}


def _text(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type", "text") == "text")


def _backend_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    # Backends take plain-text contents; the log keeps the messages exactly as sent.
    return [{**m, "content": _text(m.get("content"))} for m in messages]


def _upstream_error(exc: Exception, version_id: str) -> TuneloopError:
    if isinstance(exc, TuneloopError):
        return exc
    if isinstance(exc, TimeoutError) or "timeout" in type(exc).__name__.lower():
        return UpstreamTimeout(f"model {version_id!r} timed out: {exc}", version_id=version_id)
    return UpstreamError(f"model {version_id!r} failed: {type(exc).__name__}: {exc}", version_id=version_id)


# ---------------------------------------------------------------- the gateway object
class Gateway:
    """Routes requests, calls backends, and logs interactions through one capture queue.

    ``logger`` defaults to a :class:`tuneloop.capture.UsageLogger` on the same database,
    made on first use; the gateway owns it and closes (flushes) it with :meth:`close`.
    Shadows run on their own small pool, so a slow shadow can never take a worker
    thread that a user's request needs; when ``max_pending_shadows`` are waiting, more
    are dropped and counted in ``shadow_dropped``.
    """

    def __init__(self, db: Any, router: Any, *, logger: Any = None, shadow_workers: int = 4,
                 max_pending_shadows: int = 256) -> None:
        self.db, self.router = db, router
        self._logger, self._owns_logger = logger, logger is None
        self._lock = threading.Lock()
        self._shadow_pool = ThreadPoolExecutor(shadow_workers, thread_name_prefix="tuneloop-shadow")
        self.max_pending_shadows = max_pending_shadows
        self.pending_shadows = 0
        self.shadow_dropped = 0

    @property
    def logger(self) -> Any:
        if self._logger is None:
            with self._lock:
                if self._logger is None:
                    from tuneloop.capture import UsageLogger

                    # Same Database object: one engine, and in-memory SQLite works too.
                    self._logger = UsageLogger(db=self.db)
        return self._logger

    def models(self) -> list[str]:
        models = getattr(self.router, "models", None)
        return list(models()) if callable(models) else []

    def log(self, **fields: Any) -> None:
        """Queue one interaction row; never waits on the database, never raises."""
        try:
            self.logger.log(**fields)
        except Exception:  # a logging failure must not fail the user's request
            log.exception("could not queue interaction %s", fields.get("id"))

    def log_answer(self, iid: str, req: ChatRequest, route_: Route, user: str | None, session: str | None,
                   text: str, latency_ms: float, *, prompt_tokens: int | None, completion_tokens: int | None,
                   arm: str | None = None, version_id: str | None = None, error: str | None = None,
                   meta: Mapping[str, Any] | None = None) -> None:
        self.log(id=iid, messages=req.messages, response=text, model=req.model,
                 version_id=version_id or route_.version_id, experiment_id=route_.experiment_id,
                 arm=arm or route_.arm, user_id=user, session_id=session, latency_ms=latency_ms,
                 prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 status="error" if error else "ok", error=error,
                 metadata={"source": "gateway", **(meta or {})})

    def submit_shadow(self, iid: str, req: ChatRequest, route_: Route, user: str | None,
                      session: str | None) -> None:
        """Ask the shadow the same question on the shadow pool; drop (and count) when it is full."""
        if route_.shadow is None:
            return
        with self._lock:
            if self.pending_shadows >= self.max_pending_shadows:
                self.shadow_dropped += 1
                return
            self.pending_shadows += 1
        try:
            self._shadow_pool.submit(self._run_shadow, iid, req, route_, user, session)
        except RuntimeError:  # pool shut down
            with self._lock:
                self.pending_shadows -= 1

    def _run_shadow(self, primary_id: str, req: ChatRequest, route_: Route, user: str | None,
                    session: str | None) -> None:
        version_id, backend = route_.shadow  # type: ignore[misc]
        t0 = time.perf_counter()
        text, error, usage = "", None, (None, None)
        try:
            try:
                completion = backend.chat(_backend_messages(req.messages), **req.params())
                text, usage = completion.text, (completion.prompt_tokens, completion.completion_tokens)
            except Exception as exc:
                error = _upstream_error(exc, version_id).message
            self.log_answer(new_id(), req, route_, user, session, text, (time.perf_counter() - t0) * 1000,
                            prompt_tokens=usage[0], completion_tokens=usage[1], arm="shadow",
                            version_id=version_id, error=error, meta={"shadow_of": primary_id})
        finally:  # pending counts until the answer is queued: flush after pending == 0 sees it
            with self._lock:
                self.pending_shadows -= 1

    def close(self) -> None:
        self._shadow_pool.shutdown(wait=True, cancel_futures=True)
        if self._logger is not None and self._owns_logger:
            self._logger.close()


# ---------------------------------------------------------------- request handling
def _parse(body: bytes) -> ChatRequest:
    try:  # pydantic-core parses and checks in one pass
        req = ChatRequest.model_validate_json(body)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid" or not body.strip():
            parse_json(body)  # raises the 422 that says what is wrong with the JSON
        field = ".".join(str(p) for p in first["loc"]) or "body"
        message = "expected a JSON object" if field == "body" else first["msg"]
        raise ValidationError(f"{field}: {message}", field=field, param=field) from None
    check_messages(req.messages)
    return req


def _chunk(iid: str, created: int, model: str, delta: dict[str, Any], finish: str | None,
           usage: dict[str, int] | None = None, with_usage: bool = False) -> bytes:
    body: dict[str, Any] = {"id": iid, "object": "chat.completion.chunk", "created": created, "model": model,
                            "system_fingerprint": None,
                            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    if with_usage:
        body["usage"] = usage
    return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"


def _completion_body(iid: str, created: int, model: str, c: Completion) -> dict[str, Any]:
    return {
        "id": iid, "object": "chat.completion", "created": created, "model": model, "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text, "refusal": None},
                     "logprobs": None, "finish_reason": c.finish_reason or "stop"}],
        "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                  "total_tokens": c.prompt_tokens + c.completion_tokens},
    }


def _headers(iid: str, route_: Route) -> dict[str, str]:
    h = {ID_HEADER: iid, "X-Tuneloop-Version": route_.version_id}
    if route_.arm:
        h["X-Tuneloop-Arm"] = route_.arm
    return h


def _route_and_call(gw: Gateway, req: ChatRequest, user: str | None, call) -> tuple[Route, Any, Exception | None]:
    """Route, then call the backend, in one worker thread (one hop off the event loop).

    A routing error (unknown model) propagates; a backend error is returned with the route,
    so that the failed answer can be logged against the version that failed.
    """
    route_ = gw.router.route(req.model, user)
    try:
        return route_, call(route_.backend), None
    except Exception as exc:
        return route_, None, exc


async def _complete(gw: Gateway, req: ChatRequest, user: str | None, session: str | None) -> Response:
    iid, created, t0 = new_id(), int(time.time()), time.perf_counter()
    messages, params = _backend_messages(req.messages), req.params()
    route_, completion, exc = await run_in_threadpool(_route_and_call, gw, req, user,
                                                      lambda backend: backend.chat(messages, **params))
    if exc is not None:
        err = _upstream_error(exc, route_.version_id)
        gw.log_answer(iid, req, route_, user, session, "", (time.perf_counter() - t0) * 1000,
                      prompt_tokens=None, completion_tokens=None, error=err.message)
        raise err from exc
    gw.log_answer(iid, req, route_, user, session, completion.text, (time.perf_counter() - t0) * 1000,
                  prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens)
    gw.submit_shadow(iid, req, route_, user, session)
    return JSONResponse(_completion_body(iid, created, req.model, completion), headers=_headers(iid, route_))


async def _stream(gw: Gateway, req: ChatRequest, user: str | None, session: str | None) -> Response:
    iid, created, t0 = new_id(), int(time.time()), time.perf_counter()
    with_usage = bool((req.stream_options or {}).get("include_usage"))
    prompt_tokens = estimate_tokens(*(_text(m.get("content")) for m in req.messages))
    messages, params = _backend_messages(req.messages), req.params()

    def start(backend: ModelBackend) -> tuple[Iterator[str], str | None]:
        # Take the first piece before answering, so that an upstream failing at once gets
        # a proper 502/504 instead of a 200 that breaks off.
        pieces = iter(backend.stream(messages, **params))
        return pieces, next(pieces, None)

    route_, started, exc = await run_in_threadpool(_route_and_call, gw, req, user, start)
    if exc is not None:
        err = _upstream_error(exc, route_.version_id)
        gw.log_answer(iid, req, route_, user, session, "", (time.perf_counter() - t0) * 1000,
                      prompt_tokens=prompt_tokens, completion_tokens=None, error=err.message)
        raise err from exc
    pieces, first = started

    async def events():
        parts: list[str] = [] if first is None else [first]
        error, finished = None, False
        try:
            yield _chunk(iid, created, req.model, {"role": "assistant", "content": ""}, None, None, with_usage)
            if first is not None:
                yield _chunk(iid, created, req.model, {"content": first}, None, None, with_usage)
            async for piece in iterate_in_threadpool(pieces):
                parts.append(piece)
                yield _chunk(iid, created, req.model, {"content": piece}, None, None, with_usage)
            yield _chunk(iid, created, req.model, {}, "stop", None, with_usage)
            if with_usage:
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(parts),
                         "total_tokens": prompt_tokens + len(parts)}
                body = {"id": iid, "object": "chat.completion.chunk", "created": created, "model": req.model,
                        "system_fingerprint": None, "choices": [], "usage": usage}
                yield b"data: " + json.dumps(body).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
            finished = True
        except Exception as exc:  # the upstream broke off mid-answer: tell the client in-band
            err = _upstream_error(exc, route_.version_id)
            error = err.message
            payload = {"error": {"message": err.message, "type": type(err).__name__, "code": err.status}}
            yield b"data: " + json.dumps(payload).encode() + b"\n\n"
        finally:
            meta = {} if finished or error else {"disconnected": True}
            gw.log_answer(iid, req, route_, user, session, "".join(parts), (time.perf_counter() - t0) * 1000,
                          prompt_tokens=prompt_tokens, completion_tokens=len(parts), error=error,
                          meta={"stream": True, **meta})
            if finished:
                gw.submit_shadow(iid, req, route_, user, session)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={**_headers(iid, route_), "Cache-Control": "no-cache"})


@router.post("/chat/completions", dependencies=[Depends(requires("ingest"))],
             openapi_extra={**SECURITY, "requestBody": {"required": True, "content": {"application/json": {
                 "schema": ChatRequest.model_json_schema()}}}})
async def chat_completions(request: Request) -> Response:
    """OpenAI chat completions (``stream`` true: server-sent events ending in ``data: [DONE]``)."""
    gw: Gateway = request.app.state.gateway
    req = _parse(await request.body())
    user = req.user or request.headers.get(USER_HEADER)
    session = request.headers.get(SESSION_HEADER)
    for field, value in (("user", user), (SESSION_HEADER, session)):
        if value is not None and len(value) > 255:  # the column's width: refuse now, not lose the log
            raise ValidationError(f"{field}: longer than 255 characters", field=field)
    if req.stream:
        return await _stream(gw, req, user, session)
    return await _complete(gw, req, user, session)


@router.get("/models", dependencies=[Depends(requires("ingest", "read"))], openapi_extra=SECURITY)
async def list_models(request: Request) -> dict[str, Any]:
    """The model names this gateway answers to (OpenAI's list shape)."""
    names = await run_in_threadpool(request.app.state.gateway.models)
    return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "tuneloop"}
                                       for n in names]}
