"""The audit log: filters and paging; the database refuses UPDATE and DELETE (migration 0003)."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from tuneloop.errors import ValidationError
from tuneloop.privacy.audit import actor_of_key, is_protected, list_audit, record
from tuneloop.store import schema


def _fill(db, n=5):
    with db.begin() as conn:
        for i in range(n):
            record(conn, f"actor{i % 2}", "user.delete" if i % 2 else "retention.enforce", f"user:u{i}",
                   {"i": i}, {"i": i + 1})


def test_filters_and_paging(db):
    _fill(db, 5)
    assert [e.target for e in list_audit(db)] == [f"user:u{i}" for i in (4, 3, 2, 1, 0)]
    assert {e.action for e in list_audit(db, action="user.")} == {"user.delete"}
    assert [e.actor for e in list_audit(db, actor="actor1")] == ["actor1", "actor1"]
    assert list_audit(db, target="user:u2")[0].after == {"i": 3}
    page1 = list_audit(db, limit=2)
    page2 = list_audit(db, limit=2, before_id=page1[-1].id)
    assert [e.id for e in page1 + page2] == sorted((e.id for e in list_audit(db)), reverse=True)[:4]
    ts = list_audit(db)[2].ts
    assert all(e.ts >= ts for e in list_audit(db, since=ts))
    with pytest.raises(ValidationError):
        list_audit(db, limit=0)


def test_audit_rows_cannot_be_updated_or_deleted(db):
    assert is_protected(db)
    _fill(db, 2)
    for stmt in (schema.audit_log.update().values(actor="someone else"), schema.audit_log.delete(),
                 schema.audit_log.delete().where(schema.audit_log.c.id == 1)):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"):
            with db.begin() as conn:
                conn.execute(stmt)
    assert [e.actor for e in list_audit(db)] == ["actor1", "actor0"]
    with db.begin() as conn:  # inserting still works
        record(conn, "x", "y", None)
    assert len(list_audit(db)) == 3


def test_an_actor_is_required(db):
    with pytest.raises(ValidationError, match="actor"):
        with db.begin() as conn:
            record(conn, "", "x", None)


def test_actor_of_key_never_holds_the_secret(db):
    from tuneloop.server.keys import create_key

    created = create_key(db, "admin", name="ops")
    actor = actor_of_key(created.key)
    assert actor == f"key:ops/{created.key.id}" and created.secret not in actor
    assert actor_of_key(None) == "insecure-dev"
