"""Dataset snapshots: every build is a ``datasets`` row (content hash of the files) plus
``dataset_members`` rows saying which interactions went in, and in which role.

The membership is the lineage the privacy package follows when a user asks to be deleted:
every snapshot (and so every model trained on it) that holds their interactions is found
with one indexed query on ``dataset_members.interaction_id``.

>>> # ds_id = record_snapshot(db, kind="sft", ...); get_dataset(db, ds_id)["row_count"]
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tuneloop.errors import NotFoundError
from tuneloop.ids import new_id, now
from tuneloop.store import schema


def file_hash(*paths: str | Path | None) -> str:
    """sha256 over the bytes of ``paths`` in order (missing / None paths are skipped), each
    prefixed by its length so that moving a row between files changes the hash."""
    h = hashlib.sha256()
    for p in paths:
        if p is None or not Path(p).exists():
            continue
        h.update(str(Path(p).stat().st_size).encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def record_snapshot(db, *, kind: str, format: str, path: str, content_hash: str, row_count: int,
                    config: Mapping[str, Any], counts: Mapping[str, Any],
                    members: Iterable[tuple[str, str]], dataset_id: str | None = None,
                    chunk: int = 5000) -> str:
    """Write the ``datasets`` row and its ``dataset_members`` in one transaction; return the id."""
    ds_id = dataset_id or new_id()
    row = {"id": ds_id, "kind": kind, "format": format, "path": str(path), "content_hash": content_hash,
           "row_count": int(row_count), "config": dict(config), "counts": dict(counts), "created_at": now()}
    seen: dict[str, str] = {}
    for interaction_id, role in members:
        if interaction_id:
            seen.setdefault(interaction_id, role)  # an interaction counts once per snapshot
    with db.begin() as conn:
        conn.execute(schema.datasets.insert(), [row])
        _insert_members(db, conn, [(ds_id, i, r) for i, r in seen.items()], chunk)
    return ds_id


def _insert_members(db, conn, rows: list[tuple[str, str, str]], chunk: int) -> None:
    """Bulk insert of a new snapshot's members (its id is fresh, so nothing can conflict):
    the driver's executemany on SQLite, COPY on PostgreSQL - a million rows in seconds."""
    if not rows:
        return
    if db.is_sqlite:
        conn.exec_driver_sql("INSERT INTO dataset_members (dataset_id, interaction_id, role) VALUES (?, ?, ?)", rows)
        return
    if db.dialect == "postgresql" and db.engine.dialect.driver == "psycopg":
        cur = conn.connection.driver_connection.cursor()
        with cur.copy("COPY dataset_members (dataset_id, interaction_id, role) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)
        return
    for start in range(0, len(rows), chunk):
        conn.execute(schema.dataset_members.insert(),
                     [{"dataset_id": d, "interaction_id": i, "role": r} for d, i, r in rows[start:start + chunk]])


def get_dataset(db, dataset_id: str) -> dict[str, Any]:
    """The ``datasets`` row of ``dataset_id`` (NotFoundError if there is none)."""
    row = db.fetch_one(sa.select(schema.datasets).where(schema.datasets.c.id == dataset_id))
    if row is None:
        raise NotFoundError(f"no dataset {dataset_id!r}", id=dataset_id)
    return row


def list_datasets(db, kind: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Newest snapshots first."""
    d = schema.datasets
    stmt = sa.select(d).order_by(d.c.created_at.desc()).limit(limit)
    if kind is not None:
        stmt = stmt.where(d.c.kind == kind)
    return db.fetch_all(stmt)


def dataset_members(db, dataset_id: str) -> list[dict[str, Any]]:
    """(interaction_id, role) rows of one snapshot."""
    m = schema.dataset_members
    return db.fetch_all(sa.select(m.c.interaction_id, m.c.role).where(m.c.dataset_id == dataset_id)
                        .order_by(m.c.interaction_id))


def datasets_containing(db, interaction_ids: Iterable[str]) -> list[str]:
    """Ids of the snapshots that hold any of ``interaction_ids`` (for deletion lineage)."""
    ids = list(interaction_ids)
    m = schema.dataset_members
    out: set[str] = set()
    for start in range(0, len(ids), 500):
        rows = db.fetch_all(sa.select(m.c.dataset_id).where(m.c.interaction_id.in_(ids[start:start + 500])).distinct())
        out.update(r["dataset_id"] for r in rows)
    return sorted(out)


def verify_snapshot(db, dataset_id: str) -> bool:
    """True if the files of a snapshot still hash to its recorded content hash."""
    row = get_dataset(db, dataset_id)
    cfg = row.get("config") or {}
    return file_hash(row["path"], cfg.get("validation_path")) == row["content_hash"]
