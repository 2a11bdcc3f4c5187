"""The dashboard's web plumbing: sign-in sessions, permission checks, CSRF, security
headers, template rendering and HTML error pages.

Sign-in takes an API key (checked by the server's :class:`~tuneloop.server.keys.KeyVerifier`)
and sets a cookie ``<key id>.<expiry>.<signature>``, HttpOnly and SameSite=Strict. The
signature is an HMAC keyed with the stored hash of the API key, so the raw key never
sits in the browser, any server process sharing the database can check the cookie, and
revoking the key ends its sessions (the key row is read again at most every few seconds).
Read scope sees every page; changes (golden review, annotations) need admin, or a scope
that grants ``annotate`` for annotations. Every POST carries a CSRF token bound to the
session (a form field or the ``X-CSRF-Token`` header htmx sends).

>>> sign("0123", "k1", 99)[:8] == sign("0123", "k1", 99)[:8]
True
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import sqlalchemy as sa
from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneloop.errors import TuneloopError, ValidationError
from tuneloop.server.keys import ApiKey
from tuneloop.store import schema

__all__ = ["COOKIE", "PREFIX", "SESSION_SECONDS", "DashboardRoute", "Forbidden", "LoginRequired",
           "SecurityHeaders", "Viewer", "form_data", "render", "sign", "templates"]

PREFIX = "/dashboard"
COOKIE = "tuneloop_session"
SESSION_SECONDS = 12 * 3600
HERE = Path(__file__).parent
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
           (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
           (b"cross-origin-opener-policy", b"same-origin"),
           (b"permissions-policy", b"camera=(), microphone=(), geolocation=()")]


# ---------------------------------------------------------------- who is looking
@dataclass(frozen=True)
class Viewer:
    """The signed-in key (or the development user when API-key checks are off)."""

    key_id: str
    name: str
    scope: str
    permissions: frozenset[str]
    csrf: str
    expires_at: float | None = None

    def can(self, permission: str) -> bool:
        return "admin" in self.permissions or permission in self.permissions

    @property
    def annotator(self) -> str:
        return self.name


class LoginRequired(Exception):
    """No valid session: pages redirect to the sign-in form."""


class Forbidden(Exception):
    """Signed in, but the key's scope does not allow this."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def sign(key_hash: str, key_id: str, expires: int, purpose: str = "session") -> str:
    """HMAC-SHA256 of ``purpose.key_id.expires`` keyed with the stored key hash."""
    msg = f"{purpose}.{key_id}.{expires}".encode()
    return hmac.new(key_hash.encode(), msg, hashlib.sha256).hexdigest()


class Sessions:
    """Issues and checks session cookies; the key rows are cached for ``ttl_s`` seconds."""

    def __init__(self, db: Any, *, ttl_s: float = 5.0, seconds: int = SESSION_SECONDS) -> None:
        self.db, self.ttl_s, self.seconds = db, ttl_s, seconds
        self._rows: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()
        self._dev_secret = secrets.token_hex(32)  # CSRF tokens of the key-less development mode

    def _row(self, key_id: str) -> dict[str, Any] | None:
        at = time.monotonic()
        with self._lock:
            hit = self._rows.get(key_id)
        if hit is not None and at - hit[0] < self.ttl_s:
            return hit[1]
        t = schema.api_keys
        row = self.db.fetch_one(sa.select(t).where(t.c.id == key_id))
        with self._lock:
            if len(self._rows) > 10_000:
                self._rows.clear()
            self._rows[key_id] = (at, row)
        return row

    def issue(self, key: ApiKey) -> tuple[str, int]:
        """The cookie value for a verified key, and its lifetime in seconds."""
        row = self._row(key.id)
        if row is None:
            raise LoginRequired()
        expires = int(time.time()) + self.seconds
        return f"{key.id}.{expires}.{sign(row['key_hash'], key.id, expires)}", self.seconds

    def viewer(self, cookie: str | None) -> Viewer:
        """The viewer of a cookie; :class:`LoginRequired` when it is missing, forged, expired or revoked."""
        from tuneloop.server.keys import GRANTS

        parts = (cookie or "").split(".")
        if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) < time.time():
            raise LoginRequired()
        key_id, expires, signature = parts[0], int(parts[1]), parts[2]
        row = self._row(key_id)
        if row is None or row["revoked_at"] is not None:
            raise LoginRequired()
        if not hmac.compare_digest(sign(row["key_hash"], key_id, expires), signature):
            raise LoginRequired()
        return Viewer(key_id, row["name"] or row["prefix"], row["scope"], GRANTS.get(row["scope"], frozenset()),
                      sign(row["key_hash"], key_id, expires, "csrf"), float(expires))

    def dev_viewer(self) -> Viewer:
        token = hmac.new(self._dev_secret.encode(), b"csrf", hashlib.sha256).hexdigest()
        return Viewer("dev", "dev", "admin", frozenset({"ingest", "read", "admin"}), token)


