"""Exact and near-duplicate detection, LSH parameters, and the golden leak guard (pure)."""
from __future__ import annotations

import random

import numpy as np
import pytest
from datasketch.lsh import _optimal_param

from tuneloop.datasets.dedup import (GoldenGuard, MinHasher, NearDuplicateIndex, exact_key, lsh_params,
                                     near_duplicate_mask, normalize_text)


def test_normalization_and_exact_key():
    assert normalize_text("  Héllo,\tWORLD!! ") == "héllo world"
    assert exact_key("What's up?", "Fine.") == exact_key("whats up", "fine")
    assert exact_key("a", "b") != exact_key("b", "a")


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
def test_lsh_params_match_datasketch(threshold):
    assert lsh_params(threshold, 128) == _optimal_param(threshold, 128, 0.5, 0.5)


def _words(n, rng, vocab=3000):
    return [f"w{rng.randrange(vocab)}" for _ in range(n)]


def _shingles(text, k=3):
    w = MinHasher.words(text)
    return {tuple(w[i:i + k]) for i in range(len(w) - k + 1)}


def test_minhash_estimates_jaccard_without_bias():
    rng = random.Random(0)
    pairs = []
    for _ in range(200):
        a = _words(50, rng)
        b = list(a)
        for _ in range(rng.randrange(0, 15)):
            b[rng.randrange(50)] = f"x{rng.randrange(10**6)}"
        pairs.append((" ".join(a), " ".join(b)))
    mh = MinHasher(num_perm=128)
    est = (mh.signatures([p[0] for p in pairs]) == mh.signatures([p[1] for p in pairs])).mean(axis=1)
    true = np.array([len(_shingles(a) & _shingles(b)) / len(_shingles(a) | _shingles(b)) for a, b in pairs])
    assert abs((est - true).mean()) < 0.01          # unbiased
    assert np.abs(est - true).mean() < 0.05          # ~ sqrt(J(1-J)/128)


def test_signatures_are_deterministic_and_handle_odd_texts():
    texts = ["", "one", "two words", "ünïcödé text with accents é", "tabs\tand\nnewlines here"]
    a, b = MinHasher().signatures(texts), MinHasher().signatures(texts)
    assert a.shape == (5, 128) and (a == b).all()
    assert not (a[1] == a[2]).all()


def test_near_duplicates_found_distinct_rows_kept():
    rng = random.Random(1)
    base = [" ".join(_words(40, rng)) for _ in range(300)]
    dups = []
    for t in base[:100]:
        w = t.split()
        w[rng.randrange(40)] = "changed"   # one word edited: Jaccard of 3-grams ~0.86
        dups.append(" ".join(w))
    mask = near_duplicate_mask(base + dups, threshold=0.7)
    assert not mask[:300].any()                # originals kept (first of each cluster)
    assert mask[300:].mean() >= 0.95            # planted near-duplicates removed


def test_index_accumulates_batches_and_keeps_first_of_component():
    idx = NearDuplicateIndex(threshold=0.8)
    text = " ".join(f"word{i}" for i in range(40))
    idx.add_texts([text, "completely different words that share nothing at all here"])
    idx.add_texts([text + " nu", text])
    assert idx.duplicates().tolist() == [False, False, True, True]


def test_golden_guard_exact_and_near():
    golden = ["What is the capital of France?", "Add 17 and 25 and give only the number."]
    guard = GoldenGuard(golden, threshold=0.8)
    prompts = ["what is the capital of france", "What is the capital of France ?!",
               "Add 17 and 25, and give only the number", "What is the capital of Spain?", "Tell me a joke", ""]
    assert guard.leaks(prompts).tolist() == [True, True, True, False, False, False]
    assert not GoldenGuard([]) and GoldenGuard([]).leaks(["x"]).tolist() == [False]
