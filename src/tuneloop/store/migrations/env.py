"""Alembic environment: uses the connection handed in by tuneloop.store.migrate."""
from __future__ import annotations

from alembic import context

from tuneloop.store.schema import metadata

config = context.config


def run() -> None:
    conn = config.attributes.get("connection")
    if conn is None:
        import sqlalchemy as sa

        engine = config.attributes.get("engine") or sa.create_engine(config.get_main_option("sqlalchemy.url"))
        with engine.begin() as conn:
            _run(conn)
    else:
        _run(conn)


def _run(conn) -> None:  # noqa: ANN001
    context.configure(connection=conn, target_metadata=metadata, render_as_batch=conn.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


run()
