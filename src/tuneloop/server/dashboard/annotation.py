"""Annotation queues (seed 003): pairwise preferences and explicit 1-5 ratings.

A pairwise item is an ``annotations`` row (``kind="pairwise"``, ``status="queued"``)
holding a prompt and two answers. :func:`queue_pairs` makes them: answer A and answer B
come from two :class:`~tuneloop.models.base.ModelBackend`\\ s (two versions, or one
backend sampled twice with different ``params``), or A is the answer logged in
production (``backend_a=None`` with ``interaction_ids``). Which answer is shown on the
left is drawn at random per item (position bias); ``meta`` records where each came from.

An annotator's choice is stored on the row: ``choice`` a | b | equal | both_bad | skip,
``annotator``, ``done_at``, and ``status`` done (``skipped`` for skip). The DPO builder
(:func:`tuneloop.datasets.builders.annotation_pairs`) turns done rows with choice a|b into
pairs; ``equal`` and ``both_bad`` carry no preference and stay out of DPO data.

>>> from tuneloop.store import Database
>>> from tuneloop.models.scripted import ScriptedBackend
>>> db = Database.open("sqlite:///:memory:")
>>> r = queue_pairs(db, ScriptedBackend({}, default="Paris."), ScriptedBackend({}, default="It is Paris, France."),
...                 prompts=["Capital of France?"], label_a="v1", label_b="v2")
>>> r.queued, pair_progress(db).queued
(1, 1)
>>> item = next_pair(db)
>>> record_choice(db, item.id, "a", annotator="ann").choice
'a'
"""
from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from tuneloop.errors import ConflictError, NotFoundError, ValidationError
from tuneloop.ids import new_id, now
from tuneloop.store import Database, schema

__all__ = ["CHOICES", "PairItem", "PairProgress", "QueueResult", "RatingItem", "next_pair", "next_rating",
           "pair_progress", "queue_pairs", "record_choice", "record_rating"]

CHOICES = ("a", "b", "equal", "both_bad", "skip")
_NS = uuid.UUID("6f1c3a52-3c2e-4d59-9a43-1b1a1c0e7d21")
_AN, _IT, _FB = schema.annotations, schema.interactions, schema.feedback


@dataclass(frozen=True)
class QueueResult:
    """What :func:`queue_pairs` did: ``queued`` new items, and why others were not queued."""

    queued: int
    skipped_identical: int = 0       # both answers the same: nothing to prefer
    skipped_existing: int = 0        # this pair was queued before (ids are deterministic)
    skipped_empty: int = 0
    ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class PairItem:
    """One pairwise item as the annotator sees it."""

    id: str
    interaction_id: str | None
    conversation: tuple[Mapping[str, str], ...]   # the prompt turns (last one: the user's question)
    response_a: str
    response_b: str
    status: str
    choice: str | None = None
    annotator: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PairProgress:
    queued: int
    done: int
    skipped: int
    by_annotator: int                  # done + skipped by the given annotator

    @property
    def total(self) -> int:
        return self.queued + self.done + self.skipped

    @property
    def finished(self) -> int:
        return self.done + self.skipped


@dataclass(frozen=True)
class RatingItem:
    """A queued rating item (from :func:`tuneloop.signals.sampling.sample_for_annotation`)."""

    id: str
    interaction_id: str | None
    prompt: str
    response: str
    reason: str | None


# ---------------------------------------------------------------- filling the queue
def _prompt_of(row: Mapping[str, Any]) -> list[dict[str, str]]:
    from tuneloop.datasets.builders import prompt_messages  # the prompt the DPO builder will use

    return prompt_messages(row)


