"""TrainingDataGenerator on the store: SFT filters, consent, PII, dedup, leak guard, snapshot."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tuneloop.datasets.dedup import MinHasher, normalize_text
from tuneloop.datasets.generator import DataGeneratorConfig, TrainingDataGenerator
from tuneloop.datasets.snapshot import dataset_members, datasets_containing, file_hash, get_dataset, verify_snapshot
from tuneloop.errors import DatasetError, ValidationError


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _member_ids(db, ds_id):
    return sorted(m["interaction_id"] for m in dataset_members(db, ds_id))


def test_sft_filters_and_consent(db, add, tmp_path, interaction):
    add("subjects", [{"user_id": "no-consent", "consent_training": False, "created_at": 0.0, "deleted_at": None},
                     {"user_id": "deleted", "consent_training": True, "created_at": 0.0, "deleted_at": 5.0},
                     {"user_id": "u1", "consent_training": True, "created_at": 0.0, "deleted_at": None}])
    add("interactions", [
        interaction("good1", "What is 2+2?", "4", reward=2.0),
        interaction("good2", "Name a primary colour", "Red", reward=1.0),
        interaction("lowq", "Spell cat", "c-a-t", quality_score=0.2, reward=3.0),
        interaction("noq", "Spell dog", "d-o-g", quality_score=None, reward=3.0),
        interaction("badfb", "Spell cow", "c-o-w", reward=-1.0),
        interaction("err", "Spell pig", "", status="error", reward=3.0),
        interaction("empty", "Spell hen", "   ", reward=3.0),
        interaction("refusal", "Spell fox", "I can't help", failure_category="refusal", reward=3.0),
        interaction("offtopic", "Tell me about crypto scams", "...", reward=3.0),
        interaction("oos", "Weather on Mars?", "Cold", failure_category="out_of_scope", reward=3.0),
        interaction("noconsent", "Spell owl", "o-w-l", consent=False, reward=3.0),
        interaction("subject", "Spell ant", "a-n-t", user_id="no-consent", reward=3.0),
        interaction("gone", "Spell bee", "b-e-e", user_id="deleted", reward=3.0),
    ])
    cfg = DataGeneratorConfig(min_quality_score=0.7, min_user_feedback=1, format_type="messages",
                              off_topic_patterns=(r"\bcrypto\b",))
    res = TrainingDataGenerator(db, cfg).generate(tmp_path / "sft.jsonl")
    assert res.final_count == 2 and _member_ids(db, res.dataset_id) == ["good1", "good2"]
    assert {k: v for k, v in res.dropped.items() if v} == {
        "quality": 2, "feedback": 1, "error": 1, "empty": 1, "failure": 1, "off_topic": 2, "consent": 3}
    assert res.counts["read"] == 13
    rows = _rows(res.path)
    assert rows[0]["messages"] == [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]


def test_seed_defaults_write_chatml(db, add, tmp_path, interaction):
    add("interactions", [interaction("a", "Capital of France?", "Paris")])
    res = TrainingDataGenerator(db, DataGeneratorConfig()).generate(tmp_path / "out.jsonl")
    assert res.format_type == "chatml" and res.final_count == 1
    assert _rows(res.path) == [{"text": "<|im_start|>user\nCapital of France?<|im_end|>\n"
                                        "<|im_start|>assistant\nParis<|im_end|>\n"}]


def test_pii_is_scrubbed_with_counts(db, add, tmp_path, interaction):
    add("interactions", [
        interaction("a", "My email is jane@corp.com, card 4111 1111 1111 1111", "Noted, jane@corp.com."),
        interaction("b", "Order number 4111111111111112 please", "Order 4111111111111112 found."),
        interaction("c", "Server 10.0.0.7 key AKIAIOSFODNN7EXAMPLE", "Rotated."),
    ])
    res = TrainingDataGenerator(db, DataGeneratorConfig(format_type="messages")).generate(tmp_path / "p.jsonl")
    text = Path(res.path).read_text()
    assert "jane@corp.com" not in text and "4111 1111 1111 1111" not in text and "AKIA" not in text
    assert "4111111111111112" in text   # fails Luhn: not a card
    assert res.pii_counts == {"email": 2, "card": 1, "ip": 1, "secret": 1}
    assert res.counts["rows_with_pii"] == 2
    off = TrainingDataGenerator(db, DataGeneratorConfig(format_type="messages", scrub_pii=False)).generate(
        tmp_path / "raw.jsonl")
    assert "jane@corp.com" in Path(off.path).read_text() and off.pii_counts == {}


def _long(rng, n=40):
    return " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]) + str(rng.randrange(50))
                    for _ in range(n))


def test_exact_and_near_duplicates_are_removed(db, add, tmp_path, interaction):
    rng = random.Random(3)
    base = [_long(rng, 80) for _ in range(6)]
    near = base[0].split()
    near[7] = "changed"
    add("interactions", [interaction(f"o{i}", f"Explain item {i}", t) for i, t in enumerate(base)] + [
        interaction("exact", "explain ITEM 1!", base[1].upper()),          # same after normalization
        interaction("near", "Explain item 0", " ".join(near)),             # one word edited
    ])
    res = TrainingDataGenerator(db, DataGeneratorConfig(format_type="messages")).generate(tmp_path / "d.jsonl")
    assert res.dropped["exact_duplicate"] == 1 and res.dropped["near_duplicate"] == 1
    assert _member_ids(db, res.dataset_id) == [f"o{i}" for i in range(6)]
    keep = TrainingDataGenerator(db, DataGeneratorConfig(format_type="messages", deduplicate=False)).generate(
        tmp_path / "all.jsonl")
    assert keep.final_count == 8


def _jaccard(a, b):
    wa, wb = set(MinHasher.words(a)), set(MinHasher.words(b))
    return len(wa & wb) / len(wa | wb)


def test_golden_leak_guard_no_example_matches_a_golden_prompt(db, add, tmp_path, interaction):
    golden = ["What is the capital of Australia?", "Add 123 and 456 and reply with the number only.",
              "Translate 'good morning' into French."]
    add("golden_examples", [{"id": f"g{i}", "prompt": p, "expected": "x", "created_at": 0.0, "status": "approved"}
                            for i, p in enumerate(golden)])
    rng = random.Random(0)
    rows = []
    for i in range(60):   # ordinary traffic
        rows.append(interaction(f"ok{i}", f"Question {i}: {_long(rng, 8)}?", f"Answer {i}"))
    leaks = ["what is the capital of australia", "What is the capital of Australia ?!",
             "What is the capital of Australia? ", "Add 123 and 456, and reply with the number only",
             "Translate 'good morning' into French, please.", "translate good morning into french"]
    rows += [interaction(f"leak{i}", q, "leaked answer " + str(i)) for i, q in enumerate(leaks)]
    add("interactions", rows)
    res = TrainingDataGenerator(db, DataGeneratorConfig(format_type="messages", leak_threshold=0.8)).generate(
        tmp_path / "g.jsonl")
    assert res.dropped["golden_leak"] == len(leaks)
    for row in _rows(res.path):
        prompt = row["messages"][0]["content"]
        for g in golden:
            assert normalize_text(prompt) != normalize_text(g)
            assert _jaccard(prompt, g) < 0.8
    assert res.final_count == 60


def test_snapshot_rows_hash_and_lineage(db, add, tmp_path, interaction):
    add("interactions", [interaction(f"i{n}", f"Question number {n} about topic {n % 7}", f"Answer {n}")
                         for n in range(40)])
    cfg = DataGeneratorConfig(format_type="completion", validation_fraction=0.3)
    res = TrainingDataGenerator(db, cfg).generate(tmp_path / "snap.jsonl")
    row = get_dataset(db, res.dataset_id)
    assert row["content_hash"] == res.content_hash == file_hash(res.path, res.validation_path)
    assert row["row_count"] == res.final_count == 40 and row["kind"] == "sft" and row["format"] == "completion"
    assert row["counts"]["pii"] == {} and row["config"]["validation_fraction"] == 0.3
    members = dataset_members(db, res.dataset_id)
    roles = {m["role"] for m in members}
    assert len(members) == 40 and roles == {"train", "validation"}
    assert sum(m["role"] == "validation" for m in members) == res.validation_count > 0
    train_prompts = {r["prompt"] for r in _rows(res.path)}
    val_prompts = {r["prompt"] for r in _rows(res.validation_path)}
    assert not train_prompts & val_prompts
    assert datasets_containing(db, ["i3", "nope"]) == [res.dataset_id]
    assert verify_snapshot(db, res.dataset_id)
    with open(res.path, "a") as f:
        f.write('{"prompt": "tampered", "completion": "x"}\n')
    assert not verify_snapshot(db, res.dataset_id)


def test_same_data_same_hash(db, add, tmp_path, interaction):
    add("interactions", [interaction(f"i{n}", f"Question {n} " * 5, f"Answer {n} " * 5) for n in range(30)])
    a = TrainingDataGenerator(db, DataGeneratorConfig()).generate(tmp_path / "a.jsonl")
    b = TrainingDataGenerator(db, DataGeneratorConfig()).generate(tmp_path / "b.jsonl")
    assert a.content_hash == b.content_hash and a.dataset_id != b.dataset_id


def test_topic_balancing_caps_each_cluster(db, add, tmp_path, interaction):
    rng = random.Random(5)
    topics = {"add": "add {} and {} together", "cap": "what is the capital city of country {} {}",
              "wx": "weather forecast rain tomorrow in town {} {}"}
    rows = []
    for name, tpl in topics.items():
        for i in range(25):
            rows.append(interaction(f"{name}{i}", tpl.format(rng.randrange(10**6), rng.randrange(10**6)), f"ans {name} {i}"))
    rng.shuffle(rows)
    add("interactions", rows)
    cfg = DataGeneratorConfig(format_type="completion", max_per_topic=5, num_topics=3, deduplicate=False)
    res = TrainingDataGenerator(db, cfg).generate(tmp_path / "t.jsonl")
    ids = _member_ids(db, res.dataset_id)
    per_topic = {name: sum(i.startswith(name) for i in ids) for name in topics}
    assert per_topic == {"add": 5, "cap": 5, "wx": 5}
    assert res.dropped["topic_cap"] == 60


def test_rehearsal_buffer_merge(db, add, tmp_path, interaction):
    add("interactions", [interaction("new", "New question?", "New answer.")])
    buffer = tmp_path / "rehearsal.jsonl"
    buffer.write_text(json.dumps({"messages": [{"role": "user", "content": "Old question?"},
                                               {"role": "assistant", "content": "Old answer."}]}) + "\n"
                      + json.dumps({"messages": [{"role": "user", "content": "new question"},
                                                 {"role": "assistant", "content": "new answer"}]}) + "\n")
    cfg = DataGeneratorConfig(format_type="alpaca", include_existing_data=True, existing_data_path=str(buffer))
    res = TrainingDataGenerator(db, cfg).generate(tmp_path / "r.jsonl")
    assert res.counts["existing_read"] == 2 and res.dropped["exact_duplicate"] == 1
    assert [r["instruction"] for r in _rows(res.path)] == ["Old question?", "new question"]
    assert res.final_count == 2 and _member_ids(db, res.dataset_id) == []   # the kept copy is the rehearsal one
    with pytest.raises(ValidationError):
        DataGeneratorConfig(include_existing_data=True)
    bad = DataGeneratorConfig(include_existing_data=True, existing_data_path=str(tmp_path / "missing.jsonl"))
    with pytest.raises(DatasetError, match="not a file"):
        TrainingDataGenerator(db, bad).generate(tmp_path / "x.jsonl")


def test_accepts_a_logger_like_object_and_validates_config(db, add, tmp_path, interaction):
    class Logger:
        def __init__(self, db):
            self.db = db
    add("interactions", [interaction("a", "q?", "a.")])
    assert TrainingDataGenerator(Logger(db)).generate(tmp_path / "l.jsonl").final_count == 1
    with pytest.raises(ValidationError):
        TrainingDataGenerator(object())
    for bad in [dict(kind="rlhf"), dict(kind="dpo", format_type="chatml"), dict(min_quality_score=2.0),
                dict(validation_fraction=1.0), dict(max_per_topic=0), dict(dpo_sources=("vibes",)),
                dict(pii_kinds=("ssn",))]:
        with pytest.raises(ValidationError):
            DataGeneratorConfig(**bad)


def test_exports_parquet_hf_and_llamafactory(db, add, tmp_path, interaction):
    add("interactions", [interaction(f"i{n}", f"Question {n}?", f"Answer {n}.") for n in range(5)])
    cfg = DataGeneratorConfig(format_type="messages", export_parquet=True, dataset_name="prod_sft")
    res = TrainingDataGenerator(db, cfg).generate(tmp_path / "e.jsonl")
    from tuneloop.datasets.export import to_hf_dataset
    assert len(to_hf_dataset(res.parquet_path)) == 5 and len(to_hf_dataset(res.path)) == 5
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info["prod_sft"]["file_name"] == "e.jsonl" and info["prod_sft"]["formatting"] == "sharegpt"
    chat = TrainingDataGenerator(db, DataGeneratorConfig()).generate(tmp_path / "c.jsonl")
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert set(info) == {"prod_sft", "c"} and info["c"]["file_name"] == "c.llamafactory.jsonl"
    assert chat.llamafactory_entry == info["c"]
    sib = _rows(tmp_path / "c.llamafactory.jsonl")
    assert sib[0]["messages"][-1]["role"] == "assistant" and len(sib) == 5
