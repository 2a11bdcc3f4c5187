"""LLM-as-judge for the offline evaluation: pointwise scores with a rubric, and pairwise
comparisons against the champion's answer (asked in both orders to cancel position bias).

Any :class:`~tuneloop.models.base.ModelBackend` can judge; calls are batched.

>>> from tuneloop.models.scripted import ScriptedBackend
>>> judge = ScriptedBackend(lambda msgs: "Score: 8")
>>> judge_pointwise(judge, [("2+2?", "4", None, None)])[0].score
0.8
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["JudgeVerdict", "judge_pointwise", "judge_pairwise", "DEFAULT_RUBRIC"]

DEFAULT_RUBRIC = ("The answer is correct, complete, directly addresses the question, "
                  "and follows any format the question asks for.")
_SYSTEM = "You are a strict, impartial grader of AI assistant answers."
_SCORE = re.compile(r"score\s*[:=]?\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_BARE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*\.?\s*$")
_WINNER = re.compile(r"\b(A|B|tie)\b", re.IGNORECASE)
_JUDGE_PARAMS = {"temperature": 0.0, "max_tokens": 64}


@dataclass(frozen=True, slots=True)
class JudgeVerdict:
    """A pointwise verdict: ``score`` in [0, 1] (the 1-10 grade / 10), None when unreadable."""

    score: float | None
    raw: str


def _pointwise_messages(prompt: str, answer: str, reference: str | None, rubric: str | None) -> list[dict]:
    ref = f"\nREFERENCE ANSWER:\n{reference}\n" if reference is not None else ""
    user = (f"QUESTION:\n{prompt}\n{ref}\nANSWER:\n{answer}\n\nRUBRIC: {rubric or DEFAULT_RUBRIC}\n\n"
            "Grade the ANSWER against the RUBRIC. Reply with exactly one line: "
            "\"Score: N\" where N is an integer from 1 (bad) to 10 (perfect).")
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]


def parse_score(reply: str) -> float | None:
    """Read a 1-10 grade from a judge reply; None when there is none or it is out of range."""
    m = _SCORE.search(reply) or _BARE.match(reply)
    if not m:
        return None
    value = float(m.group(1))
    return value / 10 if 0 <= value <= 10 else None


def judge_pointwise(judge: Any, items: Sequence[tuple[str, str, str | None, str | None]]) -> list[JudgeVerdict]:
    """Grade each (prompt, answer, reference, rubric) with one batched call to ``judge``."""
    replies = judge.chat_batch([_pointwise_messages(*it) for it in items], **_JUDGE_PARAMS)
    return [JudgeVerdict(parse_score(r.text), r.text) for r in replies]


def _pairwise_messages(prompt: str, a: str, b: str, rubric: str | None) -> list[dict]:
    user = (f"QUESTION:\n{prompt}\n\nANSWER A:\n{a}\n\nANSWER B:\n{b}\n\n"
            f"CRITERIA: {rubric or DEFAULT_RUBRIC}\n\n"
            "Which answer is better by the CRITERIA? Reply with exactly one word: A, B or tie.")
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]


def parse_winner(reply: str) -> str:
    """'A', 'B' or 'tie' from a judge reply; an unreadable reply counts as a tie (no evidence)."""
    m = _WINNER.search(reply.strip())
    return "tie" if m is None else (m.group(1).upper() if m.group(1).lower() != "tie" else "tie")


def judge_pairwise(judge: Any, items: Sequence[tuple[str, str, str, str | None]]) -> list[float]:
    """Score each (prompt, candidate, champion, rubric): 1 = candidate wins, 0.5 = tie, 0 = loses.

    Each pair is judged twice with the answers swapped and the two points averaged, because
    LLM judges favour whichever answer comes first.
    """
    convs = []
    for prompt, cand, champ, rubric in items:
        convs.append(_pairwise_messages(prompt, cand, champ, rubric))   # candidate is A
        convs.append(_pairwise_messages(prompt, champ, cand, rubric))   # candidate is B
    replies = judge.chat_batch(convs, **_JUDGE_PARAMS)
    points = {"win": 1.0, "tie": 0.5, "loss": 0.0}
    scores = []
    for i in range(len(items)):
        first, second = parse_winner(replies[2 * i].text), parse_winner(replies[2 * i + 1].text)
        p1 = points["win" if first == "A" else "tie" if first == "tie" else "loss"]
        p2 = points["win" if second == "B" else "tie" if second == "tie" else "loss"]
        scores.append((p1 + p2) / 2)
    return scores