def _sources(db: Database, prompts: Sequence[str] | None,
             interaction_ids: Sequence[str] | None) -> list[tuple[str | None, list[dict[str, str]], str | None]]:
    """(interaction id, prompt conversation, logged answer) per item, in the given order."""
    if (prompts is None) == (interaction_ids is None):
        raise ValidationError("give either prompts or interaction_ids", field="prompts")
    if prompts is not None:
        if isinstance(prompts, str):
            raise ValidationError("prompts must be a list of texts, not one string", field="prompts")
        return [(None, [{"role": "user", "content": str(p)}], None) for p in prompts]
    ids = list(interaction_ids or ())
    rows: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 500):
        stmt = sa.select(_IT.c.id, _IT.c.query, _IT.c.messages, _IT.c.response).where(_IT.c.id.in_(ids[start:start + 500]))
        rows.update({r["id"]: r for r in db.fetch_all(stmt)})
    missing = [i for i in ids if i not in rows]
    if missing:
        raise NotFoundError(f"{len(missing)} interaction(s) not found, e.g. {missing[0]!r}", ids=missing[:10])
    return [(i, _prompt_of(rows[i]), rows[i]["response"]) for i in ids]


def _answers(backend: Any, conversations: list[list[dict[str, str]]], params: Mapping[str, Any]) -> list[str]:
    if hasattr(backend, "chat_batch"):
        return [c.text for c in backend.chat_batch(conversations, **params)]
    return [backend.chat(c, **params).text for c in conversations]


def queue_pairs(db: Database, backend_a: Any, backend_b: Any, prompts: Sequence[str] | None = None, *,
                interaction_ids: Sequence[str] | None = None, label_a: str = "a", label_b: str = "b",
                params_a: Mapping[str, Any] | None = None, params_b: Mapping[str, Any] | None = None,
                priority: float | None = None, batch_size: int = 8, seed: int = 0, randomize: bool = True,
                progress: Callable[[int, int], None] | None = None) -> QueueResult:
    """Generate two answers per prompt and queue them as pairwise items.

    ``prompts`` (texts) or ``interaction_ids`` (their conversation up to the answer) give
    the questions. ``backend_a=None`` (with ``interaction_ids``) uses the logged answer as
    A. ``label_a``/``label_b`` name the sources (e.g. version ids) in ``meta``; item ids are
    derived from the prompt and both labels, so queueing again adds nothing twice.
    ``progress(done, total)`` is called after each batch.
    """
    if backend_b is None:
        raise ValidationError("backend_b is needed: it writes the alternative answer", field="backend_b")
    if backend_a is None and interaction_ids is None:
        raise ValidationError("backend_a=None (the logged answer) needs interaction_ids", field="backend_a")
    if batch_size < 1:
        raise ValidationError("batch_size must be at least 1", field="batch_size")
    items = _sources(db, prompts, interaction_ids)
    rng = random.Random(seed)
    counts = {"identical": 0, "existing": 0, "empty": 0}
    queued: list[str] = []
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        convs = [conv for _, conv, _ in batch]
        a = [logged or "" for _, _, logged in batch] if backend_a is None else _answers(backend_a, convs, params_a or {})
        b = _answers(backend_b, convs, params_b or {})
        rows = _pair_rows(batch, a, b, rng, randomize, counts, labels=(label_a, label_b), priority=priority,
                          params=(dict(params_a or {}), dict(params_b or {})))
        queued += _insert_new(db, rows, counts)
        if progress is not None:
            progress(min(start + batch_size, len(items)), len(items))
    return QueueResult(len(queued), counts["identical"], counts["existing"], counts["empty"], tuple(queued))


