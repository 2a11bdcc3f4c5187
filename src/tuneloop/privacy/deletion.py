"""The right to delete: a user's data goes, a tombstone stays, and tainted lineage is flagged.

>>> from tuneloop.store import Database
>>> db = Database.open("sqlite:///:memory:")
>>> report = delete_user(db, "u1", actor="cli:ana")
>>> report.interactions, report.already_deleted, is_deleted(db, "u1")
(0, False, True)

One transaction does all of it (a failure leaves nothing half-deleted):

1. delete the user's interactions; the feedback on them and the feedback the user gave
   (``feedback.user_id``); the annotations and retrieval logs of their interactions; the
   golden examples proposed from their interactions (copies of their text);
2. mark every dataset snapshot holding any of their interactions as tainted
   (``dataset_members`` is the lineage; the membership rows stay, they hold only ids);
3. mark every model version trained on a tainted snapshot as tainted - through
   ``dataset_id``, the snapshots named in its ``lineage``, and versions whose base model is
   a tainted version's weights - with the same ``mark_tainted`` audit rows the registry
   writes, so ``tuneloop registry show`` lists why;
4. leave a tombstone in ``subjects``: ``deleted_at`` set, consent off, no other data;
5. write one ``user.delete`` audit row: who, when, the counts, the tainted ids.

Then, after the commit, one more sweep removes rows that a concurrent ingestion
transaction committed for the user while the deletion ran (on PostgreSQL such a writer
may have checked the tombstone just before it existed). Ingestion drops later rows for a
tombstoned user (:func:`tuneloop.privacy.consent.deleted_users`), and the retention job
sweeps tombstoned users again on every run.

Deleting again is safe: it sweeps whatever arrived since and reports ``already_deleted``.
Dataset files on disk are snapshots of many users: they are listed in the report
(``dataset_paths``) and removed only with ``purge_files=True``.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tuneloop.ids import new_id, now
from tuneloop.privacy.audit import record
from tuneloop.privacy.consent import _subject, check_user_id, is_deleted, upsert_subject
from tuneloop.store import schema

__all__ = ["DeletionReport", "delete_user", "purge_subject_rows", "tainted_versions_of", "is_deleted"]

log = logging.getLogger("tuneloop.privacy")
_IT, _FB, _AN, _GE = schema.interactions, schema.feedback, schema.annotations, schema.golden_examples
_DS, _DM, _MV, _S = schema.datasets, schema.dataset_members, schema.model_versions, schema.subjects
_RL = getattr(schema, "retrieval_logs", None)  # the retrieval package's table (migration 0002)


@dataclass(frozen=True)
class DeletionReport:
    """What one deletion removed and flagged."""

    user_id: str
    deletion_id: str
    actor: str
    deleted_at: float
    already_deleted: bool
    interactions: int
    feedback: int
    annotations: int
    golden_examples: int
    retrieval_logs: int
    tainted_datasets: tuple[str, ...]
    tainted_versions: tuple[str, ...]
    champion_tainted: tuple[str, ...] = ()
    dataset_paths: tuple[str, ...] = ()
    purged_files: tuple[str, ...] = ()
    late_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- the rows of one user
def _user_interactions(user_ids: list[str]) -> sa.Select:
    return sa.select(_IT.c.id).where(_IT.c.user_id.in_(user_ids))


def _count(conn: Connection, table: sa.Table, where: sa.ColumnElement[bool]) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar() or 0)


def _delete_rows(conn: Connection, user_ids: list[str]) -> dict[str, int]:
    """Delete every row of ``user_ids``; counts per table. Children first, interactions last."""
    mine = _user_interactions(user_ids)
    out = {}
    # Counted before deleting: rowcount of a DELETE with a subquery is reliable on both
    # databases, but a count keeps the report right for drivers that answer -1.
    steps = [("feedback", _FB, sa.or_(_FB.c.interaction_id.in_(mine), _FB.c.user_id.in_(user_ids))),
             ("annotations", _AN, _AN.c.interaction_id.in_(mine)),
             ("golden_examples", _GE, _GE.c.source_interaction_id.in_(mine))]
    if _RL is not None:  # retrieval logs keep the query text
        steps.append(("retrieval_logs", _RL, _RL.c.interaction_id.in_(mine)))
    steps.append(("interactions", _IT, _IT.c.user_id.in_(user_ids)))
    for name, table, where in steps:
        out[name] = _count(conn, table, where)
        if out[name]:
            conn.execute(table.delete().where(where))
    return out


def purge_subject_rows(db: Any, user_ids: Iterable[str] | None = None, *, actor: str | None = None) -> int:
    """Delete rows that arrived for deleted users (all tombstoned users when None).

    Returns how many rows went (audited as ``user.purge_late_rows`` when ``actor`` is given
    and something went). Used after a deletion commits and by the retention job.
    """
    with db.begin() as conn:
        if user_ids is None:
            ids = [r[0] for r in conn.execute(sa.select(_S.c.user_id).where(_S.c.deleted_at.is_not(None)))]
        else:
            ids = sorted(set(user_ids))
        total = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            counts = _delete_rows(conn, chunk)
            if actor and any(counts.values()):
                target = f"user:{chunk[0]}" if len(chunk) == 1 else f"users:{len(chunk)}"
                record(conn, actor, "user.purge_late_rows", target, None, counts)
            total += sum(counts.values())
    return total


# ---------------------------------------------------------------- lineage
def _lineage_datasets(lineage: Any) -> set[str]:
    """Dataset ids a version's ``lineage`` JSON names (``dataset_id``, ``datasets``)."""
    out: set[str] = set()
    if not isinstance(lineage, Mapping):
        return out
    if isinstance(lineage.get("dataset_id"), str):
        out.add(lineage["dataset_id"])
    ds = lineage.get("datasets")
    values = ds.values() if isinstance(ds, Mapping) else ds if isinstance(ds, list) else ()
    for v in values:
        if isinstance(v, str):
            out.add(v)
        elif isinstance(v, Mapping) and isinstance(v.get("id"), str):
            out.add(v["id"])
    return out


