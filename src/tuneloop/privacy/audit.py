"""The audit log: who did what, when, to which target, with the state before and after.

>>> from tuneloop.store import Database
>>> db = Database.open("sqlite:///:memory:")
>>> with db.begin() as conn:
...     record(conn, "cli:ana", "user.consent", "user:u1", {"consent_training": True},
...            {"consent_training": False})
>>> [(e.actor, e.action, e.after) for e in list_audit(db, action="user.consent")]
[('cli:ana', 'user.consent', {'consent_training': False})]

Append-only by construction: this module has an INSERT path and read paths, nothing
else, and migration ``0003`` adds database triggers that refuse any UPDATE or DELETE on
``audit_log`` (SQLite and PostgreSQL), so neither the API nor a bug can rewrite history.
Rows are written inside the transaction of the change they describe: a change that
rolls back leaves no audit row, and a change that commits always has one.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tuneloop.errors import ValidationError
from tuneloop.registry.versions import write_audit
from tuneloop.store import schema

__all__ = ["AuditEntry", "actor_of_key", "list_audit", "record", "is_protected", "MAX_LIMIT"]

_A = schema.audit_log
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit row. ``before``/``after`` are JSON values (None when not applicable)."""

    id: int
    ts: float
    actor: str
    action: str
    target: str | None
    before: Any
    after: Any

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "AuditEntry":
        return cls(id=int(row["id"]), ts=float(row["ts"]), actor=row["actor"], action=row["action"],
                   target=row["target"], before=row["before"], after=row["after"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def record(conn: Connection, actor: str, action: str, target: str | None,
           before: Any = None, after: Any = None) -> None:
    """Append one audit row inside the caller's transaction (``registry.write_audit``)."""
    if not actor or not isinstance(actor, str):
        raise ValidationError("actor: every audited action needs who did it", field="actor")
    write_audit(conn, actor[:255], action, target, before, after)


def actor_of_key(key: Any) -> str:
    """The audit actor for an API key (``key:<name>/<id>``); never the secret.

    None (a server in insecure-dev mode, no key checked) is ``insecure-dev``.
    """
    if key is None:
        return "insecure-dev"
    name = getattr(key, "name", None) or getattr(key, "prefix", "?")
    return f"key:{name}/{key.id}"


def list_audit(db: Any, *, actor: str | None = None, action: str | None = None, target: str | None = None,
               since: float | None = None, until: float | None = None, before_id: int | None = None,
               limit: int = 100) -> list[AuditEntry]:
    """Audit rows, newest first, filtered; page with ``before_id`` (the last id you saw).

    ``action`` ending in ``.`` or ``*`` matches a prefix (``"user."`` -> every user action).
    """
    if not 1 <= int(limit) <= MAX_LIMIT:
        raise ValidationError(f"limit: must be between 1 and {MAX_LIMIT}, got {limit}", field="limit")
    stmt = sa.select(_A).order_by(_A.c.id.desc()).limit(int(limit))
    if actor:
        stmt = stmt.where(_A.c.actor == actor)
    if action:
        if action.endswith(("*", ".")):
            stmt = stmt.where(_A.c.action.startswith(action.rstrip("*"), autoescape=True))
        else:
            stmt = stmt.where(_A.c.action == action)
    if target:
        stmt = stmt.where(_A.c.target == target)
    if since is not None:
        stmt = stmt.where(_A.c.ts >= float(since))
    if until is not None:
        stmt = stmt.where(_A.c.ts < float(until))
    if before_id is not None:
        stmt = stmt.where(_A.c.id < int(before_id))
    return [AuditEntry.from_row(r) for r in db.fetch_all(stmt)]


def is_protected(db: Any) -> bool:
    """True when the database refuses UPDATE and DELETE on ``audit_log`` (migration 0003)."""
    if db.is_sqlite:
        names = {r["name"] for r in db.fetch_all(sa.text(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'"))}
        return {"audit_log_no_update", "audit_log_no_delete"} <= names
    names = {r["tgname"] for r in db.fetch_all(sa.text(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_log'::regclass AND NOT tgisinternal"))}
    return "audit_log_immutable" in names