def _pair_rows(batch: list, answers_a: list[str], answers_b: list[str], rng: random.Random, randomize: bool,
               counts: dict[str, int], *, labels: tuple[str, str], priority: float | None,
               params: tuple[dict, dict]) -> list[dict[str, Any]]:
    rows, t = [], now()
    for (iid, conv, _), ans_a, ans_b in zip(batch, answers_a, answers_b):
        if not ans_a.strip() or not ans_b.strip():
            counts["empty"] += 1
            continue
        if ans_a.strip() == ans_b.strip():
            counts["identical"] += 1
            continue
        swap = randomize and rng.random() < 0.5
        sides = [{"source": labels[0], "params": params[0]}, {"source": labels[1], "params": params[1]}]
        left, right = (ans_b, ans_a) if swap else (ans_a, ans_b)
        meta_a, meta_b = (sides[1], sides[0]) if swap else (sides[0], sides[1])
        single = len(conv) == 1 and conv[0]["role"] == "user"
        key = f"pair:{iid or conv[-1]['content']}:{labels[0]}:{labels[1]}"
        rows.append({"id": str(uuid.uuid5(_NS, key)), "interaction_id": iid, "kind": "pairwise",
                     # A multi-turn prompt stays on the interaction: the builder reads its messages.
                     "prompt": conv[-1]["content"] if single else None,
                     "response_a": left, "response_b": right, "choice": None, "value": None, "text": None,
                     "annotator": None, "status": "queued", "priority": priority, "reason": "pairwise",
                     "meta": {"a": meta_a, "b": meta_b, "swapped": swap,
                              **({} if single else {"conversation": conv})},
                     "created_at": t, "done_at": None})
    return rows


def _insert_new(db: Database, rows: list[dict[str, Any]], counts: dict[str, int]) -> list[str]:
    unique = list({r["id"]: r for r in reversed(rows)}.values())[::-1]  # a prompt listed twice: once
    counts["existing"] += len(rows) - len(unique)
    rows = unique
    if not rows:
        return []
    with db.begin() as conn:
        have = {r[0] for r in conn.execute(sa.select(_AN.c.id).where(_AN.c.id.in_([r["id"] for r in rows])))}
        new = [r for r in rows if r["id"] not in have]
        counts["existing"] += len(rows) - len(new)
        db.insert_ignore(conn, _AN, new)
    return [r["id"] for r in new]


# ---------------------------------------------------------------- serving the queue
def _item(row: Mapping[str, Any]) -> PairItem:
    meta = row.get("meta") or {}
    if row.get("prompt"):
        conv: Iterable[Mapping[str, str]] = [{"role": "user", "content": row["prompt"]}]
    elif meta.get("conversation"):
        conv = meta["conversation"]
    else:
        conv = _prompt_of({"messages": row.get("messages"), "query": row.get("query")})
    return PairItem(row["id"], row["interaction_id"], tuple(conv), row["response_a"] or "", row["response_b"] or "",
                    row["status"], row["choice"], row["annotator"], meta)


def _pair_select() -> sa.Select:
    return (sa.select(_AN, _IT.c.messages, _IT.c.query).select_from(_AN.outerjoin(_IT, _IT.c.id == _AN.c.interaction_id))
            .where(_AN.c.kind == "pairwise"))


def next_pair(db: Database, *, exclude: Sequence[str] = ()) -> PairItem | None:
    """The next queued pairwise item: highest priority first, then oldest."""
    stmt = _pair_select().where(_AN.c.status == "queued")
    if exclude:
        stmt = stmt.where(_AN.c.id.not_in(list(exclude)))
    stmt = stmt.order_by(sa.func.coalesce(_AN.c.priority, 0.0).desc(), _AN.c.created_at, _AN.c.id).limit(1)
    row = db.fetch_one(stmt)
    return _item(row) if row else None


def get_pair(db: Database, annotation_id: str) -> PairItem:
    row = db.fetch_one(_pair_select().where(_AN.c.id == annotation_id))
    if row is None:
        raise NotFoundError(f"pairwise annotation {annotation_id!r} not found", id=annotation_id)
    return _item(row)


def pair_progress(db: Database, annotator: str | None = None) -> PairProgress:
    """Counts of the pairwise queue by status, and how many ``annotator`` has finished."""
    rows = db.fetch_all(sa.select(_AN.c.status, sa.func.count().label("n")).where(_AN.c.kind == "pairwise")
                        .group_by(_AN.c.status))
    by = {r["status"]: int(r["n"]) for r in rows}
    mine = 0
    if annotator is not None:
        mine = int(db.scalar(sa.select(sa.func.count()).where(
            _AN.c.kind == "pairwise", _AN.c.annotator == annotator, _AN.c.status.in_(("done", "skipped")))) or 0)
    return PairProgress(by.get("queued", 0), by.get("done", 0), by.get("skipped", 0), mine)


