"""Ranking metrics for retrievers: MRR, nDCG@k, hit rate@k, recall@k, precision@k.

Pure functions. A ranking is a list of document ids, best first; relevance is a set of
relevant ids (binary) or a mapping id -> graded gain.

>>> mrr([["d3", "d1", "d2"], ["d9", "d8"]], [{"d1"}, {"d7"}])
0.25
>>> round(ndcg_at_k(["d1", "d2", "d3"], {"d2": 1.0, "d3": 1.0}, k=3), 4)
0.6934
"""
from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from tuneloop.errors import ValidationError

__all__ = ["reciprocal_rank", "mrr", "ndcg_at_k", "hit_rate_at_k", "recall_at_k", "precision_at_k",
           "RetrievalReport", "retrieval_report"]

Relevance = Collection[str] | Mapping[str, float]


def _gains(relevant: Relevance) -> dict[str, float]:
    if isinstance(relevant, Mapping):
        return {k: float(v) for k, v in relevant.items() if float(v) > 0}
    return {k: 1.0 for k in relevant}


def _check_k(k: int) -> None:
    if k < 1:
        raise ValidationError(f"k must be at least 1, got {k}")


def reciprocal_rank(ranked: Sequence[str], relevant: Relevance, *, k: int | None = None) -> float:
    """1 / rank of the first relevant id (within the top ``k`` when given), 0 if none."""
    gains = _gains(relevant)
    for i, doc in enumerate(ranked[:k] if k else ranked, 1):
        if doc in gains:
            return 1.0 / i
    return 0.0


def ndcg_at_k(ranked: Sequence[str], relevant: Relevance, k: int = 10) -> float:
    """Normalized discounted cumulative gain at ``k``: sum gain_i / log2(i + 1) over the ideal.

    Linear gains (the graded value itself), as in scikit-learn's ``ndcg_score``. Duplicate
    ids in ``ranked`` earn their gain once. Returns 0 when nothing is relevant.
    """
    _check_k(k)
    gains = _gains(relevant)
    seen: set[str] = set()
    dcg = 0.0
    for i, doc in enumerate(ranked[:k], 1):
        if doc in gains and doc not in seen:
            dcg += gains[doc] / math.log2(i + 1)
        seen.add(doc)
    ideal = sum(g / math.log2(i + 1) for i, g in enumerate(sorted(gains.values(), reverse=True)[:k], 1))
    return dcg / ideal if ideal > 0 else 0.0


def hit_rate_at_k(ranked: Sequence[str], relevant: Relevance, k: int = 10) -> float:
    """1.0 if any relevant id is in the top ``k``, else 0.0."""
    _check_k(k)
    gains = _gains(relevant)
    return 1.0 if any(doc in gains for doc in ranked[:k]) else 0.0


def recall_at_k(ranked: Sequence[str], relevant: Relevance, k: int = 10) -> float:
    """Share of the relevant ids found in the top ``k`` (0 when nothing is relevant)."""
    _check_k(k)
    gains = _gains(relevant)
    return len(gains.keys() & set(ranked[:k])) / len(gains) if gains else 0.0


def precision_at_k(ranked: Sequence[str], relevant: Relevance, k: int = 10) -> float:
    """Share of the top ``k`` positions holding a relevant id (divides by ``k``)."""
    _check_k(k)
    gains = _gains(relevant)
    return len(gains.keys() & set(ranked[:k])) / k


def _pairs(rankings: Sequence[Sequence[str]], relevants: Sequence[Relevance]) -> None:
    if len(rankings) != len(relevants):
        raise ValidationError(f"{len(rankings)} rankings but {len(relevants)} relevance sets")
    if not rankings:
        raise ValidationError("no queries to score")


def mrr(rankings: Sequence[Sequence[str]], relevants: Sequence[Relevance], *, k: int | None = None) -> float:
    """Mean reciprocal rank over queries."""
    _pairs(rankings, relevants)
    return sum(reciprocal_rank(r, rel, k=k) for r, rel in zip(rankings, relevants)) / len(rankings)


@dataclass(frozen=True, slots=True)
class RetrievalReport:
    """Means over queries; the dicts are keyed by k."""

    n: int
    mrr: float
    ndcg: dict[int, float]
    hit_rate: dict[int, float]
    recall: dict[int, float]
    precision: dict[int, float]


def retrieval_report(rankings: Sequence[Sequence[str]], relevants: Sequence[Relevance],
                     ks: Sequence[int] = (1, 5, 10)) -> RetrievalReport:
    """All the metrics at each ``k`` in ``ks``, averaged over queries."""
    _pairs(rankings, relevants)
    n = len(rankings)

    def mean(fn, k: int) -> float:
        return sum(fn(r, rel, k) for r, rel in zip(rankings, relevants)) / n

    return RetrievalReport(
        n=n, mrr=mrr(rankings, relevants),
        ndcg={k: mean(ndcg_at_k, k) for k in ks}, hit_rate={k: mean(hit_rate_at_k, k) for k in ks},
        recall={k: mean(recall_at_k, k) for k in ks}, precision={k: mean(precision_at_k, k) for k in ks})
