import sqlalchemy as sa
import pytest

from tuneloop.errors import StoreError
from tuneloop.store import Database, schema
from tuneloop.store.migrate import current


def test_migrated_to_head_with_every_table(db):
    from alembic.script import ScriptDirectory

    from tuneloop.store.migrate import alembic_config

    assert current(db.engine) == ScriptDirectory.from_config(alembic_config()).get_current_head()
    names = set(sa.inspect(db.engine).get_table_names())
    assert {t.name for t in schema.metadata.sorted_tables} <= names


def test_insert_ignore_is_idempotent(db):
    row = {"id": "a", "ts": 1.0, "query": "q", "response": "r", "model": "m"}
    for _ in range(2):
        with db.begin() as conn:
            db.insert_ignore(conn, schema.interactions, [row, {**row, "id": "b"}])
    assert db.scalar(sa.select(sa.func.count()).select_from(schema.interactions)) == 2


def test_json_roundtrip(db):
    with db.begin() as conn:
        conn.execute(schema.interactions.insert(), {"id": "x", "ts": 2.0, "meta": {"k": [1, 2]}, "messages": [{"role": "user", "content": "hi"}]})
    row = db.fetch_one(schema.interactions.select())
    assert row["meta"] == {"k": [1, 2]} and row["messages"][0]["content"] == "hi"
    assert row["consent"] is True and row["status"] == "ok"


def test_sqlite_pragmas(tmp_path):
    db = Database.open(path=tmp_path / "x.db")
    with db.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_bad_url_names_the_problem():
    with pytest.raises(StoreError, match="cannot open database"):
        Database.open("nosuchdialect://x/y")


def test_sqlite_streaming_read_does_not_block_a_writer(tmp_path):
    db = Database.open(path=tmp_path / "r.db")
    with db.begin() as conn:
        conn.execute(schema.subjects.insert(), [{"user_id": f"u{i}", "created_at": 1.0} for i in range(50)])
    rows = db.iter_rows(sa.select(schema.subjects), chunk=5)
    next(iter(rows))  # a read transaction is open now
    with db.begin() as conn:  # would wait 30 s for the lock if reads took it
        conn.execute(schema.subjects.insert(), {"user_id": "writer", "created_at": 2.0})
    assert db.scalar(sa.select(sa.func.count()).select_from(schema.subjects)) == 51