def record_choice(db: Database, annotation_id: str, choice: str, *, annotator: str,
                  comment: str | None = None) -> PairItem:
    """Store ``choice`` (a | b | equal | both_bad | skip) for a queued item.

    A second answer for the same item raises :class:`ConflictError` (someone else was
    faster); the first one stands.
    """
    if choice not in CHOICES:
        raise ValidationError(f"choice must be one of {', '.join(CHOICES)}, not {choice!r}", field="choice")
    if not annotator:
        raise ValidationError("annotator is required", field="annotator")
    values = {"choice": choice, "annotator": annotator, "done_at": now(),
              "status": "skipped" if choice == "skip" else "done", "text": (comment or None)}
    with db.begin() as conn:
        done = conn.execute(_AN.update().where(_AN.c.id == annotation_id, _AN.c.kind == "pairwise",
                                               _AN.c.status == "queued").values(**values)).rowcount
    if not done:
        item = get_pair(db, annotation_id)  # NotFoundError when it does not exist
        raise ConflictError(f"annotation {annotation_id} is already {item.status} "
                            f"({item.choice} by {item.annotator})", id=annotation_id)
    return get_pair(db, annotation_id)


# ---------------------------------------------------------------- explicit ratings
def next_rating(db: Database) -> RatingItem | None:
    """The next queued rating item (highest priority first)."""
    row = db.fetch_one(sa.select(_AN).where(_AN.c.kind == "rating", _AN.c.status == "queued")
                       .order_by(sa.func.coalesce(_AN.c.priority, 0.0).desc(), _AN.c.created_at, _AN.c.id).limit(1))
    if row is None:
        return None
    return RatingItem(row["id"], row["interaction_id"], row["prompt"] or "", row["response_a"] or "", row["reason"])


def record_rating(db: Database, interaction_id: str, stars: int, *, annotator: str, comment: str | None = None,
                  annotation_id: str | None = None) -> list[str]:
    """Explicit feedback on an interaction: a 1-5 ``rating`` (and a ``comment``) from an annotator.

    Writes ``feedback`` rows (source ``annotator``) and marks the queued rating item
    ``annotation_id`` (or any queued rating item of the interaction) done. Returns the
    feedback ids.
    """
    if isinstance(stars, bool) or not isinstance(stars, int) or not 1 <= stars <= 5:
        raise ValidationError(f"rating must be a whole number of stars from 1 to 5, not {stars!r}", field="rating")
    if db.fetch_one(sa.select(_IT.c.id).where(_IT.c.id == interaction_id)) is None:
        raise NotFoundError(f"interaction {interaction_id!r} not found", id=interaction_id)
    t, meta = now(), {"annotator": annotator, "via": "dashboard"}
    rows = [{"id": new_id(), "interaction_id": interaction_id, "kind": "rating", "value": float(stars), "text": None,
             "source": "annotator", "user_id": None, "ts": t, "meta": meta}]
    if comment and comment.strip():
        rows.append({"id": new_id(), "interaction_id": interaction_id, "kind": "comment", "value": None,
                     "text": comment.strip(), "source": "annotator", "user_id": None, "ts": t, "meta": meta})
    which = _AN.c.id == annotation_id if annotation_id else _AN.c.interaction_id == interaction_id
    with db.begin() as conn:
        conn.execute(_FB.insert(), rows)
        conn.execute(_AN.update().where(which, _AN.c.kind == "rating", _AN.c.status == "queued").values(
            status="done", value=float(stars), text=(comment or "").strip() or None, annotator=annotator, done_at=t))
    return [r["id"] for r in rows]
