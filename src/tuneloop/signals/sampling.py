"""Sampling for annotation (seed 003): rank interactions by how much a label would teach,
take 70% from the top and 30% at random for diversity, and queue them for annotators.

Priority, as in seed 003, plus negative feedback (issue 5):

| signal | points | from |
|---|---|---|
| new topic | 3 | embedding novelty: 1 - max cosine to the reference set >= ``novelty_threshold`` |
| edge case | 3 | a failure category, or a query in the shortest / longest 1% |
| engagement | 2 | reward > 0 |
| uncertainty / disagreement | 2 | ``meta["uncertainty"] > 0.5``, or the judge and the user disagree |
| negative feedback | 2 | reward < 0 |

>>> cands = [Candidate("a", 0.0, "new_topic"), Candidate("b", 5.0, "edge_case"), Candidate("c", 2.0, "engagement")]
>>> [c.interaction_id for c in choose(cands, 2, top_fraction=0.5, seed=0)]
['b', 'a']
"""
from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from tuneloop.errors import ValidationError
from tuneloop.ids import now
from tuneloop.store import schema

_NAMESPACE = uuid.UUID("6f1c2a4e-7d0b-4c55-9a3e-51a0c0de0003")
POINTS = {"new_topic": 3.0, "edge_case": 3.0, "engagement": 2.0, "uncertainty": 2.0, "negative_feedback": 2.0}


@dataclass(frozen=True, slots=True)
class Candidate:
    """An interaction with its annotation ``priority`` and the main ``reason`` for it."""

    interaction_id: str
    priority: float
    reason: str


def priority(row: Mapping[str, Any], *, novelty: float = 0.0, novelty_threshold: float = 0.5,
             length_bounds: tuple[float, float] = (0.0, float("inf")), judge_rating: float | None = None
             ) -> tuple[float, str]:
    """(points, main reason) of one interaction row. Pure.

    >>> priority({"reward": -3.0, "failure_category": "refusal"})
    (5.0, 'edge_case')
    """
    reasons: list[str] = []
    if novelty >= novelty_threshold:
        reasons.append("new_topic")
    n = len(row.get("query") or "")
    if row.get("failure_category") or not length_bounds[0] <= n <= length_bounds[1]:
        reasons.append("edge_case")
    reward = row.get("reward")
    if reward is not None and reward > 0:
        reasons.append("engagement")
    meta = row.get("meta") or {}
    uncertain = isinstance(meta, Mapping) and float(meta.get("uncertainty") or 0.0) > 0.5
    disagree = judge_rating is not None and reward is not None and (
        (judge_rating >= 4 and reward < 0) or (judge_rating <= 2 and reward > 0))
    if uncertain or disagree:
        reasons.append("uncertainty")
    if reward is not None and reward < 0:
        reasons.append("negative_feedback")
    if not reasons:
        return 0.0, "random"
    points = sum(POINTS[r] for r in reasons)
    return points, max(reasons, key=lambda r: POINTS[r])


def choose(candidates: Sequence[Candidate], count: int, *, top_fraction: float = 0.7, seed: int = 0) -> list[Candidate]:
    """``top_fraction`` of ``count`` by priority (ties by id), the rest at random from the others."""
    if count < 0 or not 0.0 <= top_fraction <= 1.0:
        raise ValidationError("count must be >= 0 and top_fraction in [0, 1]", field="count")
    ranked = sorted(candidates, key=lambda c: (-c.priority, c.interaction_id))
    n_top = min(len(ranked), int(round(count * top_fraction)))
    top, rest = ranked[:n_top], ranked[n_top:]
    rng = random.Random(seed)
    extra = rng.sample(rest, min(len(rest), count - n_top))
    return top + extra


@dataclass(frozen=True, slots=True)
class SamplingResult:
    """How many interactions were queued, and why (main reason -> count)."""

    queued: int
    considered: int
    reasons: dict[str, int]


def _novelty(embedder: Any, texts: list[str], reference: list[str]) -> np.ndarray:
    if embedder is None or not reference or not texts:
        return np.zeros(len(texts))
    a = np.asarray(embedder.encode(texts), dtype=np.float32)
    b = np.asarray(embedder.encode(reference), dtype=np.float32)
    a /= np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b /= np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    best = np.full(len(a), -1.0, dtype=np.float32)
    for start in range(0, len(b), 4096):
        best = np.maximum(best, (a @ b[start:start + 4096].T).max(axis=1))
    return 1.0 - best


