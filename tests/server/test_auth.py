"""The 401/403 matrix: every guarded route against no key, bad keys and each scope."""
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tuneloop.models.scripted import ScriptedBackend
from tuneloop.server.app import create_app
from tuneloop.store import schema

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
ROUTES = {
    "interactions": ("POST", "/v1/interactions", {"query": "q", "response": "a"}),
    "feedback": ("POST", "/v1/feedback", {"id": "x", "rating": 4}),
    "stats": ("GET", "/v1/stats", None),
    "chat": ("POST", "/v1/chat/completions", CHAT),
    "models": ("GET", "/v1/models", None),
}
OK, UNAUTH, FORBID = 200, 401, 403
MATRIX = {  # route: (none, garbage, revoked, ingest, read, admin)
    "interactions": (UNAUTH, UNAUTH, UNAUTH, OK, FORBID, OK),
    "feedback": (UNAUTH, UNAUTH, UNAUTH, OK, FORBID, OK),
    "stats": (UNAUTH, UNAUTH, UNAUTH, FORBID, OK, OK),
    "chat": (UNAUTH, UNAUTH, UNAUTH, OK, FORBID, OK),
    "models": (UNAUTH, UNAUTH, UNAUTH, OK, OK, OK),
}
WHO = ("none", "garbage", "revoked", "ingest", "read", "admin")


@pytest.fixture
def app_client(db, keys):
    app = create_app(db=db, backends={"m": ScriptedBackend({}, default="hello")})
    with TestClient(app) as c:
        yield c


def _call(client, route, headers):
    method, path, body = ROUTES[route]
    return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("route", sorted(MATRIX))
def test_auth_matrix(app_client, keys, route):
    for who, expected in zip(WHO, MATRIX[route]):
        raw = {"none": None, "garbage": "tl_admin_" + "x" * 32}.get(who, keys.get(who))
        headers = {"Authorization": f"Bearer {raw}"} if raw else {}
        r = _call(app_client, route, headers)
        assert r.status_code == expected, (route, who, r.text)
        if expected == UNAUTH:
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.json()["error"]["type"] == "AuthError"
        if expected == FORBID:
            assert r.json()["error"]["type"] == "ForbiddenError" and "scope" in r.json()["error"]["message"]


def test_refused_requests_write_nothing(app_client, keys, db):
    for raw in (None, keys["read"], keys["revoked"]):
        headers = {"Authorization": f"Bearer {raw}"} if raw else {}
        for route in ("interactions", "feedback"):
            assert _call(app_client, route, headers).status_code in (401, 403)
    assert db.scalar(sa.select(sa.func.count()).select_from(schema.interactions)) == 0
    assert db.scalar(sa.select(sa.func.count()).select_from(schema.feedback)) == 0


def test_other_schemes_and_healthz(app_client, keys):
    assert app_client.get("/v1/stats", headers={"Authorization": f"Basic {keys['read']}"}).status_code == 401
    assert app_client.get("/v1/stats", headers={"Authorization": keys["read"]}).status_code == 401
    assert app_client.get("/healthz").status_code == 200


def test_only_insecure_dev_turns_auth_off(db):
    from tuneloop.config import Settings

    assert TestClient(create_app(db=db)).get("/v1/stats").status_code == 401
    assert TestClient(create_app(db=db, insecure_dev=True)).get("/v1/stats").status_code == 200
    assert TestClient(create_app(db=db, settings=Settings(insecure_dev=True))).get("/v1/stats").status_code == 200
