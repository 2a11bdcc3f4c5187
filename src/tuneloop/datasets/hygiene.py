"""Hygiene transforms on samples: PII scrubbing, topic clusters for balancing, the split.

All pure (no database): they take samples or texts and return new values.

>>> from tuneloop.datasets.formats import Sample
>>> s, counts = scrub_sample(Sample(prompt=[{"role": "user", "content": "I am bob@x.io"}], completion="hi"))
>>> s.prompt[0]["content"], counts
('I am [EMAIL]', {'email': 1})
>>> in_validation(12345, 0.0), in_validation(12345, 1.0)
(False, True)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from tuneloop.datasets.dedup import _normalize_for_words, _word_hashes
from tuneloop.datasets.formats import Sample
from tuneloop.privacy.pii import Scrubber, merge_counts

_DEFAULT_SCRUBBER = Scrubber()


def scrub_sample(sample: Sample, scrubber: Scrubber = _DEFAULT_SCRUBBER) -> tuple[Sample, dict[str, int]]:
    """The sample with PII replaced in every message and answer, and counts per kind."""
    counts: dict[str, int] = {}
    prompt = []
    for m in sample.prompt:
        r = scrubber.scrub(m.get("content") or "")
        if r.counts:
            merge_counts(counts, r.counts)
            m = {**m, "content": r.text}
        prompt.append(m)
    comp = scrubber.scrub(sample.completion)
    rej = scrubber.scrub(sample.rejected) if sample.rejected else None
    merge_counts(counts, comp.counts)
    if rej is not None:
        merge_counts(counts, rej.counts)
    if not counts:
        return sample, counts
    return replace(sample, prompt=prompt, completion=comp.text,
                   rejected=rej.text if rej is not None else sample.rejected), counts


def in_validation(key: int, fraction: float) -> bool:
    """Deterministic split: a sample goes to validation when its key's hash bucket is below
    ``fraction``. Keyed on the prompt, so one prompt never lands on both sides."""
    if fraction <= 0.0:
        return False
    if fraction >= 1.0:
        return True
    x = (key * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    return (x >> 11) / float(1 << 53) < fraction


def hashed_features(texts: Sequence[str], dims: int = 1024) -> np.ndarray:
    """L2-normalized hashed bag-of-words vectors (float32, (n, dims))."""
    wh, counts = _word_hashes([_normalize_for_words(t).replace("\0", " ") for t in texts])
    rows = np.repeat(np.arange(len(texts)), counts)
    out = np.zeros((len(texts), dims), dtype=np.float32)
    if len(wh):
        np.add.at(out, (rows, (wh % np.uint64(dims)).astype(np.int64)), 1.0)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


class TopicClusters:
    """Cheap topic clusters: spherical k-means on hashed bag-of-words vectors.

    Fit on a sample of prompts, then :meth:`assign` any batch. Deterministic for a seed.

    >>> tc = TopicClusters(k=2, seed=0).fit(["add 2 and 3", "add 5 and 7", "capital of france", "capital of spain"])
    >>> a = tc.assign(["add 1 and 1", "capital of italy"]); bool(a[0] != a[1])
    True
    """

    def __init__(self, k: int = 16, *, dims: int = 1024, iters: int = 20, restarts: int = 4, seed: int = 0) -> None:
        self.k, self.dims, self.iters, self.restarts, self.seed = k, dims, iters, restarts, seed
        self.centroids: np.ndarray | None = None

    def fit(self, texts: Sequence[str]) -> "TopicClusters":
        x = hashed_features(texts, self.dims)
        k = max(1, min(self.k, len(texts)))
        rng = np.random.default_rng(self.seed)
        # A few k-means++ restarts, keep the tightest: one unlucky seeding can put two
        # centroids in one topic and merge two others for good.
        best, best_fit = None, -np.inf
        for _ in range(self.restarts):
            c = self._lloyd(x, self._seed_centroids(x, k, rng))
            fit = float(np.max(x @ c.T, axis=1).sum())
            if fit > best_fit:
                best, best_fit = c, fit
        self.centroids = best
        return self

    @staticmethod
    def _seed_centroids(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        centroids = [x[rng.integers(len(x))]]
        for _ in range(1, k):
            d = np.clip(1.0 - np.max(x @ np.stack(centroids).T, axis=1), 0.0, None) ** 2
            p = d / d.sum() if d.sum() > 0 else None
            centroids.append(x[rng.choice(len(x), p=p)])
        return np.stack(centroids)

    def _lloyd(self, x: np.ndarray, c: np.ndarray) -> np.ndarray:
        for _ in range(self.iters):
            labels = np.argmax(x @ c.T, axis=1)
            new = np.zeros_like(c)
            np.add.at(new, labels, x)
            norms = np.linalg.norm(new, axis=1, keepdims=True)
            empty = norms[:, 0] == 0
            new[~empty] /= norms[~empty]
            new[empty] = c[empty]
            if np.allclose(new, c):
                break
            c = new
        return c

    def assign(self, texts: Sequence[str]) -> np.ndarray:
        if self.centroids is None:
            raise RuntimeError("TopicClusters.assign before fit")
        return np.argmax(hashed_features(texts, self.dims) @ self.centroids.T, axis=1)