def tainted_versions_of(versions: Iterable[Mapping[str, Any]], datasets: set[str]) -> set[str]:
    """Ids of the versions whose lineage reaches ``datasets`` (a pure function on rows).

    A version is tainted when its ``dataset_id`` or a snapshot named in its ``lineage`` is
    tainted, or when its ``base_model`` is the id or the weights (adapter/model path) of a
    tainted version: training on top of those weights inherits the data. ``parent_id``
    alone does not taint: it names the champion a candidate replaces, not its weights.

    >>> rows = [{"id": "v1", "dataset_id": "d1"}, {"id": "v2", "dataset_id": "d2", "base_model": "/m/v1"},
    ...         {"id": "v3", "dataset_id": "d3"}]
    >>> rows[0]["model_path"] = "/m/v1"
    >>> sorted(tainted_versions_of(rows, {"d1"}))
    ['v1', 'v2']
    """
    rows = list(versions)
    tainted = {r["id"] for r in rows
               if r.get("dataset_id") in datasets or _lineage_datasets(r.get("lineage")) & datasets}
    changed = True
    while changed:  # weights inherited from a tainted version: follow to a fixed point
        weights = set()
        for r in rows:
            if r["id"] in tainted:
                weights.update(w for w in (r["id"], r.get("adapter_path"), r.get("model_path")) if w)
        grown = {r["id"] for r in rows if r.get("base_model") in weights} - tainted
        changed = bool(grown)
        tainted |= grown
    return tainted


def _taint(conn: Connection, user_ids: list[str], actor: str, reason: str) -> tuple[list[str], list[str], list[str]]:
    """Mark snapshots and versions; return (dataset ids, newly tainted version ids, paths)."""
    held = sa.select(_DM.c.dataset_id).where(_DM.c.interaction_id.in_(_user_interactions(user_ids)))
    rows = conn.execute(sa.select(_DS.c.id, _DS.c.tainted, _DS.c.path, _DS.c.config)
                        .where(_DS.c.id.in_(held)).order_by(_DS.c.id)).all()
    ds_ids = [r.id for r in rows]
    paths = []
    for r in rows:
        paths.append(r.path)
        extra = (r.config or {}).get("validation_path") if isinstance(r.config, Mapping) else None
        paths.extend([extra] if extra else [])
    fresh = [r.id for r in rows if not r.tainted]
    if fresh:
        conn.execute(_DS.update().where(_DS.c.id.in_(fresh)).values(tainted=True))
    for ds in fresh:
        record(conn, actor, "dataset.taint", f"dataset:{ds}", {"tainted": False}, {"tainted": True, "reason": reason})
    all_tainted = {r[0] for r in conn.execute(sa.select(_DS.c.id).where(_DS.c.tainted.is_(True)))}
    versions = [dict(r._mapping) for r in conn.execute(sa.select(
        _MV.c.id, _MV.c.dataset_id, _MV.c.lineage, _MV.c.base_model, _MV.c.adapter_path, _MV.c.model_path,
        _MV.c.tainted))]
    reach = tainted_versions_of(versions, all_tainted)
    new_versions = sorted(v["id"] for v in versions if v["id"] in reach and not v["tainted"])
    if new_versions:
        conn.execute(_MV.update().where(_MV.c.id.in_(new_versions)).values(tainted=True))
    for vid in new_versions:  # the registry's own action name: `tuneloop registry show` lists it
        record(conn, actor, "mark_tainted", f"version:{vid}", {"tainted": False}, {"tainted": True, "reason": reason})
    return ds_ids, new_versions, [p for p in paths if p]


