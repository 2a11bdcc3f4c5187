"""Per-key rate limits, security headers and CORS (off unless configured) for the server.

>>> from tuneloop.server.app import create_app                     # doctest: +SKIP
>>> app = create_app(settings=settings)                             # doctest: +SKIP
>>> install_security(app, settings)                                 # doctest: +SKIP

Rate limits are token buckets kept in memory, one per API key id: ``rate_limit_per_s``
tokens refill per second up to ``rate_limit_burst``; a request takes one. An empty bucket
answers 429 with ``Retry-After`` (whole seconds until the next token) before the route
runs or the body is read. Requests without a valid key are not limited here: they get
their 401 from the route's guard. In insecure-dev mode there are no keys, so one shared
bucket (``anonymous``) applies. Buckets live per process: with N workers a key gets up
to N times the rate (a shared limit would need the database or Redis on every request).

Security headers go on every response: ``nosniff``, ``DENY`` framing, no referrer, a
strict Content-Security-Policy on HTML (the dashboard; ``/docs`` gets one that lets
Swagger UI load), ``Cache-Control: no-store`` on responses to authenticated requests,
and HSTS when the request came over HTTPS.

CORS: no ``Access-Control-*`` headers at all unless ``cors_origins`` lists origins;
browsers then refuse cross-origin reads. Credentials (cookies) are never allowed: the
API authenticates with ``Authorization: Bearer``, which a page must add explicitly.
"""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneloop.errors import ConfigError, TuneloopError
from tuneloop.server.auth import bearer_token

__all__ = ["SecurityConfig", "TokenBucket", "RateLimiter", "RateLimited", "RateLimitMiddleware",
           "SecurityHeadersMiddleware", "install_security", "security_config", "document_errors", "DOCS_PATHS"]

DOCS_PATHS = ("/docs", "/redoc", "/docs/oauth2-redirect")
DEFAULT_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
               "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
# Swagger UI and ReDoc load their bundle from jsDelivr and start it with an inline script.
DOCS_CSP = ("default-src 'self'; img-src 'self' data: https://fastapi.tiangolo.com; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; worker-src 'self' blob:; "
            "object-src 'none'; base-uri 'self'; frame-ancestors 'none'")


class RateLimited(TuneloopError):
    """Too many requests for one API key (HTTP 429); ``retry_after`` says when to come back."""

    status = 429


@dataclass(frozen=True)
class SecurityConfig:
    """Security settings of one server (from :func:`security_config` or given directly)."""

    rate_limit_per_s: float | None = field(default=None, metadata={"help": "requests per second per key; None: off"})
    rate_limit_burst: int | None = field(default=None, metadata={"help": "bucket size (default 2 s of rate, >= 1)"})
    cors_origins: tuple[str, ...] = field(default=(), metadata={"help": "origins allowed by CORS; empty: CORS off"})
    csp: str = field(default=DEFAULT_CSP, metadata={"help": "Content-Security-Policy of HTML responses"})
    max_buckets: int = field(default=100_000, metadata={"help": "rate-limit buckets kept in memory at most"})

    def __post_init__(self) -> None:
        if self.rate_limit_per_s is not None and not (self.rate_limit_per_s > 0 and math.isfinite(self.rate_limit_per_s)):
            raise ConfigError(f"rate_limit_per_s: must be a number > 0 or None, got {self.rate_limit_per_s!r}")
        if self.rate_limit_burst is not None and (not isinstance(self.rate_limit_burst, int) or self.rate_limit_burst < 1):
            raise ConfigError(f"rate_limit_burst: must be an integer >= 1, got {self.rate_limit_burst!r}")
        if "*" in self.cors_origins:
            raise ConfigError("cors_origins: '*' is not allowed; list the origins of your pages")
        for origin in self.cors_origins:
            if not origin.startswith(("http://", "https://")) or origin.endswith("/"):
                raise ConfigError(f"cors_origins: {origin!r} must look like https://host[:port] (no path)")

    @property
    def burst(self) -> int:
        if self.rate_limit_burst is not None:
            return self.rate_limit_burst
        return max(1, math.ceil(2 * (self.rate_limit_per_s or 1)))


def security_config(settings: Any = None) -> SecurityConfig:
    """The :class:`SecurityConfig` of ``settings`` (fields missing from it keep their defaults)."""
    origins = getattr(settings, "cors_origins", None) or ()
    if isinstance(origins, str):
        origins = [o.strip() for o in origins.split(",") if o.strip()]
    kw: dict[str, Any] = {"cors_origins": tuple(origins)}
    for name in ("rate_limit_per_s", "rate_limit_burst", "csp"):
        value = getattr(settings, name, None)
        if value is not None:
            kw[name] = value
    return SecurityConfig(**kw)


