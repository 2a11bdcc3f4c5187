"""The tuneloop HTTP server: ingestion API, OpenAI-compatible gateway, health, OpenAPI.

>>> app = create_app("sqlite:///:memory:", insecure_dev=True)
>>> from fastapi.testclient import TestClient
>>> TestClient(app).get("/healthz").json()["status"]
'ok'

Routes call the packages and render; they hold no business logic. Every error leaves
through one handler that renders a :class:`tuneloop.errors.TuneloopError` with its
``status`` in OpenAI's error shape (``{"error": {"message", "type", ...}}``), so the
official OpenAI client shows our messages as they are.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import tuneloop
from tuneloop.config import Settings
from tuneloop.errors import AuthError, NotFoundError, TuneloopError, ValidationError
from tuneloop.server.auth import SECURITY_SCHEMES
from tuneloop.server.keys import KeyVerifier
from tuneloop.server.writer import GroupWriter
from tuneloop.store import Database

__all__ = ["create_app", "app_from_env", "PayloadTooLarge", "BodyLimitMiddleware", "SETTINGS_ENV"]

#: JSON settings handed to each worker process by ``tuneloop serve --workers N``.
SETTINGS_ENV = "TUNELOOP_SERVE_SETTINGS"

log = logging.getLogger("tuneloop.server")


class PayloadTooLarge(ValidationError):
    """A request body over ``max_body_bytes`` (HTTP 413); it is never processed."""

    status = 413


# ---------------------------------------------------------------- errors
def _render(exc: TuneloopError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = exc.to_dict()
    error = {"message": exc.message, "type": body.pop("error"), "code": exc.status,
             **{k: v for k, v in body.items() if k != "message"}}
    if isinstance(exc, AuthError) and exc.status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse({"error": error}, status_code=exc.status, headers=headers)


async def _tuneloop_error(request: Request, exc: Exception) -> JSONResponse:
    return _render(exc)  # type: ignore[arg-type]


async def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors()  # type: ignore[attr-defined]
    fields = [".".join(str(p) for p in e["loc"][1:]) or e["loc"][0] for e in errors]
    message = "; ".join(f"{f}: {e['msg']}" for f, e in zip(fields, errors)) or "invalid request"
    return _render(ValidationError(message, field=fields[0] if fields else None))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    status = exc.status_code  # type: ignore[attr-defined]
    if status == 404:
        err: TuneloopError = NotFoundError(f"no route {request.method} {request.url.path}")
    else:
        err = TuneloopError(str(exc.detail))  # type: ignore[attr-defined]
        err.status = status
    return _render(err, headers=getattr(exc, "headers", None))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _render(TuneloopError(f"internal error: {type(exc).__name__}"))


# ---------------------------------------------------------------- body limit
class BodyLimitMiddleware:
    """Answer 413 to a body over ``max_bytes`` before any route sees it.

    A declared ``Content-Length`` over the limit is refused at once; a chunked body is
    counted as it arrives and refused when it crosses the limit. Routes read the whole
    body before they parse or write, so a refused request writes nothing.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _render(self._error(int(value)))(scope, receive, send)
                return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self._error(seen)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except PayloadTooLarge as exc:  # raised past the routes' handler (e.g. by a framework parser)
            if started:
                raise
            await _render(exc)(scope, receive, send)

    def _error(self, size: int) -> PayloadTooLarge:
        return PayloadTooLarge(f"body: {size} bytes is over the limit of {self.max_bytes} bytes "
                               "(max_body_bytes); send smaller batches", field="body", limit=self.max_bytes)


# ---------------------------------------------------------------- app
def _openapi(app: FastAPI, extra_types: tuple) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    components = schema["components"].setdefault("schemas", {})
    for tp in extra_types:  # body types the routes parse themselves (batch or single object)
        spec = TypeAdapter(tp).json_schema(ref_template="#/components/schemas/{model}")
        components.update(spec.pop("$defs", {}))
        components[tp.__name__] = spec
    app.openapi_schema = schema
    return schema


