"""Retrieval metrics on hand-computed cases, and nDCG against scikit-learn."""
from __future__ import annotations

import math

import pytest

from tuneloop.errors import ValidationError
from tuneloop.evaluate.retrieval_metrics import (
    hit_rate_at_k, mrr, ndcg_at_k, precision_at_k, recall_at_k, reciprocal_rank, retrieval_report,
)

RANKINGS = [["a", "b", "c", "d"], ["x", "y", "z", "w"], ["p", "q", "r", "s"]]
RELEVANT = [{"c"}, {"x", "w"}, {"nothing-found"}]


def test_mrr_by_hand():
    assert reciprocal_rank(RANKINGS[0], RELEVANT[0]) == pytest.approx(1 / 3)
    assert mrr(RANKINGS, RELEVANT) == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert mrr(RANKINGS, RELEVANT, k=2) == pytest.approx(1 / 3)  # "c" at rank 3 falls outside


def test_hit_rate_recall_precision_by_hand():
    assert [hit_rate_at_k(r, rel, 2) for r, rel in zip(RANKINGS, RELEVANT)] == [0.0, 1.0, 0.0]
    assert recall_at_k(RANKINGS[1], RELEVANT[1], 2) == 0.5
    assert recall_at_k(RANKINGS[1], RELEVANT[1], 4) == 1.0
    assert precision_at_k(RANKINGS[1], RELEVANT[1], 4) == 0.5
    assert recall_at_k(["a"], set(), 3) == 0.0


def test_ndcg_by_hand():
    # relevant at ranks 2 and 4: DCG = 1/log2(3) + 1/log2(5); ideal = 1 + 1/log2(3)
    got = ndcg_at_k(["a", "r1", "b", "r2"], {"r1", "r2"}, k=4)
    assert got == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)))
    assert ndcg_at_k(["r1", "r2"], {"r1", "r2"}, k=2) == 1.0
    assert ndcg_at_k(["a"], {"r1"}, k=1) == 0.0
    assert ndcg_at_k(["a"], set(), k=1) == 0.0
    assert ndcg_at_k(["r1", "r1"], {"r1": 1.0, "r2": 1.0}, k=2) == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_graded_ndcg_matches_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    docs = ["d1", "d2", "d3", "d4", "d5"]
    gains = {"d1": 0.0, "d2": 3.0, "d3": 1.0, "d4": 2.0, "d5": 0.0}
    scores = [0.9, 0.8, 0.7, 0.4, 0.1]  # the retriever's ranking: d1 > d2 > d3 > d4 > d5
    for k in (1, 3, 5):
        want = sk.ndcg_score([[gains[d] for d in docs]], [scores], k=k)
        assert ndcg_at_k(docs, gains, k=k) == pytest.approx(want)


def test_report_and_bad_input():
    rep = retrieval_report(RANKINGS, RELEVANT, ks=(1, 4))
    assert rep.n == 3 and rep.hit_rate == {1: pytest.approx(1 / 3), 4: pytest.approx(2 / 3)}
    assert rep.recall[4] == pytest.approx((1 + 1 + 0) / 3)
    with pytest.raises(ValidationError, match="2 rankings but 1"):
        mrr(RANKINGS[:2], RELEVANT[:1])
    with pytest.raises(ValidationError, match="k must be at least 1"):
        ndcg_at_k(["a"], {"a"}, k=0)
