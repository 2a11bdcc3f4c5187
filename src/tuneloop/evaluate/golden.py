"""The golden set: versioned test cases in the store, imported and exported as JSONL,
growing from production (seed 000: bad cases proposed, reviewed, approved).

One JSONL line per example::

    {"prompt": "Capital of France? One word.", "expected": "Paris", "checker": "one_word", "tags": ["geo"]}
    {"messages": [{"role": "user", "content": "..."}], "expected": "...", "checker": "contains",
     "checker_args": {"ignore_case": true}, "tags": ["support"]}

Versions: every change to the approved set of a ``set_name`` (import, add, approve,
retire) bumps the set's version by one, and the rows it touched carry that version. The
set at version ``V`` is the approved rows with ``version <= V``; rows retired after ``V``
are missing from it (the schema keeps no retirement version).

>>> from tuneloop.store import Database
>>> db = Database.open("sqlite:///:memory:")
>>> import_jsonl(db, ['{"prompt": "2+2?", "expected": "4", "checker": "number"}']).version
1
>>> [e.expected for e in list_examples(db)]
['4']
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tuneloop.errors import ConflictError, NotFoundError, ValidationError
from tuneloop.evaluate.checkers import get_checker
from tuneloop.ids import new_id, now
from tuneloop.store import schema

__all__ = [
    "GoldenExample", "ImportResult", "example_from_dict", "read_jsonl", "write_jsonl", "import_jsonl",
    "export_jsonl", "add_example", "list_examples", "current_version", "list_sets", "get_example",
    "propose_from_feedback", "review", "list_proposals",
]

_KEYS = {"prompt", "messages", "expected", "checker", "checker_args", "tags"}
_ROLES = {"system", "user", "assistant"}
GE = schema.golden_examples


@dataclass(frozen=True, slots=True)
class GoldenExample:
    """One test case. ``messages`` is None when the case is a single user ``prompt``."""

    id: str
    prompt: str
    expected: str | None = None
    checker: str = "exact"
    checker_args: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    messages: tuple[dict[str, Any], ...] | None = None
    set_name: str = "default"
    version: int = 1
    status: str = "approved"
    source_interaction_id: str | None = None

    def conversation(self) -> list[dict[str, Any]]:
        """The chat messages to send to the model."""
        if self.messages:
            return [dict(m) for m in self.messages]
        return [{"role": "user", "content": self.prompt}]

    def to_dict(self) -> dict[str, Any]:
        """The JSONL form (what :func:`example_from_dict` reads back)."""
        d: dict[str, Any] = {"messages": [dict(m) for m in self.messages]} if self.messages else {"prompt": self.prompt}
        d["expected"] = self.expected
        d["checker"] = self.checker
        if self.checker_args:
            d["checker_args"] = dict(self.checker_args)
        if self.tags:
            d["tags"] = list(self.tags)
        return d

    @property
    def content_key(self) -> str:
        """A hash of what the case tests (conversation, expected, checker, args): equal cases share it."""
        body = json.dumps([self.conversation(), self.expected, self.checker, self.checker_args],
                          sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ImportResult:
    set_name: str
    version: int
    added: int
    skipped: int  # duplicates of cases already in the set (or earlier in the file)


# --- parsing ------------------------------------------------------------------------------

def _parse_messages(value: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list) or not value:
        raise ValidationError("'messages' must be a non-empty list of {role, content} objects")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
            raise ValidationError(f"messages[{i}] must be an object with role in {sorted(_ROLES)} and a string content")
    if value[-1]["role"] != "user":
        raise ValidationError("the last message must be the user's turn (the model answers it)")
    return tuple({"role": m["role"], "content": m["content"]} for m in value)


def _parse_expected(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # {"expected": 4} means the text "4"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)  # a JSON value for the json_schema checker
    raise ValidationError(f"'expected' must be a string, a number or JSON, got {type(value).__name__}")


def example_from_dict(d: Any, *, set_name: str = "default", id: str | None = None,
                      status: str = "approved") -> GoldenExample:
    """Validate one JSONL object and build the example (ValidationError names the problem)."""
    if not isinstance(d, dict):
        raise ValidationError(f"an example must be a JSON object, got {type(d).__name__}")
    unknown = set(d) - _KEYS
    if unknown:
        raise ValidationError(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    messages = _parse_messages(d["messages"]) if d.get("messages") is not None else None
    prompt = d.get("prompt")
    if messages is None and (not isinstance(prompt, str) or not prompt.strip()):
        raise ValidationError("an example needs a non-empty 'prompt' string or 'messages'")
    if messages is not None:
        prompt = messages[-1]["content"]
    checker_name = d.get("checker") or "exact"
    if not isinstance(checker_name, str):
        raise ValidationError("'checker' must be a string")
    checker = get_checker(checker_name)
    expected = _parse_expected(d.get("expected"))
    args = d.get("checker_args") or {}
    checker.validate_args(expected, args)
    tags = d.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise ValidationError("'tags' must be a list of non-empty strings")
    ex = GoldenExample(id=id or "", prompt=prompt, expected=expected, checker=checker_name,
                       checker_args=dict(args), tags=tuple(dict.fromkeys(tags)), messages=messages,
                       set_name=set_name, status=status)
    # File-only examples get an id from their content, so paired runs line up across models.
    return ex if id else replace(ex, id="g-" + ex.content_key[:16])


def _lines(source: str | os.PathLike | Iterable[str]) -> tuple[str, Iterable[str]]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise NotFoundError(f"golden file not found: {path}")
        return str(path), path.read_text(encoding="utf-8-sig").splitlines()  # -sig: editors on Windows add a BOM
    return "<lines>", source


def read_jsonl(source: str | os.PathLike | Iterable[str], *, set_name: str = "default") -> list[GoldenExample]:
    """Parse a golden JSONL file (or lines). Any bad line -> one ValidationError naming every bad line."""
    name, lines = _lines(source)
    examples, problems = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValidationError(f"not valid JSON ({exc.msg}, column {exc.colno})") from None
            examples.append(example_from_dict(obj, set_name=set_name))
        except ValidationError as exc:
            problems.append((n, exc.message))
    if problems:
        shown = "; ".join(f"line {n}: {msg}" for n, msg in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ValidationError(f"{name}: {len(problems)} bad line(s), nothing loaded: {shown}{more}",
                              line=problems[0][0], lines=[n for n, _ in problems])
    return examples


def write_jsonl(examples: Iterable[GoldenExample], dest: str | os.PathLike) -> int:
    """Write examples as JSONL (atomically: a temp file renamed into place). Returns the count."""
    path = Path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(ex.to_dict(), ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count


# --- store ----------------------------------------------------------------------------------

def _from_row(row: Mapping[str, Any]) -> GoldenExample:
    msgs = row.get("messages")
    return GoldenExample(
        id=row["id"], prompt=row["prompt"], expected=row.get("expected"), checker=row["checker"],
        checker_args=dict(row.get("checker_args") or {}), tags=tuple(row.get("tags") or ()),
        messages=tuple(msgs) if msgs else None, set_name=row["set_name"], version=row["version"],
        status=row["status"], source_interaction_id=row.get("source_interaction_id"))


def _to_row(ex: GoldenExample, *, version: int, status: str) -> dict[str, Any]:
    return {"id": ex.id if ex.id and not ex.id.startswith("g-") else new_id(), "set_name": ex.set_name,
            "version": version, "prompt": ex.prompt, "messages": [dict(m) for m in ex.messages] if ex.messages else None,
            "expected": ex.expected, "checker": ex.checker, "checker_args": dict(ex.checker_args) or None,
            "tags": list(ex.tags), "status": status, "source_interaction_id": ex.source_interaction_id,
            "created_at": now()}


def _lock_set(db: Any, conn: sa.Connection, set_name: str) -> None:
    # SQLite's BEGIN IMMEDIATE already serializes writers; PostgreSQL needs a lock so two
    # imports into one set cannot both take "current + 1".
    if not db.is_sqlite:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext("golden:" + set_name))))


def _version_in(conn: sa.Connection, set_name: str) -> int:
    stmt = sa.select(sa.func.max(GE.c.version)).where(GE.c.set_name == set_name, GE.c.status != "proposed")
    return int(conn.execute(stmt).scalar() or 0)


def _audit(conn: sa.Connection, actor: str, action: str, target: str, before: Any, after: Any) -> None:
    conn.execute(schema.audit_log.insert().values(ts=now(), actor=actor, action=action, target=target,
                                                  before=before, after=after))


def current_version(db: Any, set_name: str = "default") -> int:
    """The set's version (0 when it has no approved or retired case yet)."""
    with db.connect() as conn:
        return _version_in(conn, set_name)


