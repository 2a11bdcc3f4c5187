"""The failure cases of a period: what a prompt rewriter is shown.

An interaction failed when its reward is negative (thumbs down, regenerated, reported),
when a judge or the heuristics gave it a failure category, or when its quality score is
below ``max_quality``. Only consented chat interactions are used; the newest come first.

>>> cases = collect_failures(db, version_id="v3", limit=20)          # doctest: +SKIP
>>> summarize(cases)["categories"]                                    # doctest: +SKIP
{'format_violation': 12, 'unrated': 5}
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from tuneloop.store import Database, schema

__all__ = ["FailureCase", "collect_failures", "summarize"]


@dataclass(frozen=True)
class FailureCase:
    """One failed interaction: the question, the answer, and why it counts as a failure."""

    interaction_id: str
    query: str
    response: str
    reward: float | None
    category: str | None
    quality_score: float | None
    comments: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["comments"] = list(self.comments)
        return d


def collect_failures(db: Database, *, version_id: str | None = None, since: float | None = None,
                     limit: int = 20, max_quality: float = 0.5) -> list[FailureCase]:
    """The newest ``limit`` failed interactions (of ``version_id``, after ``since``)."""
    it, fb = schema.interactions, schema.feedback
    failed = sa.or_(it.c.reward < 0, it.c.failure_category.is_not(None), it.c.quality_score < max_quality)
    stmt = (sa.select(it.c.id, it.c.query, it.c.response, it.c.reward, it.c.failure_category, it.c.quality_score)
            .where(it.c.kind == "chat", it.c.consent.is_(True), it.c.status == "ok", failed)
            .order_by(it.c.ts.desc()).limit(limit))
    if version_id is not None:
        stmt = stmt.where(it.c.version_id == version_id)
    if since is not None:
        stmt = stmt.where(it.c.ts > since)
    rows = db.fetch_all(stmt)
    comments: dict[str, list[str]] = {}
    ids = [r["id"] for r in rows]
    if ids:
        for f in db.fetch_all(sa.select(fb.c.interaction_id, fb.c.text)
                              .where(fb.c.interaction_id.in_(ids), fb.c.text.is_not(None)).order_by(fb.c.ts)):
            if f["text"].strip():
                comments.setdefault(f["interaction_id"], []).append(f["text"].strip()[:500])
    return [FailureCase(r["id"], r["query"] or "", r["response"] or "", r["reward"], r["failure_category"],
                        r["quality_score"], tuple(comments.get(r["id"], ()))) for r in rows]


def summarize(cases: Sequence[FailureCase]) -> dict[str, Any]:
    """Counts a report (and a rewriter) can use: cases, categories, negative rewards, comments."""
    categories = Counter(c.category or "unrated" for c in cases)
    return {"cases": len(cases), "categories": dict(categories.most_common()),
            "negative_reward": sum(1 for c in cases if c.reward is not None and c.reward < 0),
            "with_comments": sum(1 for c in cases if c.comments)}
