"""Model versions with lineage, MLflow-style aliases, promotion and one-call rollback.

>>> from tuneloop.store import Database
>>> reg = Registry(Database.open("sqlite:///:memory:"))
>>> _ = reg.register("v1", backend="scripted", base_model="tiny")
>>> _ = reg.promote("v1")
>>> _ = reg.register("v2", backend="scripted", base_model="tiny", parent_id="v1")
>>> reg.promote("v2").id, reg.get("v1").status
('v2', 'archived')
>>> reg.rollback().id, reg.get("v2").status
('v1', 'rejected')

Kinds and levers. A version that answers users is a ``generator`` version, whatever made it:
a fine-tuned adapter, a merged model, or only a new prompt (a
:class:`~tuneloop.prompts.spec.PromptSpec` over the parent's base and adapter). Its
``lever`` (``lineage["lever"]``: ``prompt``, ``adapter``, ``model`` or ``base``) says which
change made it; ``registry list`` shows it. ``retriever`` and ``reranker`` versions serve
retrieval; ``prompt`` versions are stand-alone prompt templates for applications that render
prompts themselves (aliases ``prompt:champion`` ...); the loop's prompt challengers are
generator versions, so they are served, gated and A/B tested like any other.

Aliases: ``champion``, ``challenger`` and ``shadow`` name generator versions; other kinds
use ``<kind>:champion`` (``retriever:champion``). An alias row keeps the version it pointed
at before (``previous_version_id``), so rollback is one call; the audit log holds the full
history, so repeated rollbacks walk further back. Every change writes an ``audit_log`` row.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tuneloop.errors import ConflictError, NotFoundError, ValidationError
from tuneloop.ids import new_id, now
from tuneloop.store import Database, schema

__all__ = ["Alias", "KINDS", "LEVERS", "ModelVersion", "Registry", "STATUSES", "alias_for", "jsonable", "write_audit"]

KINDS = ("generator", "retriever", "reranker", "prompt")
STATUSES = ("candidate", "active", "archived", "rejected")
LEVERS = ("prompt", "adapter", "model", "base")  # what changed to make a version (lineage["lever"])
RESERVED = ("champion", "challenger", "shadow")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+/-]{0,63}$")
_mv, _al, _audit = schema.model_versions, schema.aliases, schema.audit_log
_KEEP = object()  # sentinel: "previous = whatever the alias pointed at"


def alias_for(role: str, kind: str = "generator") -> str:
    """The alias name of ``role`` (champion/challenger/shadow) for versions of ``kind``.

    >>> alias_for("champion"), alias_for("champion", "retriever")
    ('champion', 'retriever:champion')
    """
    return role if kind == "generator" else f"{kind}:{role}"


def jsonable(value: Any) -> Any:
    """Make ``value`` storable in a JSON column on both databases.

    Dataclasses become dicts, tuples lists, numpy scalars Python numbers; NaN and infinity
    become ``None`` because PostgreSQL's JSONB rejects them.
    """
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()  # numpy scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "tolist"):
        return jsonable(value.tolist())
    return str(value)


def write_audit(conn: Connection, actor: str, action: str, target: str | None,
                before: Any = None, after: Any = None) -> None:
    """Append one audit row inside the caller's transaction."""
    conn.execute(_audit.insert().values(ts=now(), actor=actor, action=action, target=target,
                                        before=jsonable(before), after=jsonable(after)))


