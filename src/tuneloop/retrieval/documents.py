"""The document store: add, update and delete documents in batches, in the main database.

A document is ``{"id", "text", "meta"}``. Its ``content_hash`` is the SHA-256 of its text
(what the embedder sees): an upsert whose text is unchanged is not re-embedded, even when
its metadata changed (LlamaIndex's docstore makes the same call with ``doc_hash``). Every
change bumps ``version`` and ``updated_at``; a delete is a soft delete (``deleted`` set),
so every index, in any process, sees it through :func:`changes_since` and drops the
document; :func:`purge` removes deleted rows for good.

>>> from tuneloop.store import Database
>>> store = DocumentStore(Database.open("sqlite:///:memory:"))
>>> store.upsert([{"id": "a", "text": "The cat sat."}, {"id": "b", "text": "Dogs bark."}]).to_embed
('a', 'b')
>>> r = store.upsert([{"id": "a", "text": "The cat sat.", "meta": {"lang": "en"}}])
>>> r.to_embed, r.meta_only
((), ('a',))
>>> store.delete(["b", "zzz"])
('b',)
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tuneloop.errors import NotFoundError, ValidationError
from tuneloop.ids import now
from tuneloop.store import Database, schema

__all__ = ["Document", "UpsertResult", "DocumentStore", "content_hash", "as_document", "load_documents",
           "changes_since", "DOC_ID_MAX"]

D = schema.documents
DOC_ID_MAX = 255
_CHUNK = 500  # ids per IN (...) query: well under SQLite's and psycopg's parameter limits
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst", ".html", ".htm")


def content_hash(text: str) -> str:
    """SHA-256 (hex) of the text that gets embedded.

    >>> content_hash("abc")[:12]
    'ba7816bf8f01'
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Document:
    """One document: a user-chosen ``id`` (1-255 characters), its ``text`` and ``meta``."""

    id: str
    text: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        return content_hash(self.text)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "meta": dict(self.meta)}


def as_document(item: Any, where: str = "document") -> Document:
    """A :class:`Document` from a Document or a mapping; unknown keys go to ``meta``.

    >>> as_document({"id": "d1", "text": "hi", "source": "faq"}).meta
    {'source': 'faq'}
    """
    if isinstance(item, Document):
        doc = item
    elif isinstance(item, Mapping):
        extra = {k: v for k, v in item.items() if k not in ("id", "text", "meta", "metadata")}
        meta = item.get("meta") if item.get("meta") is not None else item.get("metadata")
        if meta is not None and not isinstance(meta, Mapping):
            raise ValidationError(f"{where}: 'meta' must be an object, not {type(meta).__name__}", field="meta")
        doc = Document(id=item.get("id"), text=item.get("text"), meta={**dict(meta or {}), **extra})
    else:
        raise ValidationError(f"{where}: expected an object with 'id' and 'text', got {type(item).__name__}")
    _check(doc, where)
    return doc


def _check(doc: Document, where: str) -> None:
    if not isinstance(doc.id, str) or not doc.id.strip():
        raise ValidationError(f"{where}: 'id' must be a non-empty string", field="id")
    if len(doc.id) > DOC_ID_MAX:
        raise ValidationError(f"{where}: id {doc.id[:40]!r}... is longer than {DOC_ID_MAX} characters", field="id")
    if not isinstance(doc.text, str) or not doc.text.strip():
        raise ValidationError(f"{where} {doc.id!r}: 'text' must be a non-empty string", field="text")
    try:
        json.dumps(dict(doc.meta))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{where} {doc.id!r}: meta is not JSON: {exc}", field="meta") from exc


