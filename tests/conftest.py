"""Shared fixtures. The whole suite runs once per database backend:

    TUNELOOP_TEST_DB=sqlite   (default) a temp SQLite file per test
    TUNELOOP_TEST_DB=postgres a fresh PostgreSQL database per run (dropped afterwards),
                              tables truncated between tests

``TUNELOOP_TEST_PG`` names the server (default postgresql+psycopg://postgres@127.0.0.1:5432/test).
"""
from __future__ import annotations

import os
import uuid

import pytest
import typer  # the command_app callback's annotations are resolved in this module
import sqlalchemy as sa

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

BACKEND = os.environ.get("TUNELOOP_TEST_DB", "sqlite")
PG_ADMIN_URL = os.environ.get("TUNELOOP_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def pg_url():
    """A fresh PostgreSQL database for this run (and this xdist worker), dropped at the end."""
    name = f"tuneloop_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def db_url(request, tmp_path):
    """URL of an empty, migrated database of the backend under test."""
    if BACKEND == "postgres":
        url = request.getfixturevalue("pg_url")
        from tuneloop.store import Database, schema

        db = Database.open(url)
        with db.begin() as conn:
            names = ", ".join(t.name for t in schema.metadata.sorted_tables)
            conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY")
        db.close()
        return url
    return f"sqlite:///{tmp_path / 'tuneloop.db'}"


@pytest.fixture
def db(db_url):
    from tuneloop.store import Database

    database = Database.open(db_url)
    yield database
    database.close()


@pytest.fixture
def command_app():
    """``command_app(module)``: a Typer app with one package's commands, as the CLI mounts them."""
    def make(module) -> typer.Typer:
        app = typer.Typer()

        @app.callback()
        def root(ctx: typer.Context) -> None:
            ctx.obj = ctx.obj or {}

        module.register(app)
        return app

    return make