def _pool(db, since: float | None, limit: int) -> list[dict[str, Any]]:
    it, subj, an = schema.interactions, schema.subjects, schema.annotations
    queued = sa.select(an.c.interaction_id).where(an.c.interaction_id.is_not(None))
    stmt = (sa.select(it.c.id, it.c.ts, it.c.query, it.c.response, it.c.reward, it.c.failure_category, it.c.meta)
            .select_from(it.outerjoin(subj, subj.c.user_id == it.c.user_id))
            .where(it.c.kind == "chat", it.c.status == "ok", it.c.consent.is_(True),
                   sa.or_(subj.c.consent_training.is_(None), subj.c.consent_training.is_(True)),
                   subj.c.deleted_at.is_(None), it.c.id.not_in(queued))
            .order_by(it.c.ts.desc()).limit(limit))
    if since is not None:
        stmt = stmt.where(it.c.ts > since)
    return db.fetch_all(stmt)


def _reference(db, before: float, size: int) -> list[str]:
    it, an = schema.interactions, schema.annotations
    annotated = db.fetch_all(sa.select(an.c.prompt).where(an.c.prompt.is_not(None)).limit(size))
    older = db.fetch_all(sa.select(it.c.query).where(it.c.ts < before).order_by(it.c.ts.desc()).limit(size))
    return [r["prompt"] for r in annotated] + [r["query"] for r in older]


def _judge_ratings(db, ids: list[str]) -> dict[str, float]:
    fb = schema.feedback
    out: dict[str, float] = {}
    for start in range(0, len(ids), 500):
        rows = db.fetch_all(sa.select(fb.c.interaction_id, fb.c.value)
                            .where(fb.c.interaction_id.in_(ids[start:start + 500]), fb.c.source == "judge",
                                   fb.c.kind == "rating"))
        out.update({r["interaction_id"]: r["value"] for r in rows})
    return out


def sample_for_annotation(db, count: int, *, since: float | None = None, embedder: Any = None,
                          top_fraction: float = 0.7, novelty_threshold: float = 0.5, pool_size: int = 20000,
                          reference_size: int = 2000, seed: int = 0) -> SamplingResult:
    """Rank recent consented interactions not yet queued, queue ``count`` of them as
    ``annotations`` rows (kind ``rating``, status ``queued``, priority, reason).

    ``embedder`` (anything with ``encode(texts) -> vectors``, e.g. ``get_embedder("hashing")``)
    measures topic novelty against already-annotated prompts and older traffic; without
    one, novelty is not scored.
    """
    rows = _pool(db, since, pool_size)
    if not rows:
        return SamplingResult(0, 0, {})
    queries = [r["query"] or "" for r in rows]
    novelty = _novelty(embedder, queries, _reference(db, min(r["ts"] for r in rows), reference_size))
    lengths = np.array([len(q) for q in queries])
    bounds = (float(np.percentile(lengths, 1)), float(np.percentile(lengths, 99))) if len(rows) >= 100 \
        else (0.0, float("inf"))
    judged = _judge_ratings(db, [r["id"] for r in rows])
    by_id = {r["id"]: r for r in rows}
    candidates = []
    for r, nov in zip(rows, novelty):
        p, reason = priority(r, novelty=float(nov), novelty_threshold=novelty_threshold, length_bounds=bounds,
                             judge_rating=judged.get(r["id"]))
        candidates.append(Candidate(r["id"], p, reason))
    chosen = choose(candidates, count, top_fraction=top_fraction, seed=seed)
    t = now()
    queue = [{"id": str(uuid.uuid5(_NAMESPACE, f"annotate:{c.interaction_id}")), "interaction_id": c.interaction_id,
              "kind": "rating", "prompt": by_id[c.interaction_id]["query"],
              "response_a": by_id[c.interaction_id]["response"], "response_b": None, "choice": None, "value": None,
              "text": None, "annotator": None, "status": "queued", "priority": c.priority, "reason": c.reason,
              "meta": None, "created_at": t, "done_at": None} for c in chosen]
    with db.begin() as conn:
        db.insert_ignore(conn, schema.annotations, queue)
    return SamplingResult(len(queue), len(rows), dict(Counter(c.reason for c in chosen)))
