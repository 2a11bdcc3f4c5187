"""Index builds: one vector index per embedder version, and which one serves.

Each row of ``index_builds`` is one index of the whole corpus made with one embedder
version (a retriever version in the registry, or an embedder name such as ``minilm``),
stored in its own folder. Its ``status``::

    building -> ready -> active <-> standby -> retired
        \\-> failed

Exactly one build is ``active``: it serves every search. :func:`switch_to` makes another
build active in one transaction and keeps the one it replaces as ``standby`` (loaded and
on disk), so :func:`rollback_index` is a pointer flip that serves the old index at once.
Older standbys are retired and their folders deleted.

>>> from tuneloop.store import Database
>>> import tempfile
>>> db = Database.open("sqlite:///:memory:")
>>> root = tempfile.mkdtemp()
>>> a = create_build(db, "hashing-64", engine="numpy", dim=64, root=root, status="ready")
>>> b = create_build(db, "minilm", engine="numpy", dim=384, root=root, status="ready")
>>> switch_to(db, a.id).status, switch_to(db, b.id).status, get_build(db, a.id).status
('active', 'active', 'standby')
>>> rollback_index(db).id == a.id
True
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tuneloop.errors import ConflictError, NotFoundError, ValidationError
from tuneloop.ids import new_id, now
from tuneloop.store import Database, schema

__all__ = ["IndexBuild", "STATUSES", "index_root", "create_build", "get_build", "find_build", "list_builds",
           "active_build", "standby_build", "update_build", "switch_to", "rollback_index", "retire_build"]

B = schema.index_builds
STATUSES = ("building", "ready", "active", "standby", "retired", "failed")
INDEX_DIR_ENV = "TUNELOOP_INDEX_DIR"


@dataclass(frozen=True)
class IndexBuild:
    """One row of ``index_builds``."""

    id: str
    embedder_version: str
    status: str
    engine: str | None
    dim: int | None
    cursor: str | None
    done: int
    total: int | None
    path: str | None
    error: str | None
    meta: dict | None
    created_at: float
    updated_at: float | None
    switched_at: float | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "IndexBuild":
        return cls(**{f.name: row[f.name] for f in fields(cls)})

    @property
    def progress(self) -> float | None:
        """Share of the corpus embedded (None while the total is unknown)."""
        if not self.total:
            return 1.0 if self.status in ("ready", "active", "standby") else None
        return min(1.0, self.done / self.total)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"progress": self.progress}


def index_root(db: Database, root: str | os.PathLike | None = None) -> Path:
    """Where index folders live: ``root``, else ``$TUNELOOP_INDEX_DIR``, else ``indexes/``
    beside a SQLite database file, else ``./.tuneloop/indexes``."""
    if root is None:
        root = os.environ.get(INDEX_DIR_ENV)
    if root is None:
        database = db.engine.url.database if db.is_sqlite else None
        base = Path(database).resolve().parent if database and database != ":memory:" else Path(".tuneloop")
        root = base / "indexes"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def create_build(db: Database, embedder_version: str, *, engine: str, dim: int,
                 root: str | os.PathLike | None = None, status: str = "building",
                 total: int | None = None, meta: Mapping[str, Any] | None = None) -> IndexBuild:
    """A new build row and its (empty) folder."""
    if status not in STATUSES:
        raise ValidationError(f"status {status!r} is not one of {', '.join(STATUSES)}", field="status")
    build_id = new_id()
    path = index_root(db, root) / build_id
    path.mkdir(parents=True, exist_ok=True)
    row = {"id": build_id, "embedder_version": embedder_version, "status": status, "engine": engine, "dim": dim,
           "cursor": None, "done": 0, "total": total, "path": str(path), "error": None,
           "meta": dict(meta) if meta else None, "created_at": now(), "updated_at": now(), "switched_at": None}
    with db.begin() as conn:
        conn.execute(B.insert().values(**row))
    return IndexBuild.from_row(row)


def get_build(db: Database, build_id: str) -> IndexBuild:
    row = db.fetch_one(sa.select(B).where(B.c.id == build_id))
    if row is None:
        raise NotFoundError(f"index build {build_id!r} does not exist", build_id=build_id)
    return IndexBuild.from_row(row)


def list_builds(db: Database, embedder_version: str | None = None,
                statuses: Iterable[str] | None = None) -> list[IndexBuild]:
    """Builds, newest first."""
    stmt = sa.select(B).order_by(B.c.created_at.desc(), B.c.id.desc())
    if embedder_version is not None:
        stmt = stmt.where(B.c.embedder_version == embedder_version)
    if statuses is not None:
        stmt = stmt.where(B.c.status.in_(list(statuses)))
    return [IndexBuild.from_row(r) for r in db.fetch_all(stmt)]


def find_build(db: Database, embedder_version: str,
               statuses: Iterable[str] = ("active", "standby", "ready")) -> IndexBuild | None:
    """The newest build of ``embedder_version`` in one of ``statuses`` (active first)."""
    builds = list_builds(db, embedder_version, statuses)
    builds.sort(key=lambda b: b.status != "active")
    return builds[0] if builds else None


def active_build(db: Database) -> IndexBuild | None:
    """The build that serves searches, or None before the first one."""
    row = db.fetch_one(sa.select(B).where(B.c.status == "active").order_by(B.c.switched_at.desc()).limit(1))
    return IndexBuild.from_row(row) if row else None


def standby_build(db: Database) -> IndexBuild | None:
    """The build a rollback would serve (the last one replaced)."""
    row = db.fetch_one(sa.select(B).where(B.c.status == "standby").order_by(B.c.switched_at.desc()).limit(1))
    return IndexBuild.from_row(row) if row else None


def update_build(db: Database, build_id: str, **values: Any) -> None:
    with db.begin() as conn:
        conn.execute(B.update().where(B.c.id == build_id).values(**values, updated_at=now()))


def _lock_builds(conn: sa.Connection, db: Database) -> None:
    if not db.is_sqlite:  # SQLite's BEGIN IMMEDIATE already serialises writers
        conn.execute(sa.text("LOCK TABLE index_builds IN SHARE ROW EXCLUSIVE MODE"))


def switch_to(db: Database, build_id: str, *, keep_standby: int = 1) -> IndexBuild:
    """Make ``build_id`` the active build, atomically; the one it replaces becomes standby.

    Standbys beyond the newest ``keep_standby`` are retired and their folders removed.
    """
    retired: list[str] = []
    with db.begin() as conn:
        _lock_builds(conn, db)
        target = conn.execute(sa.select(B).where(B.c.id == build_id)).first()
        if target is None:
            raise NotFoundError(f"index build {build_id!r} does not exist", build_id=build_id)
        if target.status == "active":
            return IndexBuild.from_row(target._mapping)
        if target.status not in ("ready", "standby"):
            raise ConflictError(f"index build {build_id!r} is {target.status}; only a ready or standby build "
                                "can serve", build_id=build_id, status=target.status)
        ts = now()
        conn.execute(B.update().where(B.c.status == "active").values(status="standby", switched_at=ts, updated_at=ts))
        conn.execute(B.update().where(B.c.id == build_id).values(status="active", switched_at=ts, updated_at=ts))
        standbys = conn.execute(sa.select(B.c.id, B.c.path).where(B.c.status == "standby")
                                .order_by(B.c.switched_at.desc(), B.c.id.desc())).all()
        for old in standbys[keep_standby:]:
            conn.execute(B.update().where(B.c.id == old.id).values(status="retired", updated_at=ts))
            retired.append(old.path)
    _remove_folders(retired)
    return get_build(db, build_id)


def rollback_index(db: Database) -> IndexBuild:
    """Serve the standby build again (the active one goes back to ``ready``); returns it."""
    with db.begin() as conn:
        _lock_builds(conn, db)
        standby = conn.execute(sa.select(B).where(B.c.status == "standby")
                               .order_by(B.c.switched_at.desc(), B.c.id.desc()).limit(1)).first()
        if standby is None:
            raise ConflictError("no standby index to roll back to")
        ts = now()
        conn.execute(B.update().where(B.c.status == "active").values(status="ready", updated_at=ts))
        conn.execute(B.update().where(B.c.id == standby.id).values(status="active", switched_at=ts, updated_at=ts))
    return get_build(db, standby.id)


def retire_build(db: Database, build_id: str) -> IndexBuild:
    """Retire a build that does not serve, and delete its folder."""
    build = get_build(db, build_id)
    if build.status in ("active", "standby"):
        raise ConflictError(f"index build {build_id!r} is {build.status}; switch away from it first",
                            build_id=build_id)
    update_build(db, build_id, status="retired")
    _remove_folders([build.path])
    return get_build(db, build_id)


def _remove_folders(paths: Iterable[str | None]) -> None:
    for p in paths:
        if p:
            shutil.rmtree(p, ignore_errors=True)
