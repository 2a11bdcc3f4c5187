"""The one place that creates engines and runs migrations.

>>> db = Database.open("sqlite:///:memory:")      # or a path, or postgresql+psycopg://...
>>> with db.begin() as conn:
...     _ = conn.execute(schema.interactions.select()).all()

SQLite is set up for one writer and many readers: WAL journal, ``synchronous=NORMAL``
(durable across process crashes, only an OS crash can lose the last commits), a busy
timeout, foreign keys on, and ``BEGIN IMMEDIATE`` so that a writer takes the write lock
when its transaction starts instead of failing half-way with SQLITE_BUSY.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tuneloop.errors import StoreError
from tuneloop.store import schema

DEFAULT_PATH = "./.tuneloop/tuneloop.db"
_migrated: set[str] = set()
_migrate_lock = threading.Lock()


def resolve_url(url: str | None = None, path: str | os.PathLike | None = None) -> str:
    """Turn ``url`` or a SQLite ``path`` (default ``./.tuneloop/tuneloop.db``) into a URL."""
    if url and path:
        raise StoreError("give either a database url or a path, not both")
    if url:
        if "://" not in url:
            return resolve_url(path=url)
        return url
    p = Path(os.path.expanduser(str(path or os.environ.get("TUNELOOP_DB_PATH") or DEFAULT_PATH)))
    if str(p) == ":memory:":
        return "sqlite:///:memory:"
    p.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{p.resolve()}"


def _sqlite_setup(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        # Let SQLAlchemy, not pysqlite, issue BEGIN (pysqlite's implicit BEGIN is deferred).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        # Writers (Database.begin) take the write lock up front; readers stay deferred so a
        # long streaming read never blocks the capture writer (WAL readers don't block writers).
        if conn.get_execution_options().get("tuneloop_write", False):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


class Database:
    """Owns the engine of one database and the SQL every package shares."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.url = engine.url
        self.dialect = engine.dialect.name

    @classmethod
    def open(cls, url: str | None = None, *, path: str | os.PathLike | None = None,
             migrate: bool = True, **engine_kw: Any) -> "Database":
        """Open (and by default migrate to the newest schema) the database at ``url``/``path``."""
        full = resolve_url(url, path)
        try:
            if full.startswith("sqlite"):
                kw: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 30}}
                if full == "sqlite:///:memory:":
                    kw["poolclass"] = sa.pool.StaticPool
                engine = sa.create_engine(full, **kw, **engine_kw)
                _sqlite_setup(engine)
            else:
                engine = sa.create_engine(full, pool_pre_ping=True, **engine_kw)
        except Exception as exc:  # bad URL, missing driver
            raise StoreError(f"cannot open database {full!r}: {exc}") from exc
        db = cls(engine)
        if migrate:
            db.upgrade()
        return db

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def upgrade(self, revision: str = "head") -> None:
        """Apply Alembic migrations up to ``revision`` (once per process per database)."""
        from tuneloop.store.migrate import upgrade

        key = self.engine.url.render_as_string(hide_password=False)
        with _migrate_lock:
            in_memory = self.is_sqlite and self.engine.url.database in (None, "", ":memory:")
            if key in _migrated and revision == "head" and not in_memory:
                return
            upgrade(self.engine, revision)
            _migrated.add(key)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection inside one write transaction (BEGIN IMMEDIATE on SQLite)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(tuneloop_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def insert_ignore(self, conn: Connection, table: sa.Table, rows: list[Mapping[str, Any]]) -> int:
        """Insert ``rows``, skipping any whose primary key exists (idempotent batches).

        Returns the inserted count where the driver reports it (SQLite), else 0.
        """
        if not rows:
            return 0
        if self.is_sqlite:
            stmt = table.insert().prefix_with("OR IGNORE")
        else:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt = pg_insert(table).on_conflict_do_nothing()
        result = conn.execute(stmt, list(rows))
        return max(result.rowcount or 0, 0)

    def fetch_all(self, stmt: sa.Executable) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def fetch_one(self, stmt: sa.Executable) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
            return dict(row._mapping) if row is not None else None

    def scalar(self, stmt: sa.Executable) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(stmt).scalar()

    def iter_rows(self, stmt: sa.Select, chunk: int = 5000) -> Iterable[dict[str, Any]]:
        """Stream rows of ``stmt`` in chunks without loading them all."""
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=chunk).execute(stmt)
            for row in result:
                yield dict(row._mapping)

    def close(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.engine.url.render_as_string(hide_password=True)!r})"
