"""Complaint topics: planted themes come back as clusters named by their words."""
from __future__ import annotations

import random

import numpy as np
import pytest

from tuneloop.errors import ValidationError
from tuneloop.monitor.topics import complaint_topics

THEMES = {
    "refund": ["refund for order {x} never arrived", "where is my refund for {x}", "refund still pending {x}"],
    "password": ["password reset email missing {x}", "cannot reset password {x}", "password rejected again {x}"],
    "crash": ["app crash when opening {x}", "crash on startup {x}", "the app keeps crashing after {x}"],
}
FILLER = ["today", "yesterday", "again", "please", "urgent", "now", "still", "help"]


def complaints(n_per_theme: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for theme, templates in THEMES.items():
        for _ in range(n_per_theme):
            texts.append(rng.choice(templates).format(x=" ".join(rng.sample(FILLER, 2))))
            labels.append(theme)
    return texts, labels


def test_planted_themes_become_topics_named_by_their_words(embedder):
    texts, labels = complaints(40)
    topics = complaint_topics(texts, embedder.encode(texts), n_clusters=3)
    assert sorted(t.size for t in topics) == [40, 40, 40]
    for t in topics:
        members = {labels[i] for i in t.indices}
        assert len(members) == 1, t            # each topic is one theme ...
        theme = members.pop()
        assert t.terms[0].startswith(theme[:5]), (theme, t.terms)   # ... named by its word
        assert not set(t.terms) & {"please", "help"}   # words shared by all complaints name no topic
        assert len(t.examples) == 3 and all(theme[:5] in e for e in t.examples)


def test_automatic_cluster_count_keeps_themes_apart(embedder):
    texts, labels = complaints(40)
    topics = complaint_topics(texts, embedder.encode(texts), max_clusters=6)
    assert 3 <= len(topics) <= 6
    assert all(len({labels[i] for i in t.indices}) == 1 for t in topics)   # silhouette never merges themes
    assert sum(t.size for t in topics) == len(texts)
    assert [t.size for t in topics] == sorted((t.size for t in topics), reverse=True)


def test_fixed_cluster_count_and_small_inputs(embedder):
    texts, _ = complaints(5)
    assert len(complaint_topics(texts, embedder.encode(texts), n_clusters=3)) == 3
    one = complaint_topics(["only one"], embedder.encode(["only one"]))
    assert len(one) == 1 and one[0].size == 1
    assert complaint_topics([], np.zeros((0, 4))) == ()
    with pytest.raises(ValidationError, match="one embedding row per text"):
        complaint_topics(["a", "b"], np.zeros((3, 4)))