@dataclass(frozen=True)
class ModelVersion:
    """One registered model version: what to serve and where it came from."""

    id: str
    kind: str
    backend: str
    base_model: str | None
    adapter_path: str | None
    model_path: str | None
    prompt: Any
    params: dict | None
    parent_id: str | None
    dataset_id: str | None
    train_run_id: str | None
    metrics: dict | None
    lineage: dict | None
    status: str
    tainted: bool
    created_at: float

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "ModelVersion":
        return cls(**{f.name: row[f.name] for f in fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def lever(self) -> str:
        """Which change made this version: ``lineage["lever"]``, else read off its columns.

        >>> ModelVersion.from_row({**dict.fromkeys(_COLUMNS), "lineage": {"lever": "prompt"}}).lever
        'prompt'
        """
        recorded = (self.lineage or {}).get("lever") if isinstance(self.lineage, Mapping) else None
        if recorded in LEVERS:
            return recorded
        if self.model_path:
            return "model"
        if self.adapter_path:
            return "adapter"
        return "prompt" if self.parent_id and self.prompt else "base"

    @property
    def prompt_spec(self):
        """The version's :class:`~tuneloop.prompts.spec.PromptSpec` (None without a prompt)."""
        from tuneloop.prompts.spec import PromptSpec

        return PromptSpec.from_value(self.prompt)


_COLUMNS = tuple(f.name for f in fields(ModelVersion))


@dataclass(frozen=True)
class Alias:
    name: str
    version_id: str
    previous_version_id: str | None
    updated_at: float


class Registry:
    """Model versions, aliases and their audited changes in one store.

    ``actor`` names who makes the changes in the audit log (a user, ``loop``, ``cli``).
    """

    def __init__(self, db: Database, *, actor: str = "system") -> None:
        self.db, self.actor = db, actor

    # ------------------------------------------------------------------ versions
    def register(self, id: str | None = None, *, kind: str = "generator", backend: str = "local",
                 base_model: str | None = None, adapter_path: str | None = None,
                 model_path: str | None = None, prompt: Any = None, params: Mapping | None = None,
                 parent_id: str | None = None, dataset_id: str | None = None,
                 train_run_id: str | None = None, metrics: Mapping | None = None,
                 lineage: Mapping | None = None, status: str = "candidate") -> ModelVersion:
        """Register a version (``id`` defaults to a new UUIDv7); ConflictError if it exists.

        >>> reg.register("v9", backend="openai", base_model="gpt-4o-mini",
        ...              params={"temperature": 0.2}).status  # doctest: +SKIP
        'candidate'
        """
        vid = id or new_id()
        _validate_version(vid, kind, backend, status)
        row = {"id": vid, "kind": kind, "backend": backend, "base_model": base_model,
               "adapter_path": _str_or_none(adapter_path), "model_path": _str_or_none(model_path),
               "prompt": _prompt_json(prompt), "params": jsonable(dict(params)) if params is not None else None,
               "parent_id": parent_id, "dataset_id": dataset_id, "train_run_id": train_run_id,
               "metrics": jsonable(dict(metrics)) if metrics is not None else None,
               "lineage": jsonable(dict(lineage)) if lineage is not None else None,
               "status": status, "tainted": False, "created_at": now()}
        with self.db.begin() as conn:
            if conn.execute(sa.select(_mv.c.id).where(_mv.c.id == vid)).first() is not None:
                raise ConflictError(f"model version {vid!r} is already registered", version_id=vid)
            if parent_id and conn.execute(sa.select(_mv.c.id).where(_mv.c.id == parent_id)).first() is None:
                raise NotFoundError(f"parent version {parent_id!r} is not registered", version_id=parent_id)
            conn.execute(_mv.insert().values(**row))
            write_audit(conn, self.actor, "register", f"version:{vid}", None, row)
        return ModelVersion.from_row(row)

    def register_prompt(self, id: str | None, prompt: Any, *, parent: str = "champion",
                        lineage: Mapping | None = None, **kw: Any) -> ModelVersion:
        """A version serving ``parent``'s base, adapter and params with a new prompt (the prompt lever).

        ``prompt`` is a :class:`~tuneloop.prompts.spec.PromptSpec`, its dict or a system prompt;
        ``kw`` goes to :meth:`register` (dataset_id, train_run_id, metrics, status).

        >>> reg.register_prompt("v3", {"system": "Answer in one word."}, parent="v2").lever  # doctest: +SKIP
        'prompt'
        """
        from tuneloop.prompts.spec import PromptSpec

        base = self.resolve(parent)
        spec = PromptSpec.from_value(prompt)
        if spec is None or spec.is_empty:
            raise ValidationError("a prompt version needs a system prompt, template, few-shot turns or sampling",
                                  field="prompt")
        if base.prompt_spec is not None and base.prompt_spec.fingerprint() == spec.fingerprint():
            raise ConflictError(f"{base.id!r} already serves this prompt", version_id=base.id)
        return self.register(id, kind=base.kind, backend=base.backend, base_model=base.base_model,
                             adapter_path=base.adapter_path, model_path=base.model_path, prompt=spec,
                             params=base.params, parent_id=base.id,
                             lineage={"lever": "prompt", "parent": base.id, **dict(lineage or {})}, **kw)

    def find(self, version_id: str) -> ModelVersion | None:
        row = self.db.fetch_one(sa.select(_mv).where(_mv.c.id == version_id))
        return ModelVersion.from_row(row) if row else None

    def get(self, version_id: str) -> ModelVersion:
        """The version ``version_id``; NotFoundError names it when it does not exist."""
        found = self.find(version_id)
        if found is None:
            raise NotFoundError(f"model version {version_id!r} is not registered", version_id=version_id)
        return found

    def resolve(self, name: str) -> ModelVersion:
        """A version by id or by alias name (``champion``, ``retriever:champion``, ...)."""
        found = self.find(name)
        if found is not None:
            return found
        aliased = self.get_alias(name)
        if aliased is None:
            raise NotFoundError(f"{name!r} is neither a registered version nor a set alias", name=name)
        return aliased

    def list(self, *, kind: str | None = None, status: str | None = None,
             limit: int | None = None) -> list[ModelVersion]:
        """Versions, newest first, optionally of one ``kind`` or ``status``."""
        stmt = sa.select(_mv).order_by(_mv.c.created_at.desc(), _mv.c.id.desc())
        if kind:
            stmt = stmt.where(_mv.c.kind == kind)
        if status:
            stmt = stmt.where(_mv.c.status == status)
        if limit:
            stmt = stmt.limit(limit)
        return [ModelVersion.from_row(r) for r in self.db.fetch_all(stmt)]

    def update_metrics(self, version_id: str, metrics: Mapping[str, Any]) -> ModelVersion:
        """Merge ``metrics`` (e.g. an evaluation's pass rate) into the version's metrics."""
        with self.db.begin() as conn:
            before = self._get(conn, version_id)
            merged = {**(before.metrics or {}), **jsonable(dict(metrics))}
            conn.execute(_mv.update().where(_mv.c.id == version_id).values(metrics=merged))
            write_audit(conn, self.actor, "update_metrics", f"version:{version_id}",
                        {"metrics": before.metrics}, {"metrics": merged})
        return self.get(version_id)

    def archive(self, version_id: str) -> ModelVersion:
        """Retire a version; it loses its challenger/shadow aliases. A champion cannot be archived."""
        with self.db.begin() as conn:
            version = self._get(conn, version_id)
            champ = self._alias(conn, alias_for("champion", version.kind))
            if champ and champ.version_id == version_id:
                raise ConflictError(f"{version_id!r} is the {version.kind} champion: promote another "
                                    "version or roll back before archiving it", version_id=version_id)
            self._drop_roles(conn, version)
            self._set_status(conn, version, "archived", "archive")
        return self.get(version_id)

    def reject(self, version_id: str, reason: str | None = None) -> ModelVersion:
        """Mark a version as rejected (lost an experiment or a gate); drops its aliases."""
        with self.db.begin() as conn:
            version = self._get(conn, version_id)
            self._drop_roles(conn, version)
            self._set_status(conn, version, "rejected", "reject", reason)
        return self.get(version_id)

    def mark_tainted(self, version_id: str, reason: str | None = None) -> ModelVersion:
        """Flag a version trained on data that must not be used (e.g. a deletion request)."""
        with self.db.begin() as conn:
            version = self._get(conn, version_id)
            conn.execute(_mv.update().where(_mv.c.id == version_id).values(tainted=True))
            write_audit(conn, self.actor, "mark_tainted", f"version:{version_id}",
                        {"tainted": version.tainted}, {"tainted": True, "reason": reason})
        return self.get(version_id)

    # ------------------------------------------------------------------ aliases
    def alias(self, name: str) -> Alias | None:
        row = self.db.fetch_one(sa.select(_al).where(_al.c.name == name))
        return Alias(**row) if row else None

    def aliases(self) -> list[Alias]:
        return [Alias(**r) for r in self.db.fetch_all(sa.select(_al).order_by(_al.c.name))]

    def get_alias(self, name: str) -> ModelVersion | None:
        """The version ``name`` points at, or None when the alias is not set."""
        a = self.alias(name)
        return self.find(a.version_id) if a else None

    def champion(self, kind: str = "generator") -> ModelVersion | None:
        return self.get_alias(alias_for("champion", kind))

    def set_alias(self, name: str, version_id: str) -> Alias:
        """Point ``name`` at ``version_id``, remembering where it pointed before."""
        if not name or len(name) > 64:
            raise ValidationError("alias name must be 1-64 characters", field="name")
        with self.db.begin() as conn:
            self._get(conn, version_id)
            return self._set_alias(conn, name, version_id)

    def delete_alias(self, name: str) -> None:
        with self.db.begin() as conn:
            old = self._alias(conn, name)
            if old is None:
                raise NotFoundError(f"alias {name!r} is not set", name=name)
            conn.execute(_al.delete().where(_al.c.name == name))
            write_audit(conn, self.actor, "delete_alias", f"alias:{name}", _alias_json(old), None)

    # ------------------------------------------------------------------ promotion
    def promote(self, version_id: str, *, reason: str | None = None) -> ModelVersion:
        """Make ``version_id`` the champion of its kind; the old champion is archived.

        Tainted versions are refused (ConflictError). Promoting the champion is a no-op.
        """
        with self.db.begin() as conn:
            version = self._get(conn, version_id)
            if version.tainted:
                raise ConflictError(f"{version_id!r} is tainted and cannot be promoted", version_id=version_id)
            name = alias_for("champion", version.kind)
            old = self._alias(conn, name, lock=True)
            if old and old.version_id == version_id:
                return version
            self._set_alias(conn, name, version_id)
            for role in ("challenger", "shadow"):
                a = self._alias(conn, alias_for(role, version.kind))
                if a and a.version_id == version_id:
                    conn.execute(_al.delete().where(_al.c.name == a.name))
            self._set_status(conn, version, "active", None)
            if old and old.version_id != version_id:
                self._set_status(conn, self._get(conn, old.version_id), "archived", None)
            write_audit(conn, self.actor, "promote", f"version:{version_id}",
                        {"champion": old.version_id if old else None},
                        {"champion": version_id, "reason": reason})
        return self.get(version_id)

    def rollback(self, kind: str = "generator", *, reason: str | None = None,
                 allow_tainted: bool = False) -> ModelVersion:
        """Restore the previous champion in one call; the current one becomes ``rejected``.

        Calling it again walks further back through the champion's history.
        """
        name = alias_for("champion", kind)
        with self.db.begin() as conn:
            cur = self._alias(conn, name, lock=True)
            if cur is None or not cur.previous_version_id:
                raise ConflictError(f"no previous {kind} champion to roll back to", alias=name)
            target = self._get(conn, cur.previous_version_id)
            if target.tainted and not allow_tainted:
                raise ConflictError(f"previous champion {target.id!r} is tainted; pass allow_tainted=True "
                                    "or promote another version", version_id=target.id)
            before_target = self._previous_of(conn, name, target.id)
            self._set_alias(conn, name, target.id, previous=before_target)
            self._set_status(conn, self._get(conn, cur.version_id), "rejected", None)
            self._set_status(conn, target, "active", None)
            write_audit(conn, self.actor, "rollback", f"alias:{name}",
                        {"champion": cur.version_id}, {"champion": target.id, "reason": reason})
        return self.get(target.id)

    def history(self, target: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Audit rows of registry changes, newest first (``target`` e.g. ``version:v2``)."""
        stmt = sa.select(_audit).order_by(_audit.c.id.desc()).limit(limit)
        if target:
            stmt = stmt.where(_audit.c.target == target)
        return self.db.fetch_all(stmt)

    # ------------------------------------------------------------------ internals
    def _get(self, conn: Connection, version_id: str) -> ModelVersion:
        row = conn.execute(sa.select(_mv).where(_mv.c.id == version_id)).first()
        if row is None:
            raise NotFoundError(f"model version {version_id!r} is not registered", version_id=version_id)
        return ModelVersion.from_row(row._mapping)

    def _alias(self, conn: Connection, name: str, lock: bool = False) -> Alias | None:
        stmt = sa.select(_al).where(_al.c.name == name)
        if lock:
            stmt = stmt.with_for_update()  # PostgreSQL: serialize concurrent promotions
        row = conn.execute(stmt).first()
        return Alias(**row._mapping) if row else None

    def _set_alias(self, conn: Connection, name: str, version_id: str,
                   previous: Any = _KEEP) -> Alias:
        old = self._alias(conn, name, lock=True)
        prev = (old.version_id if old else None) if previous is _KEEP else previous
        new = Alias(name, version_id, prev, now())
        if old is None:
            conn.execute(_al.insert().values(**asdict(new)))
        else:
            conn.execute(_al.update().where(_al.c.name == name).values(
                version_id=version_id, previous_version_id=prev, updated_at=new.updated_at))
        write_audit(conn, self.actor, "set_alias", f"alias:{name}",
                    _alias_json(old) if old else None, _alias_json(new))
        return new

    def _previous_of(self, conn: Connection, name: str, version_id: str) -> str | None:
        """Which version was ``name`` before ``version_id`` last took it (from the audit log)."""
        rows = conn.execute(sa.select(_audit.c.after).where(
            _audit.c.action == "set_alias", _audit.c.target == f"alias:{name}").order_by(_audit.c.id.desc()))
        for (after,) in rows:
            if after and after.get("version_id") == version_id:
                return after.get("previous_version_id")
        return None

    def _drop_roles(self, conn: Connection, version: ModelVersion) -> None:
        for role in ("challenger", "shadow"):
            a = self._alias(conn, alias_for(role, version.kind))
            if a and a.version_id == version.id:
                conn.execute(_al.delete().where(_al.c.name == a.name))
                write_audit(conn, self.actor, "delete_alias", f"alias:{a.name}", _alias_json(a), None)

    def _set_status(self, conn: Connection, version: ModelVersion, status: str, action: str | None,
                    reason: str | None = None) -> None:
        conn.execute(_mv.update().where(_mv.c.id == version.id).values(status=status))
        if action:
            write_audit(conn, self.actor, action, f"version:{version.id}",
                        {"status": version.status}, {"status": status, "reason": reason})


def _alias_json(a: Alias) -> dict[str, Any]:
    return {"version_id": a.version_id, "previous_version_id": a.previous_version_id}


def _prompt_json(prompt: Any) -> Any:
    """A version's prompt validated as a :class:`~tuneloop.prompts.spec.PromptSpec`, stored as its dict."""
    from tuneloop.prompts.spec import PromptSpec

    spec = PromptSpec.from_value(prompt)
    return None if spec is None or spec.is_empty else spec.to_dict()


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _validate_version(vid: str, kind: str, backend: str, status: str) -> None:
    if not isinstance(vid, str) or not _ID_RE.match(vid):
        raise ValidationError(f"version id {vid!r} must be 1-64 characters of letters, digits and ._:@+/- "
                              "starting with a letter or digit", field="id")
    if vid in RESERVED or vid.split(":")[-1] in RESERVED:
        raise ValidationError(f"version id {vid!r} is an alias name; pick another id", field="id")
    if kind not in KINDS:
        raise ValidationError(f"kind {kind!r} is not one of {', '.join(KINDS)}", field="kind")
    if not backend or not isinstance(backend, str):
        raise ValidationError("backend must name a model backend (local, openai, scripted, ...)", field="backend")
    if status not in STATUSES:
        raise ValidationError(f"status {status!r} is not one of {', '.join(STATUSES)}", field="status")
