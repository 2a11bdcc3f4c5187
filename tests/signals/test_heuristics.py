"""Heuristic scorers: each failure mode, and formats."""
from __future__ import annotations

import re

import pytest

from tuneloop.errors import ValidationError
from tuneloop.signals.heuristics import format_ok, score_response, score_row


@pytest.mark.parametrize("response, kw, category", [
    ("", {}, "empty"),
    ("   \n", {}, "empty"),
    ("Paris is the capital", {"finish_reason": "length"}, "truncated"),
    ("Here is code:\n```python\nprint(1)\n", {}, "truncated"),
    ("I'm sorry, but I can't help with that request.", {}, "refusal"),
    ("As an AI language model, I cannot browse.", {}, "refusal"),
    ("I don't know the answer to that.", {}, "out_of_scope"),
    (" ".join(["the cat sat on the mat"] * 20), {}, "repetition"),
    ("The capital is Paris", {"expected_format": "one_word"}, "format_violation"),
    ("about twelve", {"expected_format": "number"}, "format_violation"),
    ("{not json", {"expected_format": "json"}, "format_violation"),
])
def test_failures_are_categorized(response, kw, category):
    r = score_response("question?", response, **kw)
    assert r.category == category
    assert r.score < 0.5


@pytest.mark.parametrize("response, fmt", [
    ("Paris", "one_word"), ("Paris.", "one_word"), ("42", "number"), ("-3.5", "number"), ("1,234", "number"),
    ('{"a": 1}', "json"), ('```json\n{"a": 1}\n```', "json"), ("Yes", "yes_no"), ("ab-12", "regex:[a-z]+-\\d+"),
    ("ab-12", re.compile(r"[a-z]+-\d+")),
])
def test_good_formats_pass(response, fmt):
    assert format_ok(response, fmt)
    assert score_response("q", response, expected_format=fmt).score == 1.0


def test_a_good_answer_scores_one_and_normal_prose_is_not_repetition():
    text = ("Photosynthesis turns light, water and carbon dioxide into glucose and oxygen. It happens in the "
            "chloroplasts of plant cells, where chlorophyll absorbs mostly red and blue light.")
    r = score_response("What is photosynthesis?", text)
    assert r.score == 1.0 and r.category is None


def test_unknown_format_is_a_clear_error():
    with pytest.raises(ValidationError, match="expected_format"):
        score_response("q", "a", expected_format="haiku")


def test_score_row_reads_meta():
    row = {"query": "one word", "response": "two words", "meta": {"expected_format": "one_word"}}
    assert score_row(row).category == "format_violation"