def import_jsonl(db: Any, source: str | os.PathLike | Iterable[str], *, set_name: str = "default",
                 actor: str = "cli") -> ImportResult:
    """Import a JSONL golden file into ``set_name`` as approved cases: all lines or none.

    Cases already in the set (same conversation, expected, checker and args) are skipped;
    when anything is added the set's version goes up by one.
    """
    examples = read_jsonl(source, set_name=set_name)  # validates every line before any write
    with db.begin() as conn:
        _lock_set(db, conn, set_name)
        existing = conn.execute(sa.select(GE).where(GE.c.set_name == set_name, GE.c.status != "rejected"))
        seen = {_from_row(dict(r._mapping)).content_key for r in existing}
        fresh = []
        for ex in examples:
            if ex.content_key not in seen:
                seen.add(ex.content_key)
                fresh.append(ex)
        version = _version_in(conn, set_name)
        if fresh:
            version += 1
            conn.execute(GE.insert(), [_to_row(ex, version=version, status="approved") for ex in fresh])
            _audit(conn, actor, "golden.import", set_name, {"version": version - 1},
                   {"version": version, "added": len(fresh)})
    return ImportResult(set_name, version, len(fresh), len(examples) - len(fresh))


def export_jsonl(db: Any, dest: str | os.PathLike, *, set_name: str = "default", version: int | None = None) -> int:
    """Write the approved cases of ``set_name`` (at ``version``, default current) to ``dest``."""
    return write_jsonl(list_examples(db, set_name, version=version), dest)