@dataclass(frozen=True)
class UpsertResult:
    """What an upsert did, by document id. ``to_embed`` = added + updated (text changed)."""

    added: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    meta_only: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()

    @property
    def to_embed(self) -> tuple[str, ...]:
        return self.added + self.updated

    def to_dict(self) -> dict[str, Any]:
        return {"added": list(self.added), "updated": list(self.updated), "meta_only": list(self.meta_only),
                "unchanged": list(self.unchanged)}


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class DocumentStore:
    """Documents in the ``documents`` table of ``db``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def upsert(self, docs: Iterable[Any]) -> UpsertResult:
        """Insert new documents, update changed ones, leave identical ones alone (one transaction).

        A repeated id within the batch: the last one wins. A deleted document upserted
        again comes back (counted as ``added``).
        """
        batch: dict[str, Document] = {}
        for i, item in enumerate(docs):
            doc = as_document(item, f"documents[{i}]")
            batch.pop(doc.id, None)
            batch[doc.id] = doc
        if not batch:
            return UpsertResult()
        out: dict[str, list[str]] = {"added": [], "updated": [], "meta_only": [], "unchanged": []}
        ts = now()
        with self.db.begin() as conn:
            for ids in _chunks(list(batch)):
                self._upsert_chunk(conn, [batch[i] for i in ids], ts, out)
        return UpsertResult(**{k: tuple(v) for k, v in out.items()})

    def _upsert_chunk(self, conn: sa.Connection, docs: list[Document], ts: float,
                      out: dict[str, list[str]]) -> None:
        rows = conn.execute(sa.select(D.c.id, D.c.content_hash, D.c.meta, D.c.deleted, D.c.version)
                            .where(D.c.id.in_([d.id for d in docs]))).all()
        old = {r.id: r for r in rows}
        inserts, updates = [], []
        for doc in docs:
            h, prev = doc.content_hash, old.get(doc.id)
            if prev is None:
                inserts.append({"id": doc.id, "text": doc.text, "meta": dict(doc.meta) or None, "content_hash": h,
                                "version": 1, "deleted": False, "updated_at": ts, "created_at": ts})
                out["added"].append(doc.id)
                continue
            same_meta = dict(prev.meta or {}) == dict(doc.meta)
            if prev.content_hash == h and same_meta and not prev.deleted:
                out["unchanged"].append(doc.id)
                continue
            kind = "added" if prev.deleted else ("meta_only" if prev.content_hash == h else "updated")
            out[kind].append(doc.id)
            updates.append({"b_id": doc.id, "text": doc.text, "meta": dict(doc.meta) or None, "content_hash": h,
                            "version": prev.version + 1, "deleted": False, "updated_at": ts})
        if inserts:
            conn.execute(D.insert(), inserts)
        if updates:
            conn.execute(D.update().where(D.c.id == sa.bindparam("b_id")), updates)

    def delete(self, ids: Iterable[str]) -> tuple[str, ...]:
        """Soft-delete ``ids``; returns those that were live (unknown or already deleted ids are skipped)."""
        wanted = list(dict.fromkeys(str(i) for i in ids))
        deleted: list[str] = []
        ts = now()
        with self.db.begin() as conn:
            for chunk in _chunks(wanted):
                live = [r.id for r in conn.execute(sa.select(D.c.id).where(D.c.id.in_(chunk), D.c.deleted.is_(False)))]
                if live:
                    conn.execute(D.update().where(D.c.id.in_(live)).values(
                        deleted=True, version=D.c.version + 1, updated_at=ts))
                    deleted += live
        order = {d: i for i, d in enumerate(wanted)}
        return tuple(sorted(deleted, key=order.__getitem__))

    def get(self, doc_id: str) -> Document:
        """The live document ``doc_id``; NotFoundError when it does not exist or was deleted."""
        found = self.get_many([doc_id])
        if doc_id not in found:
            raise NotFoundError(f"document {doc_id!r} does not exist", document_id=doc_id)
        return found[doc_id]

    def get_many(self, ids: Sequence[str]) -> dict[str, Document]:
        """Live documents by id (missing and deleted ids are absent)."""
        return {r["id"]: Document(r["id"], r["text"], r["meta"] or {}) for r in self.rows(ids)}

    def rows(self, ids: Sequence[str], columns: Sequence[str] = ("id", "text", "meta", "content_hash"),
             *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Raw rows of ``ids`` (one query per 500 ids)."""
        out: list[dict[str, Any]] = []
        cols = [D.c[c] for c in columns]
        with self.db.connect() as conn:
            for chunk in _chunks(list(dict.fromkeys(ids))):
                stmt = sa.select(*cols).where(D.c.id.in_(chunk))
                if not include_deleted:
                    stmt = stmt.where(D.c.deleted.is_(False))
                out += [dict(r._mapping) for r in conn.execute(stmt)]
        return out

    def count(self, *, include_deleted: bool = False) -> int:
        stmt = sa.select(sa.func.count()).select_from(D)
        if not include_deleted:
            stmt = stmt.where(D.c.deleted.is_(False))
        return int(self.db.scalar(stmt) or 0)

    def iter_live(self, after_id: str | None = None, batch: int = 256,
                  columns: Sequence[str] = ("id", "text", "content_hash", "updated_at")) -> Iterator[list[dict[str, Any]]]:
        """Live documents in id order, ``batch`` at a time, starting after ``after_id`` (a cursor)."""
        cursor = after_id
        cols = [D.c[c] for c in columns]
        while True:
            stmt = sa.select(*cols).where(D.c.deleted.is_(False)).order_by(D.c.id).limit(batch)
            if cursor is not None:
                stmt = stmt.where(D.c.id > cursor)
            rows = self.db.fetch_all(stmt)
            if not rows:
                return
            yield rows
            cursor = rows[-1]["id"]

    def purge(self, older_than: float) -> int:
        """Hard-delete documents soft-deleted before ``older_than`` (epoch seconds)."""
        with self.db.begin() as conn:
            res = conn.execute(D.delete().where(D.c.deleted.is_(True), D.c.updated_at < older_than))
        return max(res.rowcount or 0, 0)


