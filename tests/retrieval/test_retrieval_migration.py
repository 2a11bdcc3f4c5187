"""Migration 0002 creates exactly the tables schema.py declares, and downgrades cleanly."""
from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tuneloop.store import Database, schema
from tuneloop.store.migrate import alembic_config, current

TABLES = {"documents", "retrieval_logs", "index_builds"}


def test_upgrade_matches_schema_and_downgrade_removes_the_tables(db_url):
    from alembic import command

    db = Database.open(db_url)
    try:
        assert current(db.engine) >= "0002"
        assert TABLES <= set(sa.inspect(db.engine).get_table_names())
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
        mine = [d for d in diff if any(t in repr(d) for t in TABLES)]
        assert mine == []
        with db.engine.begin() as conn:
            cfg = alembic_config(db.engine)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0001")
        assert not TABLES & set(sa.inspect(db.engine).get_table_names())
        with db.engine.begin() as conn:
            cfg = alembic_config(db.engine)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        assert TABLES <= set(sa.inspect(db.engine).get_table_names())
    finally:
        db.close()