def add_example(db: Any, *, prompt: str | None = None, messages: Sequence[Mapping[str, Any]] | None = None,
                expected: Any = None, checker: str = "exact", checker_args: Mapping[str, Any] | None = None,
                tags: Sequence[str] = (), set_name: str = "default", actor: str = "api") -> GoldenExample:
    """Add one approved case (the set's version goes up by one)."""
    d = {"prompt": prompt, "messages": list(messages) if messages else None, "expected": expected,
         "checker": checker, "checker_args": dict(checker_args or {}), "tags": list(tags)}
    ex = example_from_dict({k: v for k, v in d.items() if v is not None}, set_name=set_name, id=new_id())
    with db.begin() as conn:
        _lock_set(db, conn, set_name)
        version = _version_in(conn, set_name) + 1
        conn.execute(GE.insert().values(**_to_row(ex, version=version, status="approved")))
        _audit(conn, actor, "golden.add", ex.id, None, {"set_name": set_name, "version": version})
    return replace(ex, version=version)


def list_examples(db: Any, set_name: str = "default", *, status: str = "approved",
                  version: int | None = None) -> list[GoldenExample]:
    """Cases of ``set_name`` with ``status``; for approved ones, as of ``version`` (default current)."""
    stmt = sa.select(GE).where(GE.c.set_name == set_name, GE.c.status == status)
    if version is not None:
        stmt = stmt.where(GE.c.version <= version)
    return [_from_row(r) for r in db.fetch_all(stmt.order_by(GE.c.version, GE.c.created_at, GE.c.id))]


