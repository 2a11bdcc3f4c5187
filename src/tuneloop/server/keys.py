"""API keys: created once, stored hashed, checked on every request.

>>> from tuneloop.store import Database
>>> db = Database.open("sqlite:///:memory:")
>>> created = create_key(db, "ingest", name="my app")
>>> created.secret.startswith("tl_ingest_")
True
>>> verify_key(db, created.secret).scope
'ingest'

A raw key is ``tl_<scope>_<32 random base62 characters>`` (~190 bits). Only its SHA-256
and a short prefix (to recognise it in ``tuneloop keys list``) are stored; the raw key is
shown once, at creation. A fast hash is right here: the secret is random, not a password,
so there is nothing for a slow hash to protect against.

Scopes, what they allow:

    admin   everything
    read    GET endpoints: statistics, models, exports
    ingest  write interactions and feedback, call the gateway

A key's permissions are the set :data:`GRANTS` gives its scope; a route asks for one of
the permissions ``ingest``, ``read`` or ``admin``.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tuneloop.errors import AuthError, ForbiddenError, NotFoundError, ValidationError
from tuneloop.ids import new_id, now
from tuneloop.store import schema

__all__ = ["SCOPES", "GRANTS", "ApiKey", "CreatedKey", "KeyVerifier", "create_key", "list_keys",
           "revoke_key", "verify_key", "hash_key", "require"]

SCOPES = ("ingest", "read", "admin")
GRANTS: dict[str, frozenset[str]] = {
    "ingest": frozenset({"ingest"}),
    "read": frozenset({"read"}),
    "admin": frozenset({"ingest", "read", "admin"}),
}
_ALPHABET = string.ascii_letters + string.digits
_SECRET_LEN = 32
_PREFIX_EXTRA = 6  # characters of the random part kept in ``prefix`` to tell keys apart


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key (never the raw secret)."""

    id: str
    name: str | None
    prefix: str
    scope: str
    created_at: float
    revoked_at: float | None = None
    last_used_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, permission: str) -> bool:
        return self.active and permission in GRANTS.get(self.scope, frozenset())


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """The result of :func:`create_key`: the stored key and its raw secret (shown once)."""

    key: ApiKey
    secret: str


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def _row_to_key(row: dict[str, Any]) -> ApiKey:
    return ApiKey(id=row["id"], name=row["name"], prefix=row["prefix"], scope=row["scope"],
                  created_at=row["created_at"], revoked_at=row["revoked_at"], last_used_at=row["last_used_at"])


def create_key(db, scope: str, name: str | None = None) -> CreatedKey:
    """Create a key of ``scope`` (ingest | read | admin); the raw secret is returned once."""
    if scope not in SCOPES:
        raise ValidationError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}", field="scope")
    head = f"tl_{scope}_"
    raw = head + "".join(secrets.choice(_ALPHABET) for _ in range(_SECRET_LEN))
    row = {"id": new_id(), "name": name, "prefix": raw[: len(head) + _PREFIX_EXTRA],
           "key_hash": hash_key(raw), "scope": scope, "created_at": now()}
    with db.begin() as conn:
        conn.execute(schema.api_keys.insert(), row)
    return CreatedKey(key=_row_to_key({**row, "revoked_at": None, "last_used_at": None}), secret=raw)


def list_keys(db, *, include_revoked: bool = True) -> list[ApiKey]:
    """All keys, oldest first."""
    stmt = sa.select(schema.api_keys).order_by(schema.api_keys.c.created_at)
    if not include_revoked:
        stmt = stmt.where(schema.api_keys.c.revoked_at.is_(None))
    return [_row_to_key(r) for r in db.fetch_all(stmt)]


def revoke_key(db, key_id: str) -> ApiKey:
    """Revoke the key with id ``key_id`` (or a unique prefix of the id or of the key)."""
    t = schema.api_keys
    rows = db.fetch_all(sa.select(t).where(sa.or_(t.c.id == key_id, t.c.id.startswith(key_id),
                                                  t.c.prefix.startswith(key_id))))
    exact = [r for r in rows if r["id"] == key_id]
    rows = exact or rows
    if not rows:
        raise NotFoundError(f"no API key with id {key_id!r}", id=key_id)
    if len(rows) > 1:
        raise ValidationError(f"{key_id!r} matches {len(rows)} keys; give more of the id", field="id")
    row = rows[0]
    if row["revoked_at"] is None:
        row["revoked_at"] = now()
        with db.begin() as conn:
            conn.execute(t.update().where(t.c.id == row["id"]).values(revoked_at=row["revoked_at"]))
    return _row_to_key(row)


def verify_key(db, raw: str | None) -> ApiKey:
    """The active key whose secret is ``raw``; :class:`AuthError` when there is none."""
    if not raw:
        raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
    t = schema.api_keys
    digest = hash_key(raw)
    head = raw[: raw.find("_", 3) + 1 + _PREFIX_EXTRA] if raw.startswith("tl_") else raw[:16]
    candidates = db.fetch_all(sa.select(t).where(t.c.prefix == head))
    # Compare in constant time, so response timing says nothing about how close a guess was.
    match = next((r for r in candidates if hmac.compare_digest(r["key_hash"], digest)), None)
    if match is None:
        raise AuthError("invalid API key")
    if match["revoked_at"] is not None:
        raise AuthError("API key revoked")
    return _row_to_key(match)


def require(key: ApiKey, permission: str | tuple[str, ...]) -> None:
    """Raise :class:`ForbiddenError` unless ``key`` grants ``permission`` (or one of several)."""
    wanted = (permission,) if isinstance(permission, str) else permission
    if not any(key.allows(p) for p in wanted):
        raise ForbiddenError(f"API key {key.prefix}… has scope {key.scope!r}; this needs "
                             f"{' or '.join(repr(p) for p in wanted)}", scope=key.scope)


class KeyVerifier:
    """:func:`verify_key` with a short cache, so most requests skip the database.

    A revoked key keeps working for at most ``ttl_s`` seconds in a server that saw it
    recently; ``ttl_s=0`` turns the cache off. ``last_used_at`` is written at most once a
    minute per key, never on every request.
    """

    def __init__(self, db, ttl_s: float = 5.0) -> None:
        self.db, self.ttl_s = db, ttl_s
        self._cache: dict[str, tuple[float, ApiKey]] = {}
        self._lock = threading.Lock()

    def cached(self, raw: str | None) -> ApiKey | None:
        """The key from the cache, or None when the database must be asked."""
        if not raw or self.ttl_s <= 0:
            return None
        hit = self._cache.get(hash_key(raw))
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        return None

    def verify(self, raw: str | None, permissions: str | tuple[str, ...] = ()) -> ApiKey:
        """The key of ``raw``, checked to grant one of ``permissions`` (when given).

        A refused request writes nothing: ``last_used_at`` is touched only after the check.
        """
        key = self.cached(raw)
        if key is not None:
            if permissions:
                require(key, permissions)
            return key
        key = verify_key(self.db, raw)
        if permissions:
            require(key, permissions)
        if key.last_used_at is None or now() - key.last_used_at > 60:
            t = schema.api_keys
            with self.db.begin() as conn:
                conn.execute(t.update().where(t.c.id == key.id).values(last_used_at=now()))
        if self.ttl_s > 0:
            with self._lock:
                if len(self._cache) > 10_000:  # bounded: many distinct keys just refill it
                    self._cache.clear()
                self._cache[hash_key(raw)] = (time.monotonic(), key)
        return key
