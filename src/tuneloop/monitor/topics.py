"""Complaint topics: negative-feedback interactions clustered by embedding, named by top terms.

Seed 001: "repeated complaints by topic -> topic clustering". The texts are the queries of
interactions that got negative feedback; their embeddings are clustered with k-means
(MiniBatchKMeans above 5,000 texts); each cluster is named by the TF-IDF terms that are
most typical of it *compared with the other clusters* (mean TF-IDF inside minus outside),
so words common to every complaint ("please", "help") do not name every topic.

>>> texts = ["refund my order", "refund not received", "login fails", "cannot login"]
>>> emb = [[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]]
>>> sorted(t.terms[0] for t in complaint_topics(texts, emb, n_clusters=2))
['login', 'refund']
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuneloop.errors import ValidationError

__all__ = ["Topic", "complaint_topics"]


@dataclass(frozen=True)
class Topic:
    """One cluster of complaints: size, share, the terms that name it and a few examples."""

    cluster: int
    size: int
    share: float
    terms: tuple[str, ...]
    examples: tuple[str, ...]
    indices: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "size": self.size, "share": self.share, "terms": list(self.terms),
                "examples": list(self.examples)}


def complaint_topics(texts: Sequence[str], embeddings: Any, *, n_clusters: int | None = None,
                     max_clusters: int = 8, top_terms: int = 5, examples: int = 3,
                     seed: int = 0) -> tuple[Topic, ...]:
    """Cluster ``texts`` by ``embeddings`` (n, d); topics sorted by size, largest first.

    ``n_clusters=None`` picks k in 2..``max_clusters`` by silhouette score (on at most 2,000
    points). Fewer than 2 texts make one topic.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(texts):
        raise ValidationError(f"need one embedding row per text: {len(texts)} texts, embeddings shape {x.shape}",
                              field="embeddings")
    if len(texts) == 0:
        return ()
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # cosine geometry
    labels = _cluster(x, n_clusters, max_clusters, seed)
    names = _top_terms(texts, labels, top_terms)
    topics = []
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        # examples nearest the cluster centre are the most typical complaints
        centre = x[idx].mean(axis=0)
        order = idx[np.argsort(-(x[idx] @ centre))]
        topics.append(Topic(int(k), len(idx), len(idx) / len(texts), names.get(int(k), ()),
                            tuple(texts[i] for i in order[:examples]), tuple(int(i) for i in idx)))
    topics.sort(key=lambda t: (-t.size, t.cluster))
    return tuple(topics)


def _cluster(x: np.ndarray, n_clusters: int | None, max_clusters: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.metrics import silhouette_score

    n = len(x)
    if n < 2:
        return np.zeros(n, dtype=np.int64)

    def fit(k: int) -> np.ndarray:
        model = (MiniBatchKMeans(k, random_state=seed, n_init=3) if n > 5000
                 else KMeans(k, random_state=seed, n_init=4))
        return model.fit_predict(x)

    if n_clusters is not None:
        if n_clusters < 1:
            raise ValidationError("n_clusters must be at least 1", field="n_clusters")
        return fit(min(n_clusters, n))
    best, best_score = np.zeros(n, dtype=np.int64), -1.0
    for k in range(2, min(max_clusters, n - 1) + 1):
        labels = fit(k)
        if len(np.unique(labels)) < 2:
            continue
        score = silhouette_score(x, labels, sample_size=min(n, 2000), random_state=seed)
        if score > best_score:
            best, best_score = labels, score
    return best


def _top_terms(texts: Sequence[str], labels: np.ndarray, k: int) -> dict[int, tuple[str, ...]]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        vec = TfidfVectorizer(stop_words="english", ngram_range=(1, 2), min_df=1, max_features=20_000,
                              sublinear_tf=True)
        tfidf = vec.fit_transform(texts)
    except ValueError:  # only stop words or empty texts
        return {}
    vocab = np.asarray(vec.get_feature_names_out())
    out = {}
    for c in np.unique(labels):
        inside = labels == c
        mean_in = np.asarray(tfidf[inside].mean(axis=0)).ravel()
        mean_out = np.asarray(tfidf[~inside].mean(axis=0)).ravel() if (~inside).any() else 0.0
        score = mean_in - mean_out
        order = [j for j in np.argsort(-score) if mean_in[j] > 0][:k]
        out[int(c)] = tuple(str(vocab[j]) for j in order)
    return out