def get_example(db: Any, example_id: str) -> GoldenExample:
    row = db.fetch_one(sa.select(GE).where(GE.c.id == example_id))
    if row is None:
        raise NotFoundError(f"golden example {example_id!r} not found")
    return _from_row(row)


def list_sets(db: Any) -> list[dict[str, Any]]:
    """One row per set: name, version, and the count of cases per status."""
    stmt = (sa.select(GE.c.set_name, GE.c.status, sa.func.count(), sa.func.max(GE.c.version))
            .group_by(GE.c.set_name, GE.c.status))
    sets: dict[str, dict[str, Any]] = {}
    with db.connect() as conn:
        rows = conn.execute(stmt).all()
    for name, status, count, version in rows:
        s = sets.setdefault(name, {"set_name": name, "version": 0, "approved": 0, "proposed": 0, "rejected": 0})
        s[status] = count
        if status != "proposed":
            s["version"] = max(s["version"], int(version or 0))
    return sorted(sets.values(), key=lambda s: s["set_name"])


# --- growth from production ----------------------------------------------------------------

def _negative_feedback() -> sa.ColumnElement[bool]:
    fb = schema.feedback
    return sa.or_(sa.and_(fb.c.kind == "thumbs", fb.c.value < 0),
                  sa.and_(fb.c.kind == "rating", fb.c.value <= 2),
                  fb.c.kind == "report")