def changes_since(db: Database, ts: float | None, page: int = 5_000) -> Iterator[dict[str, Any]]:
    """Rows changed after ``ts`` (all rows when None), oldest change first: what an index must apply.

    Yields ``id``, ``content_hash``, ``deleted`` and ``updated_at`` (no text: most changes
    are already applied and are skipped by hash). Pages on (updated_at, id), because one
    batch upsert gives thousands of rows the same ``updated_at``.
    """
    last: tuple[float, str] | None = None
    while True:
        stmt = (sa.select(D.c.id, D.c.content_hash, D.c.deleted, D.c.updated_at)
                .order_by(D.c.updated_at, D.c.id).limit(page))
        if ts is not None:
            stmt = stmt.where(D.c.updated_at > ts)
        if last is not None:
            stmt = stmt.where(sa.or_(D.c.updated_at > last[0], sa.and_(D.c.updated_at == last[0], D.c.id > last[1])))
        rows = db.fetch_all(stmt)
        yield from rows
        if len(rows) < page:
            return
        last = (rows[-1]["updated_at"], rows[-1]["id"])


# ---------------------------------------------------------------- files
def _jsonl(path: Path) -> Iterator[Document]:
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValidationError(f"{path}:{n}: not JSON: {exc.msg}", file=str(path), line=n) from None
            yield as_document(item, f"{path}:{n}")


def load_documents(path: str | Path) -> Iterator[Document]:
    """Documents from a JSONL file (``{"id", "text", "meta"?}`` per line) or a folder.

    In a folder, ``*.jsonl`` files are read line by line and text files (``.txt``, ``.md``,
    ``.rst``, ``.html``) become one document each, id = the path relative to the folder.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ValidationError(f"{p} does not exist", field="path")
    if p.is_file():
        if p.suffix.lower() == ".jsonl":
            yield from _jsonl(p)
        elif p.suffix.lower() in TEXT_SUFFIXES:
            yield as_document({"id": p.name, "text": p.read_text(encoding="utf-8"), "source": str(p)}, str(p))
        else:
            raise ValidationError(f"{p}: use a .jsonl file, a text file or a folder", field="path")
        return
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        rel = f.relative_to(p).as_posix()
        if f.suffix.lower() == ".jsonl":
            yield from _jsonl(f)
        elif f.suffix.lower() in TEXT_SUFFIXES and f.read_text(encoding="utf-8").strip():
            yield as_document({"id": rel, "text": f.read_text(encoding="utf-8"), "source": rel}, str(f))
