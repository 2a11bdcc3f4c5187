"""Migration 0004 creates exactly the webhook_deliveries table schema.py declares, and downgrades cleanly."""
from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tuneloop.store import Database, schema
from tuneloop.store.migrate import alembic_config, current


def _run(db, fn, revision):
    with db.engine.begin() as conn:
        cfg = alembic_config(db.engine)
        cfg.attributes["connection"] = conn
        fn(cfg, revision)


def test_upgrade_matches_schema_and_downgrade_removes_the_table(db_url):
    db = Database.open(db_url)
    try:
        assert current(db.engine) >= "0004"
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
        assert [d for d in diff if "webhook_deliveries" in repr(d)] == []
        _run(db, command.downgrade, "0003")
        assert "webhook_deliveries" not in sa.inspect(db.engine).get_table_names()
        _run(db, command.upgrade, "head")
        assert "webhook_deliveries" in sa.inspect(db.engine).get_table_names()
    finally:
        db.close()