def _conversation_of(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    msgs = [m for m in (row.get("messages") or []) if isinstance(m, dict) and m.get("role") in _ROLES]
    # The stored chat may end with the model's (bad) answer: the case asks the turn before it.
    while msgs and msgs[-1].get("role") == "assistant":
        msgs.pop()
    if not msgs or msgs[-1].get("role") != "user":
        msgs = [{"role": "user", "content": row.get("query") or ""}]
    return [{"role": m["role"], "content": str(m.get("content", ""))} for m in msgs]


def propose_from_feedback(db: Any, since: float | None = None, limit: int = 100, *, set_name: str = "default",
                          checker: str = "exact", actor: str = "system") -> list[GoldenExample]:
    """Propose interactions with negative feedback (thumbs -1, rating <= 2, report) as cases.

    Each interaction is proposed at most once per set (a rejected proposal stays rejected);
    interactions without consent, or of a user without training consent or deleted (the
    ``subjects`` table), are left out. Proposals carry no expected answer:
    the reviewer writes it in :func:`review`.
    """
    get_checker(checker)
    fb, it, subj = schema.feedback, schema.interactions, schema.subjects
    bad = sa.select(fb.c.interaction_id, sa.func.max(fb.c.ts).label("last_ts")).where(_negative_feedback())
    if since is not None:
        bad = bad.where(fb.c.ts >= since)
    bad = bad.group_by(fb.c.interaction_id).subquery()
    taken = sa.select(GE.c.id).where(GE.c.set_name == set_name, GE.c.source_interaction_id == it.c.id)
    # A user who withdrew training consent or was deleted (subjects) is left out too, not only
    # an interaction captured without consent: a golden case keeps the prompt text for good.
    stmt = (sa.select(it, bad.c.last_ts).join(bad, bad.c.interaction_id == it.c.id)
            .outerjoin(subj, subj.c.user_id == it.c.user_id)
            .where(it.c.consent.is_(True), ~sa.exists(taken),
                   sa.or_(subj.c.consent_training.is_(None), subj.c.consent_training.is_(True)),
                   subj.c.deleted_at.is_(None))
            .order_by(bad.c.last_ts.desc(), it.c.id).limit(limit))
    with db.begin() as conn:
        _lock_set(db, conn, set_name)
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
        kinds = _feedback_kinds(conn, [r["id"] for r in rows])
        version = _version_in(conn, set_name)
        out = []
        for r in rows:
            msgs = _conversation_of(r)
            ex = GoldenExample(id=new_id(), prompt=msgs[-1]["content"], checker=checker,
                               tags=("production", *sorted(f"feedback:{k}" for k in kinds.get(r["id"], ()))),
                               messages=tuple(msgs) if len(msgs) > 1 else None, set_name=set_name,
                               version=version, status="proposed", source_interaction_id=r["id"])
            out.append(ex)
        if out:
            conn.execute(GE.insert(), [_to_row(ex, version=version, status="proposed") | {"id": ex.id} for ex in out])
            _audit(conn, actor, "golden.propose", set_name, None, {"proposed": [e.id for e in out]})
    return out


def _feedback_kinds(conn: sa.Connection, ids: list[str]) -> dict[str, set[str]]:
    fb = schema.feedback
    kinds: dict[str, set[str]] = {}
    for i in range(0, len(ids), 500):
        stmt = sa.select(fb.c.interaction_id, fb.c.kind).where(fb.c.interaction_id.in_(ids[i:i + 500]),
                                                               _negative_feedback())
        for iid, kind in conn.execute(stmt):
            kinds.setdefault(iid, set()).add(kind)
    return kinds


def list_proposals(db: Any, set_name: str = "default") -> list[tuple[GoldenExample, str | None]]:
    """Proposed cases with the production answer that drew the negative feedback."""
    it = schema.interactions
    stmt = (sa.select(GE, it.c.response.label("bad_response"))
            .join(it, it.c.id == GE.c.source_interaction_id, isouter=True)
            .where(GE.c.set_name == set_name, GE.c.status == "proposed").order_by(GE.c.created_at, GE.c.id))
    return [(_from_row(r), r.get("bad_response")) for r in db.fetch_all(stmt)]


def review(db: Any, example_id: str, approve: bool, expected: Any = None, reviewer: str = "cli", *,
           checker: str | None = None, checker_args: Mapping[str, Any] | None = None) -> GoldenExample:
    """Approve or reject a proposed case (or retire an approved one with ``approve=False``).

    Approving may set ``expected``/``checker``/``checker_args`` and bumps the set's version;
    so does retiring an approved case. Every review writes an audit_log row.
    """
    with db.begin() as conn:
        row = conn.execute(sa.select(GE).where(GE.c.id == example_id)).first()
        if row is None:
            raise NotFoundError(f"golden example {example_id!r} not found")
        ex = _from_row(dict(row._mapping))
        _lock_set(db, conn, ex.set_name)
        if ex.status == "rejected" or (approve and ex.status == "approved"):
            raise ConflictError(f"golden example {example_id!r} is already {ex.status}")
        values: dict[str, Any] = {"status": "approved" if approve else "rejected"}
        if approve:
            values |= _approved_fields(ex, expected, checker, checker_args)
        if approve or ex.status == "approved":  # the approved set changes: new version
            values["version"] = _version_in(conn, ex.set_name) + 1
        conn.execute(GE.update().where(GE.c.id == example_id).values(**values))
        _audit(conn, reviewer, "golden.approve" if approve else "golden.reject", example_id,
               {"status": ex.status, "expected": ex.expected, "version": ex.version},
               {k: v for k, v in values.items() if k in ("status", "expected", "checker", "version")})
    return get_example(db, example_id)


def _approved_fields(ex: GoldenExample, expected: Any, checker: str | None,
                     checker_args: Mapping[str, Any] | None) -> dict[str, Any]:
    new_expected = _parse_expected(expected) if expected is not None else ex.expected
    new_checker = checker or ex.checker
    new_args = dict(checker_args) if checker_args is not None else dict(ex.checker_args)
    try:
        get_checker(new_checker).validate_args(new_expected, new_args)
    except ValidationError as exc:
        raise ValidationError(f"cannot approve {ex.id}: {exc.message}", field="expected") from None
    return {"expected": new_expected, "checker": new_checker, "checker_args": new_args or None}
