"""Route guards: ``Authorization: Bearer <key>`` checked against the stored API keys.

>>> from fastapi import APIRouter, Depends
>>> router = APIRouter()
>>> @router.get("/v1/stats", dependencies=[Depends(requires("read"))])
... def stats(): ...

No key or an unknown/revoked key gets 401, a valid key without the permission 403.
Only an app created with ``insecure_dev=True`` lets every request through.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from tuneloop.server.keys import ApiKey, require

__all__ = ["requires", "bearer_token", "SECURITY", "SECURITY_SCHEMES"]

#: OpenAPI bits for guarded routes (``openapi_extra=SECURITY``) and the app's components.
SECURITY: dict[str, Any] = {"security": [{"apiKey": []}]}
SECURITY_SCHEMES = {"apiKey": {"type": "http", "scheme": "bearer",
                               "description": "An API key from `tuneloop keys create`."}}


def bearer_token(header: str | None) -> str | None:
    """The key in an ``Authorization: Bearer <key>`` header (None for any other form)."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def requires(*permissions: str) -> Callable[..., Awaitable[ApiKey | None]]:
    """A FastAPI dependency that lets a request through with a key granting any of ``permissions``.

    Returns the :class:`~tuneloop.server.keys.ApiKey` (None in insecure-dev mode). The
    header is read directly, not through a security sub-dependency: this guard runs on
    every gateway request, and each dependency level costs FastAPI time.
    """

    async def guard(request: Request) -> ApiKey | None:
        state = request.app.state
        if state.insecure_dev:
            return None
        raw = bearer_token(request.headers.get("authorization"))
        verifier = state.verifier
        # The cache answers most requests without leaving the event loop.
        key = verifier.cached(raw)
        if key is None:
            key = await run_in_threadpool(verifier.verify, raw, permissions)
        require(key, permissions)
        request.state.api_key = key
        return key

    guard.__name__ = f"requires_{'_or_'.join(permissions)}"
    return guard
