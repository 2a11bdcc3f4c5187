"""Every route x every scope (and no key): no route serves or changes what the scope does not allow.

The expectation of each route comes from its declared guard (``Depends(requires(...))``,
found in the route's dependency tree); a route without one fails this test unless it is
public by design (health, OpenAPI, docs). Denied requests must answer 401/403 with an
error body and leave every table exactly as it was; allowed ones must get past the guard.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import re

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tuneloop.capture.records import interaction_row, write_interactions
from tuneloop.models.scripted import ScriptedBackend
from tuneloop.server.app import create_app
from tuneloop.server.keys import GRANTS, create_key, revoke_key
from tuneloop.server.security import install_security
from tuneloop.store import schema

# /metrics is Prometheus' scrape target (aggregates only, for a private network); "/" redirects.
PUBLIC = {"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/metrics", "/"}
PUBLIC_MOUNTS = ("/static", "/dashboard/static")
# The dashboard signs in with a key once and then uses a signed cookie (not the Bearer guard);
# its read/admin rules are tested in test_dashboard_pages.py and test_browser_dashboard.py.
COOKIE_AUTH = "/dashboard"
IDENTITIES = ("none", "revoked", "ingest", "read", "admin")
VICTIM = "victim-user"


def http_routes(app):
    """(path, method, dependant, route) for every HTTP route, through included routers."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before included-router contexts: routes are flat
        def iter_route_contexts(routes):
            return routes
    for r in iter_route_contexts(app.routes):
        path = getattr(r, "path_format", None) or getattr(r, "path", None)
        methods = getattr(r, "methods", None)
        if methods is None:  # a Mount (static files, sub-app)
            yield path, None, None, r
            continue
        for method in sorted(methods - {"HEAD"}):
            yield path, method, getattr(r, "dependant", None), r


def guard_permissions(dependant) -> tuple[str, ...] | None:
    """The permissions of the ``requires(...)`` guard in ``dependant``'s tree, or None."""
    if dependant is None:
        return None
    for dep in dependant.dependencies:
        call = dep.call
        if getattr(call, "__qualname__", "").startswith("requires.<locals>."):
            return tuple(inspect.getclosurevars(call).nonlocals["permissions"])
        found = guard_permissions(dep)
        if found is not None:
            return found
    return None


def allowed(scope: str, permissions: tuple[str, ...]) -> bool:
    return scope in GRANTS and any(p in GRANTS[scope] for p in permissions)


def build_app(db):
    backend = ScriptedBackend({}, default="an answer")
    app = create_app(db=db, backends={"m": backend})
    from fastapi.routing import iter_route_contexts

    from tuneloop.privacy import api as privacy_api

    if not any(r.path_format == "/v1/audit" for r in iter_route_contexts(app.routes)):
        app.include_router(privacy_api.router)  # until app.py includes it
    install_security(app, app.state.settings)
    return app


def snapshot(db) -> str:
    """A digest of every row of every table (api_keys.last_used_at aside: verifying touches it)."""
    h = hashlib.sha256()
    with db.engine.connect() as conn:
        for table in schema.metadata.sorted_tables:
            cols = [c for c in table.columns if not (table.name == "api_keys" and c.name == "last_used_at")]
            rows = conn.execute(sa.select(*cols).order_by(*table.primary_key.columns)).all()
            h.update(table.name.encode() + json.dumps([list(r) for r in rows], default=str).encode())
    return h.hexdigest()


def settle(app) -> None:
    """Let writes of earlier, allowed requests land (the gateway logs after it answers)."""
    gateway = getattr(app.state, "gateway", None)
    logger = getattr(gateway, "_logger", None)
    if logger is not None:
        assert logger.flush(timeout=30)


