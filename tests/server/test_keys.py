import pytest
import sqlalchemy as sa

from tuneloop.errors import AuthError, ForbiddenError, NotFoundError, ValidationError
from tuneloop.server.keys import (KeyVerifier, create_key, hash_key, list_keys, require, revoke_key,
                                  verify_key)
from tuneloop.store import schema


def test_create_stores_only_hash_and_prefix(db):
    created = create_key(db, "ingest", name="app")
    assert created.secret.startswith("tl_ingest_") and len(created.secret) == len("tl_ingest_") + 32
    row = db.fetch_one(sa.select(schema.api_keys))
    assert row["key_hash"] == hash_key(created.secret) and created.secret not in str(row)
    assert created.secret.startswith(row["prefix"]) and len(row["prefix"]) <= 16
    assert row["scope"] == "ingest" and row["name"] == "app"


def test_two_keys_differ(db):
    assert create_key(db, "read").secret != create_key(db, "read").secret


def test_bad_scope(db):
    with pytest.raises(ValidationError, match="scope"):
        create_key(db, "root")


def test_verify(db):
    created = create_key(db, "admin")
    assert verify_key(db, created.secret).id == created.key.id
    with pytest.raises(AuthError, match="missing"):
        verify_key(db, None)
    with pytest.raises(AuthError, match="invalid"):
        verify_key(db, created.secret[:-1] + ("A" if created.secret[-1] != "A" else "B"))
    with pytest.raises(AuthError, match="invalid"):
        verify_key(db, "not-a-key")


def test_revoke_and_list(db):
    a, b = create_key(db, "ingest", name="a"), create_key(db, "read", name="b")
    assert [k.name for k in list_keys(db)] == ["a", "b"]
    revoked = revoke_key(db, a.key.id)
    assert revoked.revoked_at is not None and not revoked.active
    with pytest.raises(AuthError, match="revoked"):
        verify_key(db, a.secret)
    assert [k.name for k in list_keys(db, include_revoked=False)] == ["b"]
    assert revoke_key(db, b.key.prefix).id == b.key.id  # by the prefix shown in `keys list`
    with pytest.raises(NotFoundError):
        revoke_key(db, "nope")


def test_scopes():
    from tuneloop.server.keys import ApiKey

    def key(scope):
        return ApiKey(id="k", name=None, prefix="tl_x", scope=scope, created_at=0.0)

    require(key("admin"), "admin"), require(key("admin"), "read"), require(key("admin"), "ingest")
    require(key("read"), "read"), require(key("ingest"), "ingest")
    require(key("read"), ("ingest", "read"))
    for scope, perm in [("read", "ingest"), ("ingest", "read"), ("read", "admin"), ("ingest", "admin")]:
        with pytest.raises(ForbiddenError):
            require(key(scope), perm)


def test_verifier_cache_and_last_used(db):
    created = create_key(db, "ingest")
    v = KeyVerifier(db, ttl_s=60)
    assert v.verify(created.secret).scope == "ingest"
    assert db.fetch_one(sa.select(schema.api_keys))["last_used_at"] is not None
    revoke_key(db, created.key.id)
    assert v.verify(created.secret).scope == "ingest"  # cached for ttl_s
    with pytest.raises(AuthError):
        KeyVerifier(db, ttl_s=0).verify(created.secret)


def test_a_refused_request_writes_nothing(db):
    created = create_key(db, "read")
    with pytest.raises(ForbiddenError):
        KeyVerifier(db).verify(created.secret, ("ingest",))
    assert db.fetch_one(sa.select(schema.api_keys))["last_used_at"] is None
    assert KeyVerifier(db).verify(created.secret, ("read",)).scope == "read"
    assert db.fetch_one(sa.select(schema.api_keys))["last_used_at"] is not None