def current_viewer(request: Request) -> Viewer:
    """The viewer of this request (dependency of every page)."""
    state = request.app.state
    if state.insecure_dev:
        return state.dashboard.sessions.dev_viewer()
    viewer = state.dashboard.sessions.viewer(request.cookies.get(COOKIE))
    if not viewer.can("read"):
        raise Forbidden(f"a key of scope {viewer.scope!r} cannot see the dashboard; sign in with a read or admin key")
    return viewer


def require(viewer: Viewer, *permissions: str) -> None:
    if not any(viewer.can(p) for p in permissions):
        raise Forbidden(f"your key has scope {viewer.scope!r}; this action needs "
                        f"{' or '.join(repr(p) for p in permissions)}")


# ---------------------------------------------------------------- forms and CSRF
async def form_data(request: Request) -> dict[str, str]:
    """The url-encoded form of a POST (first value of each field), after the CSRF and origin checks."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/x-www-form-urlencoded", ""):
        raise ValidationError(f"send the form url-encoded, not {kind!r}", field="content-type")
    body = (await request.body()).decode("utf-8", errors="replace")
    data = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden(f"cross-site request from {origin} refused")
    return data


def check_csrf(request: Request, viewer: Viewer, form: Mapping[str, str]) -> None:
    token = request.headers.get("x-csrf-token") or form.get("csrf", "")
    if not hmac.compare_digest(token.encode(), viewer.csrf.encode()):
        raise Forbidden("the form's security token is missing or stale: reload the page and try again")


def safe_next(target: str | None) -> str:
    """Only redirect inside the dashboard (no open redirect to another site)."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return PREFIX + "/"


# ---------------------------------------------------------------- rendering
def _ts(value: float | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if value is None:
        return "–"
    return datetime.fromtimestamp(float(value), tz=timezone.utc).strftime(fmt)


def _ago(value: float | None) -> str:
    if value is None:
        return "–"
    s = max(0.0, time.time() - float(value))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{int(s // size)} {unit} ago"
    return "just now"


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if v != v:  # NaN
        return "–"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}g}"


def _pct(value: Any, digits: int = 1) -> str:
    return "–" if value is None or value != value else f"{100 * float(value):.{digits}f}%"


def _metric(value: Any, name: str) -> str:
    """A metric value as people read it: rates in percent, the rest as numbers."""
    return _pct(value) if name.endswith("rate") and value is not None else _num(value)


def _short(value: Any, n: int = 12) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= n else text[:n] + "…"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters.update(ts=_ts, ago=_ago, num=_num, pct=_pct, metric=_metric, short=_short, duration=_duration, quote=quote)
templates.env.globals.update(prefix=PREFIX)


def render(request: Request, name: str, viewer: Viewer | None, status: int = 200, **context: Any) -> HTMLResponse:
    """Render ``templates/<name>`` with the viewer, the CSRF token and the active nav entry."""
    return templates.TemplateResponse(request, name, {"viewer": viewer, **context}, status_code=status)


# ---------------------------------------------------------------- errors and headers
def _error_page(request: Request, status: int, title: str, message: str) -> Response:
    if status == 401:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        login = f"{PREFIX}/login?next={quote(target if request.method == 'GET' else PREFIX + '/')}"
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": login})
        return RedirectResponse(login, status_code=303)
    try:  # keep the navigation for a signed-in viewer
        viewer: Viewer | None = current_viewer(request)
    except (LoginRequired, Forbidden):
        viewer = None
    return render(request, "error.html", viewer, status=status, title=title, message=message)


class DashboardRoute(APIRoute):
    """Routes whose errors render as HTML pages (the API's handlers answer JSON)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                return _error_page(request, 401, "Sign in", "")
            except Forbidden as exc:
                return _error_page(request, 403, "Not allowed", exc.message)
            except TuneloopError as exc:
                return _error_page(request, exc.status, type(exc).__name__, exc.message)

        return route


class SecurityHeaders:
    """Security headers on every response under ``prefix``, and ``Server-Timing`` (handler ms)."""

    def __init__(self, app: ASGIApp, prefix: str = PREFIX) -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == self.prefix or path.startswith(self.prefix + "/")):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        static = path.startswith(self.prefix + "/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - start) * 1000
                headers = [h for h in message.get("headers", []) if h[0].lower() not in dict(HEADERS)]
                headers += HEADERS + [(b"server-timing", f"app;dur={ms:.1f}".encode())]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
