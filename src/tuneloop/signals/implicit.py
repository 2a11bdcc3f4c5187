"""Implicit feedback inferred from the interaction log.

When a client does not send regenerate / continue events, the log still shows them:

- **regenerate / re-query**: the same user, in the same session, sends a new request within
  ``regenerate_window_s`` whose query is similar to the previous one (word Jaccard or
  character 3-gram Jaccard >= ``similarity_threshold``): the previous answer was abandoned.
- **continue**: the next request in the session came within ``continue_window_s`` and is
  not a re-query: the user kept chatting.

>>> rows = [dict(id="a", user_id="u", session_id="s", ts=0.0, query="capital of France?"),
...         dict(id="b", user_id="u", session_id="s", ts=5.0, query="the capital of France?"),
...         dict(id="c", user_id="u", session_id="s", ts=60.0, query="and of Spain?")]
>>> [(s.interaction_id, s.kind) for s in infer_signals(rows)]
[('a', 'regenerate'), ('b', 'continue')]

:func:`infer_implicit_feedback` writes them as feedback rows with ``source="implicit"``;
ids are derived from (kind, interaction id), so running it twice writes nothing new.
"""
from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from tuneloop.errors import ValidationError
from tuneloop.store import schema

_NAMESPACE = uuid.UUID("6f1c2a4e-7d0b-4c55-9a3e-51a0c0de0001")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class ImplicitConfig:
    """Windows and the similarity threshold of implicit-signal inference."""

    regenerate_window_s: float = field(default=120.0, metadata={"help": "max seconds between a request and its re-query"})
    similarity_threshold: float = field(default=0.5, metadata={"help": "min query similarity of a re-query (0-1)"})
    continue_window_s: float = field(default=1800.0, metadata={"help": "max seconds between turns that count as continuing"})

    def __post_init__(self) -> None:
        if not 0.0 < self.similarity_threshold <= 1.0:
            raise ValidationError("similarity_threshold must be in (0, 1]", field="similarity_threshold",
                                  value=self.similarity_threshold)
        if self.regenerate_window_s <= 0 or self.continue_window_s <= 0:
            raise ValidationError("windows must be positive seconds", field="regenerate_window_s")


@dataclass(frozen=True, slots=True)
class ImplicitSignal:
    """One inferred event on ``interaction_id``, seen when ``next_id`` arrived at ``ts``."""

    interaction_id: str
    kind: str  # regenerate | continue
    next_id: str
    similarity: float
    ts: float
    user_id: str | None = None

    @property
    def feedback_id(self) -> str:
        return str(uuid.uuid5(_NAMESPACE, f"implicit:{self.kind}:{self.interaction_id}"))


def _jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _char_grams(text: str, n: int = 3) -> set[str]:
    t = " ".join(_WORD.findall(text.lower()))
    return {t[i:i + n] for i in range(max(1, len(t) - n + 1))}


def similarity(a: str, b: str) -> float:
    """Similarity of two queries: the larger of word Jaccard and character 3-gram Jaccard.

    >>> similarity("What is the capital of France?", "what's the capital of france")
    0.827586
    """
    words = _jaccard(set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower())))
    if words >= 1.0:
        return 1.0
    return round(max(words, _jaccard(_char_grams(a), _char_grams(b))), 6)


def _session_key(row: Mapping[str, Any]) -> tuple | None:
    if row.get("session_id") is None and row.get("user_id") is None:
        return None  # anonymous, sessionless rows cannot be chained
    return (row.get("user_id"), row.get("session_id"))


def infer_signals(rows: Iterable[Mapping[str, Any]], config: ImplicitConfig = ImplicitConfig()) -> Iterator[ImplicitSignal]:
    """Implicit signals from rows sorted by (user_id, session_id, ts). Pure.

    Each row needs ``id``, ``user_id``, ``session_id``, ``ts`` and ``query``.
    """
    prev: Mapping[str, Any] | None = None
    for row in rows:
        key = _session_key(row)
        if prev is not None and key is not None and _session_key(prev) == key:
            gap = float(row["ts"]) - float(prev["ts"])
            if 0 <= gap <= config.continue_window_s:
                sim = similarity(prev.get("query") or "", row.get("query") or "")
                kind = ("regenerate" if gap <= config.regenerate_window_s
                        and sim >= config.similarity_threshold else "continue")
                yield ImplicitSignal(prev["id"], kind, row["id"], sim, float(row["ts"]), prev.get("user_id"))
        prev = row


@dataclass(frozen=True, slots=True)
class ImplicitResult:
    """Counts of written signals and the watermark (newest interaction ts read)."""

    regenerate: int
    continued: int
    watermark: float | None


def _feedback_row(sig: ImplicitSignal) -> dict[str, Any]:
    return {"id": sig.feedback_id, "interaction_id": sig.interaction_id, "kind": sig.kind, "value": 1.0,
            "text": None, "source": "implicit", "user_id": sig.user_id, "ts": sig.ts,
            "meta": {"next_id": sig.next_id, "similarity": sig.similarity}}


def infer_implicit_feedback(db, since: float | None = None, *, config: ImplicitConfig = ImplicitConfig(),
                            chunk: int = 5000) -> ImplicitResult:
    """Infer regenerate / continue signals from the log and write them as feedback rows.

    Reads interactions newer than ``since`` (minus the continue window, so a pair that
    straddles the watermark is still seen) in (user, session, ts) order. Idempotent.

    >>> # res = infer_implicit_feedback(db); infer_implicit_feedback(db, since=res.watermark)
    """
    it = schema.interactions
    stmt = (sa.select(it.c.id, it.c.user_id, it.c.session_id, it.c.ts, it.c.query)
            .where(it.c.kind == "chat")
            .order_by(it.c.user_id, it.c.session_id, it.c.ts, it.c.id))
    if since is not None:
        stmt = stmt.where(it.c.ts > since - config.continue_window_s)
    watermark = since

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal watermark
        for r in db.iter_rows(stmt, chunk):
            if watermark is None or r["ts"] > watermark:
                watermark = r["ts"]
            yield r

    # Collect first, write after: on SQLite a streaming read holds the database's write
    # lock until it ends, so writing while the cursor is open would wait for ourselves.
    signals = list(infer_signals(rows(), config))
    counts = {"regenerate": 0, "continue": 0}
    for start in range(0, len(signals), chunk):
        part = signals[start:start + chunk]
        with db.begin() as conn:
            db.insert_ignore(conn, schema.feedback, [_feedback_row(s) for s in part])
        for sig in part:
            counts[sig.kind] += 1
    return ImplicitResult(regenerate=counts["regenerate"], continued=counts["continue"], watermark=watermark)