# ---------------------------------------------------------------- token buckets (pure)
class TokenBucket:
    """``rate`` tokens per second up to ``burst``; :meth:`take` at time ``now`` (monotonic s).

    >>> b = TokenBucket(rate=1.0, burst=2, now=0.0)
    >>> b.take(0.0), b.take(0.0), b.take(0.0)
    (0.0, 0.0, 1.0)
    >>> b.take(1.0)
    0.0
    """

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = float(rate), int(burst)
        self.tokens, self.stamp = float(burst), now

    def take(self, now: float) -> float:
        """0.0 when a token was taken, else the seconds until one will be there."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """Token buckets by key, thread-safe, at most ``max_buckets`` (least recently used go first)."""

    def __init__(self, rate: float, burst: int, *, max_buckets: int = 100_000, clock=time.monotonic) -> None:
        self.rate, self.burst, self.max_buckets, self.clock = rate, burst, max_buckets, clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()
        self.limited = 0

    def check(self, key: str) -> float:
        """0.0 if ``key`` may go ahead now, else seconds to wait."""
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
                if len(self._buckets) > self.max_buckets:
                    # An evicted bucket comes back full: at worst one extra burst for that key.
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
            wait = bucket.take(now)
            if wait:
                self.limited += 1
            return wait


# ---------------------------------------------------------------- middleware (pure ASGI)
def _error_response(exc: TuneloopError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = {"message": exc.message, "type": type(exc).__name__, "code": exc.status, **exc.details}
    return JSONResponse({"error": body}, status_code=exc.status, headers=dict(headers or {}))


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return v.decode("latin-1")
    return None


class RateLimitMiddleware:
    """429 with ``Retry-After`` for a key over its rate, before the route runs."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter) -> None:
        self.app, self.limiter = app, limiter

    async def _bucket_key(self, scope: Scope) -> str | None:
        state = scope["app"].state
        if getattr(state, "insecure_dev", False):
            return "anonymous"
        raw = bearer_token(_header(scope, b"authorization"))
        if raw is None:
            return None
        verifier = state.verifier
        key = verifier.cached(raw)
        if key is None:
            try:
                key = await run_in_threadpool(verifier.verify, raw)
            except TuneloopError:  # a bad key: the route's guard answers 401
                return None
        return f"key:{key.id}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        bucket = await self._bucket_key(scope)
        wait = self.limiter.check(bucket) if bucket is not None else 0.0
        if wait:
            retry = max(1, math.ceil(wait))
            exc = RateLimited(f"rate limit of {self.limiter.rate:g} requests/s for this API key exceeded; "
                              f"retry after {retry} s", retry_after=retry)
            await _error_response(exc, {"Retry-After": str(retry)})(scope, receive, send)
            return
        await self.app(scope, receive, send)


class SecurityHeadersMiddleware:
    """Adds the security headers to every response (see the module docs)."""

    def __init__(self, app: ASGIApp, csp: str = DEFAULT_CSP) -> None:
        self.app, self.csp = app, csp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        authenticated = _header(scope, b"authorization") is not None
        https = scope.get("scheme") == "https"
        docs = scope.get("path", "") in DOCS_PATHS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
                headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("Content-Security-Policy", DOCS_CSP if docs else self.csp)
                if authenticated:
                    headers.setdefault("Cache-Control", "no-store")
                if https:
                    headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ---------------------------------------------------------------- OpenAPI: document the error answers
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["message", "type", "code"], "additionalProperties": True,
        "properties": {"message": {"type": "string"}, "type": {"type": "string"}, "code": {"type": "integer"}}}}}
_ERROR_TEXT = {"401": "No API key, or an invalid or revoked one.", "403": "The key's scope does not allow this.",
               "413": "The body is over max_body_bytes.", "422": "Bad input; the message names the field.",
               "429": "Rate limit of this key exceeded; see Retry-After."}


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the error answers every guarded operation can give (401/403/429; 413/422 with a
    body; 422 with parameters) to an OpenAPI ``schema`` in place, keeping any it declares."""
    schema.setdefault("components", {}).setdefault("schemas", {}).setdefault("TuneloopError", ERROR_SCHEMA)
    ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/TuneloopError"}}}}
    for item in schema.get("paths", {}).values():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete") or not isinstance(op, dict):
                continue
            codes = ["401", "403", "429"] if op.get("security") else []
            if "requestBody" in op:
                codes += ["413", "422"]
            if op.get("parameters"):
                codes.append("422")
            responses = op.setdefault("responses", {})
            for code in codes:
                responses.setdefault(code, {"description": _ERROR_TEXT[code], **ref})
    return schema


def install_security(app: Any, settings: Any = None, config: SecurityConfig | None = None) -> SecurityConfig:
    """Add rate limits (when configured), CORS (when configured) and security headers to ``app``.

    Call it once, after the app's routes and its other middleware are in place: the
    headers then wrap everything, 413 and 429 answers included. Returns the config used;
    the limiter is ``app.state.rate_limiter`` (None when rate limits are off).
    """
    cfg = config or security_config(settings)
    app.state.security = cfg
    app.state.rate_limiter = None
    # Starlette runs the middleware added last first: rate limit, then CORS, then headers outside.
    if cfg.rate_limit_per_s:
        limiter = RateLimiter(cfg.rate_limit_per_s, cfg.burst, max_buckets=cfg.max_buckets)
        app.state.rate_limiter = limiter
        app.add_middleware(RateLimitMiddleware, limiter=limiter)
    if cfg.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "X-Tuneloop-User", "X-Tuneloop-Session"],
                           expose_headers=["X-Tuneloop-Interaction-Id", "X-Tuneloop-Version", "X-Tuneloop-Arm",
                                           "Retry-After"], max_age=600)
    app.add_middleware(SecurityHeadersMiddleware, csp=cfg.csp)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        return document_errors(build())  # idempotent: the schema is cached and only gains entries

    app.openapi = openapi
    return cfg

