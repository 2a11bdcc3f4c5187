"""Consent per user (``subjects``): may their interactions train models?

>>> from tuneloop.store import Database
>>> db = Database.open("sqlite:///:memory:")
>>> has_training_consent(db, "u1")                  # no row: the default, consent given
True
>>> set_consent(db, "u1", training=False, actor="cli:ana").consent_training
False
>>> has_training_consent(db, "u1"), is_deleted(db, "u1")
(False, False)

The dataset builders join ``subjects`` on every build, so a withdrawal takes effect at the
next build: a user without training consent never enters a new dataset snapshot.
Snapshots built before the withdrawal are listed in the change's audit row
(``snapshots_before``) so an operator can decide whether to retrain; the right to
delete (:mod:`tuneloop.privacy.deletion`) is what taints lineage.

A deleted user keeps a tombstone row (``deleted_at`` set, consent off, no other data):
ingestion asks :func:`deleted_users` to drop rows that arrive for them later.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tuneloop.errors import ConflictError, ValidationError
from tuneloop.ids import now
from tuneloop.privacy.audit import record
from tuneloop.store import schema

__all__ = ["Subject", "check_user_id", "deleted_users", "get_subject", "has_training_consent", "is_deleted",
           "set_consent", "upsert_subject"]

_S = schema.subjects
_MAX_USER_ID = 255
_IN_CHUNK = 500  # ids per IN (...) list: far below SQLite's and PostgreSQL's parameter limits


@dataclass(frozen=True, slots=True)
class Subject:
    """A user as the privacy package sees them: consent and deletion state only."""

    user_id: str
    consent_training: bool
    deleted_at: float | None
    created_at: float | None
    updated_at: float | None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Subject":
        return cls(row["user_id"], bool(row["consent_training"]), row["deleted_at"], row["created_at"],
                   row["updated_at"])

    @classmethod
    def default(cls, user_id: str) -> "Subject":
        """A user never seen by the privacy package: consent given, not deleted, no row."""
        return cls(user_id, True, None, None, None)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "deleted": self.deleted}


def check_user_id(user_id: Any) -> str:
    """``user_id`` if it is a usable id, else a ValidationError naming the field."""
    if not isinstance(user_id, str) or not user_id.strip() or len(user_id) > _MAX_USER_ID:
        raise ValidationError(f"user_id: must be a non-empty string of at most {_MAX_USER_ID} characters",
                              field="user_id")
    return user_id


def _subject(conn: Connection, user_id: str, lock: bool = False) -> Subject | None:
    stmt = sa.select(_S).where(_S.c.user_id == user_id)
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).first()
    return Subject.from_row(row._mapping) if row is not None else None


def get_subject(db: Any, user_id: str) -> Subject:
    """The user's consent and deletion state (the default when there is no row)."""
    check_user_id(user_id)
    row = db.fetch_one(sa.select(_S).where(_S.c.user_id == user_id))
    return Subject.from_row(row) if row is not None else Subject.default(user_id)


def has_training_consent(db: Any, user_id: str | None) -> bool:
    """True unless the user withdrew training consent or was deleted (no user: True)."""
    if user_id is None:
        return True
    s = get_subject(db, user_id)
    return s.consent_training and not s.deleted


def is_deleted(db: Any, user_id: str | None) -> bool:
    """True if the user was deleted: ingestion must not store new rows for them."""
    if not user_id:
        return False
    return db.scalar(sa.select(_S.c.deleted_at).where(_S.c.user_id == user_id)) is not None


def deleted_users(conn_or_db: Any, user_ids: Iterable[str | None]) -> set[str]:
    """The subset of ``user_ids`` that are deleted (one indexed query per 500 ids).

    Takes a connection (inside the ingestion transaction) or a :class:`Database`.
    """
    wanted = sorted({u for u in user_ids if u})
    if not wanted:
        return set()
    out: set[str] = set()
    for start in range(0, len(wanted), _IN_CHUNK):
        stmt = sa.select(_S.c.user_id).where(_S.c.user_id.in_(wanted[start:start + _IN_CHUNK]),
                                             _S.c.deleted_at.is_not(None))
        if isinstance(conn_or_db, Connection):
            out.update(r[0] for r in conn_or_db.execute(stmt))
        else:
            out.update(r["user_id"] for r in conn_or_db.fetch_all(stmt))
    return out


def upsert_subject(conn: Connection, user_id: str, **values: Any) -> Subject:
    """Insert or update the subject row inside the caller's transaction; return the new state."""
    old = _subject(conn, user_id, lock=True)
    ts = now()
    if old is None:
        row = {"user_id": user_id, "consent_training": True, "deleted_at": None, "created_at": ts,
               "updated_at": ts, **values}
        conn.execute(_S.insert().values(**row))
        return Subject.from_row(row)
    conn.execute(_S.update().where(_S.c.user_id == user_id).values(updated_at=ts, **values))
    return Subject.from_row({**asdict(old), "updated_at": ts, **values})


def _snapshots_of(conn: Connection, user_id: str) -> list[str]:
    it, m = schema.interactions, schema.dataset_members
    stmt = (sa.select(m.c.dataset_id).distinct()
            .where(m.c.interaction_id.in_(sa.select(it.c.id).where(it.c.user_id == user_id)))
            .order_by(m.c.dataset_id))
    return [r[0] for r in conn.execute(stmt)]


def set_consent(db: Any, user_id: str, *, training: bool, actor: str) -> Subject:
    """Grant or withdraw training consent; audited with the state before and after.

    A deleted user cannot be given consent back (ConflictError): their data is gone and
    rows arriving for them are dropped.
    """
    check_user_id(user_id)
    if not isinstance(training, bool):
        raise ValidationError("training: expected true or false", field="training")
    with db.begin() as conn:
        old = _subject(conn, user_id, lock=True)
        if old is not None and old.deleted:
            raise ConflictError(f"user {user_id!r} was deleted; consent cannot be changed", user_id=user_id)
        before = (old or Subject.default(user_id))
        new = upsert_subject(conn, user_id, consent_training=training)
        after: dict[str, Any] = {"consent_training": training}
        if before.consent_training and not training:
            after["snapshots_before"] = _snapshots_of(conn, user_id)
        record(conn, actor, "user.consent", f"user:{user_id}", {"consent_training": before.consent_training},
               after)
    return new