def _champions(conn: Connection, version_ids: list[str]) -> list[str]:
    if not version_ids:
        return []
    al = schema.aliases
    rows = conn.execute(sa.select(al.c.name, al.c.version_id).where(al.c.version_id.in_(version_ids)))
    return sorted(f"{r.name}={r.version_id}" for r in rows if r.name.split(":")[-1] == "champion")


# ---------------------------------------------------------------- the operation
def delete_user(db: Any, user_id: str, actor: str, *, purge_files: bool = False) -> DeletionReport:
    """Delete everything of ``user_id``, taint its lineage, leave a tombstone; audited.

    ``actor`` names who asked (``cli:<login>``, ``key:<name>/<id>``). See the module docs.
    """
    check_user_id(user_id)
    deletion_id, ts = new_id(), now()
    reason = f"right to delete (deletion {deletion_id})"
    with db.begin() as conn:
        old = _subject(conn, user_id, lock=True)
        counts = _delete_rows_keep_lineage(conn, user_id, actor, reason)
        upsert_subject(conn, user_id, consent_training=False, deleted_at=old.deleted_at if old and old.deleted_at else ts)
        after = {"deletion_id": deletion_id, **{k: v for k, v in counts.items() if k != "paths"}}
        record(conn, actor, "user.delete", f"user:{user_id}",
               {"consent_training": old.consent_training if old else True,
                "deleted_at": old.deleted_at if old else None}, after)
    late = purge_subject_rows(db, [user_id], actor=actor)
    purged = _purge_files(db, counts["paths"], actor, deletion_id) if purge_files else ()
    report = DeletionReport(
        user_id=user_id, deletion_id=deletion_id, actor=actor, deleted_at=ts,
        already_deleted=bool(old and old.deleted_at), interactions=counts["interactions"],
        feedback=counts["feedback"], annotations=counts["annotations"], golden_examples=counts["golden_examples"],
        retrieval_logs=counts.get("retrieval_logs", 0),
        tainted_datasets=tuple(counts["tainted_datasets"]), tainted_versions=tuple(counts["tainted_versions"]),
        champion_tainted=tuple(counts["champion_tainted"]), dataset_paths=tuple(counts["paths"]),
        purged_files=tuple(purged), late_rows=late)
    if report.champion_tainted:
        log.warning("deletion %s tainted the serving champion (%s): retrain or roll back",
                    deletion_id, ", ".join(report.champion_tainted))
    return report


def _delete_rows_keep_lineage(conn: Connection, user_id: str, actor: str, reason: str) -> dict[str, Any]:
    # Taint first: the membership query needs the interactions that are about to go.
    ds_ids, versions, paths = _taint(conn, [user_id], actor, reason)
    counts: dict[str, Any] = _delete_rows(conn, [user_id])
    counts.update(tainted_datasets=ds_ids, tainted_versions=versions, paths=paths,
                  champion_tainted=_champions(conn, versions))
    return counts


def _purge_files(db: Any, paths: list[str], actor: str, deletion_id: str) -> list[str]:
    """Remove the tainted snapshots' files (after the commit: a file cannot be rolled back)."""
    removed = []
    for p in dict.fromkeys(paths):
        path = Path(p)
        try:
            if path.is_file():
                os.unlink(path)
                removed.append(str(path))
        except OSError as exc:
            log.error("deletion %s: cannot remove %s: %s", deletion_id, path, exc)
    with db.begin() as conn:
        record(conn, actor, "dataset.purge_files", f"deletion:{deletion_id}", {"paths": paths}, {"removed": removed})
    return removed
