"""Retrieval logs: every search, and what the client did with its documents.

Each search writes one ``retrieval_logs`` row (query, retriever and reranker versions,
document ids, scores, ranks). When the search names its interaction (the chat turn the
documents were retrieved for), that interaction's ``meta["retrieval"]`` gets the shape
the datasets builders (triplets, reranker rows) and the monitors read::

    {"retrieval_id": "...", "query": "...", "retriever_version": "...", "reranker_version": null,
     "docs": [{"id": "d7", "text": "...", "score": 0.83, "rank": 1,
               "clicked": false, "used": true, "skipped": false}, ...]}

``rank`` starts at 1. Clients report which documents were ``used`` (went into the answer),
``clicked`` (opened by the user) or ``skipped`` (shown, passed over) with
:func:`record_feedback` (``POST /v1/retrieval/feedback``). An interaction logged *after*
its search (the usual RAG order: retrieve, generate, log) gets its ``meta["retrieval"]``
from :func:`attach_pending`. A search with no interaction becomes an interaction of kind
``retrieval`` once a client reports on it, so search-only applications train too.

>>> from tuneloop.store import Database
>>> db = Database.open("sqlite:///:memory:")
>>> log_id = log_retrieval(db, "reset password", [("d1", "To reset ...", 0.9), ("d2", "Billing ...", 0.4)],
...                        retriever_version="minilm")
>>> record_feedback(db, log_id, clicked=["d1"], skipped=["d2"])["docs"][0]["clicked"]
True
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from tuneloop.errors import NotFoundError, ValidationError
from tuneloop.ids import new_id, now
from tuneloop.store import Database, schema

__all__ = ["log_retrieval", "record_feedback", "retrieval_meta", "attach_pending", "get_log", "latest_log_for",
           "REPORTS", "TEXT_CAP"]

L, I = schema.retrieval_logs, schema.interactions
REPORTS = ("used", "clicked", "skipped")
#: Characters of each document kept in ``meta["retrieval"]``: enough for a 256-token encoder.
TEXT_CAP = 4000


def retrieval_meta(log: Mapping[str, Any], texts: Mapping[str, str]) -> dict[str, Any]:
    """``meta["retrieval"]`` of a log row, its client reports applied to each document.

    Logs keep ids, not texts (a search would store k documents again); ``texts`` supplies them.
    """
    meta = log.get("meta") or {}
    reports = {k: set(meta.get(k) or ()) for k in REPORTS}
    docs = []
    for doc_id, score, rank in zip(log["doc_ids"] or [], log["scores"] or [], log["ranks"] or []):
        docs.append({"id": doc_id, "text": (texts.get(doc_id) or "")[:TEXT_CAP], "score": score, "rank": rank,
                     **{k: doc_id in reports[k] for k in REPORTS}})
    return {"retrieval_id": log["id"], "query": log["query"], "retriever_version": log.get("retriever_version"),
            "reranker_version": log.get("reranker_version"), "docs": docs}


def log_retrieval(db: Database, query: str, hits: Sequence[tuple[str, str, float]], *,
                  retriever_version: str | None, reranker_version: str | None = None,
                  interaction_id: str | None = None, meta: Mapping[str, Any] | None = None,
                  conn: sa.Connection | None = None) -> str:
    """Write the log of one search (``hits`` = (doc id, text, score), best first); returns its id.

    With ``interaction_id`` of an existing interaction, its ``meta["retrieval"]`` is set too.
    """
    if interaction_id is not None and (not isinstance(interaction_id, str) or not 0 < len(interaction_id) <= 64):
        raise ValidationError("interaction_id must be a string of 1-64 characters", field="interaction_id")
    log = {"id": new_id(), "interaction_id": interaction_id, "ts": now(), "query": query,
           "retriever_version": retriever_version, "reranker_version": reranker_version,
           "doc_ids": [h[0] for h in hits], "scores": [round(float(h[2]), 6) for h in hits],
           "ranks": list(range(1, len(hits) + 1)), "meta": dict(meta) if meta else None}
    texts = {h[0]: h[1] for h in hits}
    if conn is None:
        with db.begin() as c:
            _write_log(db, c, log, texts)
    else:
        _write_log(db, conn, log, texts)
    return log["id"]


def _write_log(db: Database, conn: sa.Connection, log: dict[str, Any], texts: Mapping[str, str]) -> None:
    conn.execute(L.insert().values(**log))
    if log["interaction_id"] is not None:
        _set_interaction_meta(db, conn, log["interaction_id"], retrieval_meta(log, texts))


def _texts(conn: sa.Connection, ids: Sequence[str], have: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Texts of ``ids``: as retrieved when ``have`` (a meta["retrieval"]) holds them, else as stored now."""
    out = {d["id"]: d["text"] for d in ((have or {}).get("docs") or []) if isinstance(d, Mapping) and d.get("text")}
    missing = [i for i in ids if i not in out]
    if missing:
        D = schema.documents
        out.update({r.id: r.text for r in conn.execute(sa.select(D.c.id, D.c.text).where(D.c.id.in_(missing)))})
    return out


