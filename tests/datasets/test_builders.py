"""DPO (annotations, judge, regenerate chains, reward pairs), KTO, triplets and reranker rows."""
from __future__ import annotations

import json
from pathlib import Path


from tuneloop.datasets.builders import label_docs, prompt_messages
from tuneloop.datasets.generator import DataGeneratorConfig, TrainingDataGenerator
from tuneloop.datasets.snapshot import dataset_members
from tuneloop.signals.implicit import infer_implicit_feedback
from tuneloop.signals.rewards import update_rewards


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _build(db, tmp_path, name="out", **kw):
    return TrainingDataGenerator(db, DataGeneratorConfig(**kw)).generate(tmp_path / f"{name}.jsonl")


def _members(db, ds_id):
    return sorted((m["interaction_id"], m["role"]) for m in dataset_members(db, ds_id))


def _annotation(i, choice, a="Paris", b="Lyon", annotator="alice", interaction_id=None, prompt="Capital of France?"):
    return {"id": i, "interaction_id": interaction_id, "kind": "pairwise", "prompt": prompt, "response_a": a,
            "response_b": b, "choice": choice, "annotator": annotator, "status": "done", "created_at": float(len(i)),
            "meta": None}


def test_dpo_from_annotations_and_judge(db, add, tmp_path, interaction):
    add("interactions", [interaction("hidden", "secret q", "secret a", consent=False)])
    add("annotations", [
        _annotation("an1", "a"), _annotation("an2", "b", a="Rome?", b="Berlin", prompt="Capital of Germany?"),
        _annotation("an3", "equal", prompt="tie q"),                          # no preference: not a pair
        _annotation("an4", "a", interaction_id="hidden", prompt="private"),   # its interaction has no consent
        _annotation("jd1", "a", a="4", b="5", annotator="judge:tiny", prompt="2+2?"),
        {**_annotation("q1", "a", prompt="queued"), "status": "queued"},
    ])
    res = _build(db, tmp_path, kind="dpo", dpo_sources=("annotations",))
    rows = _rows(res.path)
    assert [(r["prompt"][0]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == \
        [("Capital of France?", "Paris", "Lyon"), ("Capital of Germany?", "Berlin", "Rome?")]
    assert res.counts["pairs_annotations"] == 2 and res.dropped["consent"] == 1
    judge = _build(db, tmp_path, "judge", kind="dpo", dpo_sources=("judge",), format_type="standard")
    assert _rows(judge.path) == [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}]


def test_dpo_from_regenerate_chains(db, add, tmp_path, interaction):
    s = dict(user_id="u1", session_id="s1")
    add("interactions", [
        interaction("a", "Capital of France?", "Lyon", ts=100, **s),
        interaction("b", "Capital of France?", "Marseille", ts=110, **s),
        interaction("c", "Capital of France?", "Paris", ts=120, **s),
        interaction("d", "Thanks! And Spain?", "Madrid", ts=150, **s),
        interaction("x", "Capital of Italy?", "Milan", ts=100, user_id="u2", session_id="s2"),
        interaction("y", "Capital of Italy?", "Milan", ts=105, user_id="u2", session_id="s2"),  # same answer
    ])
    infer_implicit_feedback(db)   # a, b and x were regenerated
    res = _build(db, tmp_path, kind="dpo", dpo_sources=("regenerate",), format_type="sharegpt")
    rows = _rows(res.path)
    assert [(r["chosen"]["value"], r["rejected"]["value"]) for r in rows] == [("Paris", "Lyon"), ("Paris", "Marseille")]
    assert rows[0]["conversations"] == [{"from": "human", "value": "Capital of France?"}]
    assert res.dropped["same_answer"] == 1
    assert _members(db, res.dataset_id) == [("a", "rejected"), ("b", "rejected"), ("c", "chosen")]


def test_dpo_from_reward_differences_on_same_and_near_prompts(db, add, tmp_path, interaction):
    add("interactions", [
        interaction("v1", "How do I reverse a list in Python?", "Use reversed() or slicing.", reward=3.0, version_id="v1"),
        interaction("v2", "how do i reverse a list in python", "You cannot.", reward=-2.0, version_id="v2"),
        interaction("v3", "How do I reverse a list in Python please?", "Loop backwards.", reward=0.5, version_id="v3"),
        interaction("w1", "What is a monad?", "A monoid in the category of endofunctors.", reward=0.5),
        interaction("w2", "What is a monad?", "A design pattern.", reward=0.0),       # margin 0.5 < 1
        interaction("z1", "Lonely prompt", "only answer", reward=5.0),
    ])
    res = _build(db, tmp_path, kind="dpo", dpo_sources=("rewards",), format_type="standard")
    rows = _rows(res.path)
    assert len(rows) == 1
    assert rows[0]["chosen"] == "Use reversed() or slicing." and rows[0]["rejected"] == "You cannot."
    assert res.dropped["small_margin"] == 1
    exact_only = _build(db, tmp_path, "exact", kind="dpo", dpo_sources=("rewards",), pair_prompt_threshold=None)
    assert exact_only.final_count == 1   # v1 and v2 normalize to the same prompt; v3 differs


def test_kto_labels_from_reward_sign(db, add, tmp_path, interaction):
    add("interactions", [interaction("p", "q1?", "good", reward=2.0), interaction("n", "q2?", "bad", reward=-5.0),
                         interaction("z", "q3?", "meh", reward=0.0), interaction("none", "q4?", "unrated"),
                         interaction("nc", "q5?", "private", reward=3.0, consent=False)])
    res = _build(db, tmp_path, kind="kto")
    rows = _rows(res.path)
    assert [(r["completion"][0]["content"], r["label"]) for r in rows] == [("good", True), ("bad", False)]
    assert res.dropped["neutral"] == 1 and res.dropped["consent"] == 1
    assert res.counts["desirable"] == 1 and res.counts["undesirable"] == 1


def _retrieval(query, docs):
    return {"retrieval": {"query": query, "docs": docs}}


def test_label_docs_skip_above():
    docs = [{"id": 1, "text": "a", "rank": 1}, {"id": 2, "text": "b", "rank": 2, "skipped": True},
            {"id": 3, "text": "c", "rank": 3, "clicked": True}, {"id": 4, "text": "d", "rank": 4}]
    pos, neg = label_docs(docs)
    assert [d["id"] for d in pos] == [3] and [d["id"] for d in neg] == [1, 2]


def test_triplets_and_reranker_rows(db, add, tmp_path, interaction):
    docs = [{"id": "d1", "text": "Reset via settings page", "score": 0.9, "rank": 1, "clicked": False},
            {"id": "d2", "text": "Password reset email flow", "score": 0.8, "rank": 2, "clicked": True, "used": True},
            {"id": "d3", "text": "Billing FAQ", "score": 0.5, "rank": 3, "skipped": True},
            {"id": "d4", "text": "Unrelated doc", "score": 0.1, "rank": 4}]
    add("interactions", [
        interaction("r1", "reset password", "Use the email flow.", meta=_retrieval("how to reset password", docs)),
        interaction("r2", "no labels", "x", meta=_retrieval("no labels", [{"id": "a", "text": "doc"}])),
        interaction("r3", "private", "x", consent=False, meta=_retrieval("private q", docs)),
        interaction("plain", "no retrieval", "x"),
    ])
    tri = _build(db, tmp_path, "tri", kind="triplets")
    assert _rows(tri.path) == [{"query": "how to reset password", "positive": "Password reset email flow",
                                "negative": "Reset via settings page"}]
    assert tri.dropped["consent"] == 1 and tri.dropped["unlabeled"] == 1
    rr = _build(db, tmp_path, "rr", kind="reranker")
    assert [(r["doc"], r["score"]) for r in _rows(rr.path)] == [
        ("Password reset email flow", 1.0), ("Reset via settings page", 0.0), ("Billing FAQ", 0.0)]


def test_prompt_messages_strip_a_logged_answer():
    row = {"query": "hi", "response": "yo", "messages": [{"role": "system", "content": "sys"},
                                                         {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                                                         {"role": "assistant", "content": "yo"}]}
    assert prompt_messages(row) == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
    assert prompt_messages({"query": "q", "messages": None}) == [{"role": "user", "content": "q"}]


def test_rewards_then_sft_with_min_user_feedback(db, add, tmp_path, interaction):
    add("interactions", [interaction("a", "Q one?", "A one."), interaction("b", "Q two?", "A two.")])
    add("feedback", [{"id": "f1", "interaction_id": "a", "kind": "thumbs", "value": 1.0, "ts": 1.0, "source": "user"},
                     {"id": "f2", "interaction_id": "b", "kind": "report", "value": None, "ts": 1.0, "source": "user"}])
    update_rewards(db)
    res = _build(db, tmp_path, min_user_feedback=1)
    assert res.final_count == 1 and _members(db, res.dataset_id) == [("a", "train")]
