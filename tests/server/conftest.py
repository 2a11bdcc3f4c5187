"""Fixtures for the server tests: an app on the database under test, and keys of every scope."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tuneloop.server.app import create_app
from tuneloop.server.keys import create_key


@pytest.fixture
def keys(db):
    """Raw keys by scope, plus a revoked one."""
    from tuneloop.server.keys import revoke_key

    out = {scope: create_key(db, scope, name=scope).secret for scope in ("ingest", "read", "admin")}
    revoked = create_key(db, "admin", name="old")
    revoke_key(db, revoked.key.id)
    out["revoked"] = revoked.secret
    return out


@pytest.fixture
def client(db, keys):
    app = create_app(db=db)
    with TestClient(app) as c:
        yield c