def _interaction_meta(db: Database, conn: sa.Connection, interaction_id: str) -> tuple[bool, dict[str, Any]]:
    stmt = sa.select(I.c.meta).where(I.c.id == interaction_id)
    if not db.is_sqlite:
        stmt = stmt.with_for_update()  # read-modify-write of a JSON column
    row = conn.execute(stmt).first()
    return (row is not None), dict((row.meta if row is not None else None) or {})


def _set_interaction_meta(db: Database, conn: sa.Connection, interaction_id: str, value: dict[str, Any]) -> bool:
    found, meta = _interaction_meta(db, conn, interaction_id)
    if found:
        conn.execute(I.update().where(I.c.id == interaction_id).values(meta={**meta, "retrieval": value}))
    return found


def get_log(db: Database, retrieval_id: str) -> dict[str, Any]:
    row = db.fetch_one(sa.select(L).where(L.c.id == retrieval_id))
    if row is None:
        raise NotFoundError(f"retrieval {retrieval_id!r} is not logged", retrieval_id=retrieval_id)
    return row


def latest_log_for(db: Database, interaction_id: str) -> dict[str, Any]:
    """The newest retrieval logged for ``interaction_id``."""
    row = db.fetch_one(sa.select(L).where(L.c.interaction_id == interaction_id)
                       .order_by(L.c.ts.desc(), L.c.id.desc()).limit(1))
    if row is None:
        raise NotFoundError(f"no retrieval is logged for interaction {interaction_id!r}",
                            interaction_id=interaction_id)
    return row


def _ids(name: str, value: Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ValidationError(f"{name} must be a list of document ids", field=name)
    return list(value)


def record_feedback(db: Database, retrieval_id: str, *, used: Iterable[str] | None = None,
                    clicked: Iterable[str] | None = None, skipped: Iterable[str] | None = None,
                    source: str = "user") -> dict[str, Any]:
    """Add client reports to a logged search; returns the updated ``meta["retrieval"]``.

    Reports accumulate (a later click adds to earlier ones); an id the search did not
    return is refused with a ValidationError naming it.
    """
    reports = {"used": _ids("used", used), "clicked": _ids("clicked", clicked), "skipped": _ids("skipped", skipped)}
    with db.begin() as conn:
        stmt = sa.select(L).where(L.c.id == retrieval_id)
        if not db.is_sqlite:
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).first()
        if row is None:
            raise NotFoundError(f"retrieval {retrieval_id!r} is not logged", retrieval_id=retrieval_id)
        log = dict(row._mapping)
        returned = set(log["doc_ids"] or [])
        for kind, ids in reports.items():
            unknown = [i for i in ids if i not in returned]
            if unknown:
                raise ValidationError(f"{kind}: document {unknown[0]!r} was not returned by retrieval "
                                      f"{retrieval_id}", field=kind, document_id=unknown[0])
        meta = dict(log["meta"] or {})
        for kind, ids in reports.items():
            meta[kind] = sorted(set(meta.get(kind) or ()) | set(ids))
        meta["reported_at"], meta["report_source"] = now(), source
        log["meta"] = meta
        interaction_id = log["interaction_id"]
        if interaction_id is None:  # a search-only application: the log becomes an interaction
            interaction_id = log["id"]
            _insert_retrieval_interaction(db, conn, log)
        values: dict[str, Any] = {"meta": meta, "interaction_id": interaction_id}
        conn.execute(L.update().where(L.c.id == retrieval_id).values(**values))
        log["interaction_id"] = interaction_id
        have = _interaction_meta(db, conn, interaction_id)[1].get("retrieval")
        value = retrieval_meta(log, _texts(conn, log["doc_ids"] or [], have))
        _set_interaction_meta(db, conn, interaction_id, value)
    return value


def _insert_retrieval_interaction(db: Database, conn: sa.Connection, log: Mapping[str, Any]) -> None:
    db.insert_ignore(conn, I, [{"id": log["id"], "ts": log["ts"], "kind": "retrieval", "query": log["query"],
                                "model": log.get("retriever_version") or "", "response": "", "meta": {}}])


def attach_pending(db: Database, since: float | None = None, limit: int = 10_000) -> int:
    """Copy ``meta["retrieval"]`` into interactions logged after their search; returns how many.

    An interaction already holding this retrieval (same ``retrieval_id``) is left alone.
    """
    stmt = (sa.select(L, I.c.meta.label("interaction_meta"))
            .select_from(L.join(I, I.c.id == L.c.interaction_id))
            .order_by(L.c.ts).limit(limit))
    if since is not None:
        stmt = stmt.where(L.c.ts >= since)
    latest: dict[str, dict[str, Any]] = {}
    for row in db.fetch_all(stmt):
        latest[row["interaction_id"]] = row  # the newest search of an interaction wins
    done = 0
    with db.begin() as conn:
        for iid, row in latest.items():
            have = ((row.pop("interaction_meta") or {}).get("retrieval") or {})
            value = retrieval_meta(row, _texts(conn, row["doc_ids"] or [], have))
            if have.get("retrieval_id") == row["id"] and have.get("docs") == value["docs"]:
                continue
            done += _set_interaction_meta(db, conn, iid, value)
    return done