def request_for(path: str, method: str, world: dict) -> dict:
    """A request that would change or read something real if it got through."""
    url = re.sub(r"\{user_id[^}]*\}", VICTIM, path)
    url = re.sub(r"\{[^}]+\}", "x", url)
    bodies = {
        ("POST", "/v1/interactions"): {"interactions": [{"query": "q", "response": "a", "user_id": "new"}]},
        ("POST", "/v1/feedback"): {"id": world["interaction"], "rating": 5},
        ("POST", "/v1/chat/completions"): {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        ("PUT", "/v1/users/{user_id}/consent"): {"training": False},
    }
    kw: dict = {"method": method, "url": url}
    if method in ("POST", "PUT", "PATCH"):
        kw["json"] = bodies.get((method, path), {})
    return kw


@pytest.fixture
def world(db):
    row = interaction_row(query="secret question", response="secret answer", user_id=VICTIM)
    write_interactions(db, [row])
    keys = {s: create_key(db, s, name=s).secret for s in ("ingest", "read", "admin")}
    old = create_key(db, "admin", name="old")
    revoke_key(db, old.key.id)
    keys["revoked"] = old.secret
    return {"interaction": row["id"], "keys": keys}


def headers_for(identity: str, world: dict) -> dict:
    return {} if identity == "none" else {"Authorization": f"Bearer {world['keys'][identity]}"}


def test_every_route_declares_a_guard_or_is_public(db):
    unguarded = []
    for path, method, dependant, route in http_routes(build_app(db)):
        if str(path).startswith(COOKIE_AUTH) and not str(path).startswith(PUBLIC_MOUNTS):
            continue
        if method is None:
            if not str(path).startswith(PUBLIC_MOUNTS):
                unguarded.append(f"mount {path}")
            continue
        if path not in PUBLIC and guard_permissions(dependant) is None:
            unguarded.append(f"{method} {path}")
    assert not unguarded, f"routes without an API-key guard: {unguarded}"


def test_route_scope_matrix(db, world):
    app = build_app(db)
    routes = [(p, m, guard_permissions(d)) for p, m, d, _ in http_routes(app)
              if m and p not in PUBLIC and not p.startswith(COOKIE_AUTH)]
    assert len(routes) >= 7, routes  # ingestion, gateway, stats and the privacy routes at least
    failures = []
    with TestClient(app) as client:
        for path, method, perms in routes:
            assert perms, f"{method} {path} has no guard"
            denied = [i for i in IDENTITIES if not allowed(i, perms)]
            granted = [i for i in IDENTITIES if allowed(i, perms)]
            for identity in denied:  # first: the route must neither answer nor change anything
                settle(app)
                before = snapshot(db)
                r = client.request(**request_for(path, method, world), headers=headers_for(identity, world))
                settle(app)
                expected = 401 if identity in ("none", "revoked") else 403
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else None
                if r.status_code != expected or not body or set(body) != {"error"}:
                    failures.append(f"{identity} {method} {path}: {r.status_code} {r.text[:120]}")
                if snapshot(db) != before:
                    failures.append(f"{identity} {method} {path}: changed the database")
                if "secret question" in r.text or VICTIM in r.text:
                    failures.append(f"{identity} {method} {path}: leaked data")
            for identity in granted:
                r = client.request(**request_for(path, method, world), headers=headers_for(identity, world))
                if r.status_code in (401, 403):
                    failures.append(f"{identity} {method} {path}: refused a key that has {perms}")
    assert not failures, "\n".join(failures)


def test_no_key_with_a_bad_body_is_401_not_422(db, world):
    """The guard runs before any parsing: a caller without a key learns nothing about bodies."""
    app = build_app(db)
    bad = []
    with TestClient(app) as client:
        for path, method, dependant, _ in http_routes(app):
            if method not in ("POST", "PUT", "PATCH", "DELETE") or path in PUBLIC or path.startswith(COOKIE_AUTH):
                continue
            url = re.sub(r"\{[^}]+\}", "x", path)
            r = client.request(method, url, content=b"{not json", headers={"content-type": "application/json"})
            if r.status_code != 401:
                bad.append(f"{method} {path}: {r.status_code}")
    assert not bad, bad


def test_insecure_dev_is_the_only_way_without_keys(db):
    app = create_app(db=db, insecure_dev=True)
    with TestClient(app) as client:
        assert client.get("/v1/stats").status_code == 200
    with TestClient(build_app(db)) as client:
        assert client.get("/v1/stats").status_code == 401
