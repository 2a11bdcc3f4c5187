"""Heuristic quality scorers: cheap checks that need no model.

Each check gives a score in [0, 1] (1 = fine); the overall score is the lowest, and the
failure category is that of the lowest check when it fails (score < 0.5).

>>> score_response("Capital of France? One word.", "Paris", expected_format="one_word").score
1.0
>>> r = score_response("Capital of France?", "I'm sorry, but I can't help with that.")
>>> r.category, r.score
('refusal', 0.1)
>>> score_response("List primes", "2, 3, 5, 7, 11, 13, 17", finish_reason="length").category
'truncated'

Categories (seed 000's failure modes plus the mechanical ones): ``empty``, ``truncated``,
``refusal``, ``repetition``, ``format_violation``, ``out_of_scope`` ("I don't know").
``hallucination`` needs a judge (:mod:`tuneloop.signals.judge`).

Expected formats: ``one_word``, ``number``, ``json``, ``yes_no``, ``regex:<pattern>`` (full
match), or a compiled ``re.Pattern``. An interaction can carry its own in
``meta["expected_format"]``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from tuneloop.errors import ValidationError

CATEGORIES = ("empty", "truncated", "refusal", "repetition", "format_violation", "out_of_scope", "hallucination")

_REFUSAL = re.compile(
    r"^\W*(?:i'?m sorry,? but|sorry,? (?:but )?i (?:can(?:no|')t|am unable)|i (?:can(?:no|')t|won'?t|am (?:not able|unable) to)"
    r" (?:help|assist|provide|comply|do that|answer|fulfil)|as an ai(?: language model)?,? i|i must decline"
    r"|i'?m (?:not able|unable) to (?:help|assist|provide|comply))", re.I)
_UNKNOWN = re.compile(r"^\W*(?:i (?:do not|don'?t) know|i'?m not sure|i have no (?:idea|information)"
                      r"|i (?:do not|don'?t) have (?:enough )?information)", re.I)
_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"^[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?%?$")
_TERMINAL = (".", "!", "?", "\"", "'", ")", "]", "}", "`", "*", ":", ";", "\u3002")


@dataclass(frozen=True, slots=True)
class HeuristicResult:
    """Overall ``score`` in [0, 1], the failure ``category`` (None if fine), and each check."""

    score: float
    category: str | None
    checks: dict[str, float] = field(default_factory=dict)


def _truncated(response: str, finish_reason: str | None) -> float:
    if finish_reason == "length":
        return 0.2
    text = response.rstrip()
    if text.count("```") % 2 == 1:
        return 0.3  # an unclosed code fence
    if len(text) > 200 and not text.endswith(_TERMINAL) and not text[-1:].isdigit():
        return 0.6  # long answer stopping mid-sentence: suspicious, not damning
    return 1.0


def _repetition(response: str) -> float:
    words = _WORD.findall(response.lower())
    if len(words) < 12:
        return 1.0
    grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    dup = 1.0 - len(set(grams)) / len(grams)
    lines = [ln.strip() for ln in response.splitlines() if ln.strip()]
    line_dup = 1.0 - len(set(lines)) / len(lines) if len(lines) >= 4 else 0.0
    worst = max(dup, line_dup)
    # Up to 20% repeated 3-grams is normal prose; 60% or more is a loop.
    return float(max(0.0, min(1.0, 1.0 - (worst - 0.2) / 0.4)))


def format_ok(response: str, expected_format: Any) -> bool:
    """True if ``response`` satisfies ``expected_format`` (see the module docstring)."""
    text = response.strip()
    if isinstance(expected_format, re.Pattern):
        return expected_format.fullmatch(text) is not None
    fmt = str(expected_format)
    if fmt == "one_word":
        return len(_WORD.findall(text)) == 1 and len(text.split()) == 1
    if fmt == "number":
        return _NUMBER.match(text.rstrip(".")) is not None
    if fmt == "yes_no":
        return text.lower().rstrip(".!") in ("yes", "no")
    if fmt == "json":
        body = text.removeprefix("```json").removeprefix("```").removesuffix("```").strip()
        try:
            json.loads(body)
        except ValueError:
            return False
        return True
    if fmt.startswith("regex:"):
        return re.fullmatch(fmt[len("regex:"):], text, re.S) is not None
    raise ValidationError(f"unknown expected_format {fmt!r}: use one_word, number, json, yes_no or regex:<pattern>",
                          field="expected_format")


def score_response(query: str, response: str, *, expected_format: Any = None,
                   finish_reason: str | None = None) -> HeuristicResult:
    """Run every heuristic check on one answer. Pure."""
    if not (response or "").strip():
        return HeuristicResult(0.0, "empty", {"empty": 0.0})
    checks = {
        "truncated": _truncated(response, finish_reason),
        "refusal": 0.1 if _REFUSAL.search(response[:200]) else 1.0,
        "out_of_scope": 0.3 if _UNKNOWN.search(response[:120]) else 1.0,
        "repetition": _repetition(response),
    }
    if expected_format is not None:
        checks["format_violation"] = 1.0 if format_ok(response, expected_format) else 0.0
    worst = min(checks, key=lambda k: checks[k])
    score = round(checks[worst], 4)
    return HeuristicResult(score, worst if score < 0.5 else None, checks)


def score_row(row: dict[str, Any], expected_format: Any = None) -> HeuristicResult:
    """Score an interaction row (uses ``meta["expected_format"]`` / ``meta["finish_reason"]``)."""
    meta = row.get("meta") or {}
    fmt = expected_format if expected_format is not None else meta.get("expected_format")
    return score_response(row.get("query") or "", row.get("response") or "", expected_format=fmt,
                          finish_reason=meta.get("finish_reason"))