def _registry_router(database: Database, settings: Settings) -> Any:
    """The production router: experiments and the registry decide; built on first request."""
    from tuneloop.server.gateway import LazyRouter

    def build() -> Any:
        from tuneloop.models.local import LocalModelPool
        from tuneloop.server.routing import RegistryRouter

        return RegistryRouter(database, LocalModelPool(data_dir=settings.data_dir))

    return LazyRouter(build)


def create_app(db_url: str | None = None, *, settings: Settings | None = None, insecure_dev: bool = False,
               backends: Mapping[str, Any] | None = None, router: Any = None,
               db: Database | None = None) -> FastAPI:
    """Build the server for the database at ``db_url`` (else ``settings``' database).

    The gateway routes with ``router`` if given, else with a
    :class:`~tuneloop.server.gateway.StaticRouter` over ``backends`` ({model name:
    ModelBackend}) if given, else with the registry and experiments
    (:class:`~tuneloop.server.routing.RegistryRouter`, built on the first request).
    ``insecure_dev`` (or ``settings.insecure_dev``) turns API-key checks off.
    """
    from tuneloop.server import gateway, ingest

    settings = settings or Settings()
    database = db or Database.open(db_url or settings.database_url())
    owns_db = db is None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        app.state.writer.close()
        app.state.gateway.close()
        if owns_db:
            database.close()

    app = FastAPI(title="tuneloop", version=getattr(tuneloop, "__version__", "0.1.0"), lifespan=lifespan,
                  description="Ingestion, feedback, statistics and an OpenAI-compatible gateway.")
    app.state.settings = settings
    app.state.db = database
    app.state.insecure_dev = bool(insecure_dev or settings.insecure_dev)
    app.state.verifier = KeyVerifier(database)
    app.state.writer = GroupWriter(database)
    if router is None:
        router = gateway.StaticRouter(backends) if backends is not None else _registry_router(database, settings)
    app.state.gateway = gateway.Gateway(database, router=router)
    if app.state.insecure_dev:
        log.warning("API-key checks are OFF (insecure_dev): do not expose this server")

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_exception_handler(TuneloopError, _tuneloop_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: no auth, no database round trip."""
        return {"status": "ok"}

    app.include_router(ingest.router)
    app.include_router(gateway.router)
    _mount_packages(app)
    app.openapi = lambda: _openapi(app, ingest.EXTRA_SCHEMAS)  # type: ignore[method-assign]
    from tuneloop.privacy.pii_ingest import configure as configure_pii
    from tuneloop.server.security import install_security

    install_security(app, settings)  # after app.openapi: it documents 401/403/413/422/429 there
    configure_pii(settings)
    return app


def _mount_packages(app: FastAPI) -> None:
    """Routes owned by other packages (privacy, retrieval), /metrics, the dashboard, security."""
    from tuneloop.privacy.api import router as privacy_router
    from tuneloop.retrieval.api import router as retrieval_router
    from tuneloop.server.dashboard import mount_dashboard

    app.include_router(privacy_router)
    app.include_router(retrieval_router)

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus metrics (drift, satisfaction, traffic); scraped without a key on a private network."""
        from tuneloop.monitor.metrics import default_metrics, metrics_response

        default_metrics(app.state.db)
        body, content_type = metrics_response()
        return Response(body, media_type=content_type)

    mount_dashboard(app)


def app_from_env() -> FastAPI:
    """App factory for uvicorn worker processes: settings from ``$TUNELOOP_SERVE_SETTINGS``.

    ``uvicorn tuneloop.server.app:app_from_env --factory`` also works without it: the
    settings then come from ``$TUNELOOP_CONFIG`` and the ``TUNELOOP_*`` environment.
    """
    from tuneloop.config import load_settings

    raw = os.environ.get(SETTINGS_ENV)
    return create_app(settings=Settings.model_validate_json(raw) if raw else load_settings())
