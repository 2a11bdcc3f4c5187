"""LLM-as-judge (RLAIF) for production interactions, through any model backend.

- **pointwise**: a 1-5 grade against a rubric, plus a failure category (hallucination,
  refusal, out of scope, format violation); replies are parsed robustly ("Score: 4",
  "4/5", "**Rating**: 4 out of 5", ``{"score": 4}``, a bare "4").
- **pairwise**: which of two answers is better, asked twice with the answers' positions
  swapped; a verdict that flips with the position is position bias and counts as a tie.
- **ensemble**: heuristic score, judge grade and reward combined into ``quality_score``.

>>> from tuneloop.models.scripted import ScriptedBackend
>>> judge = Judge(ScriptedBackend(lambda msgs: "Score: 4\\nCategory: none"))
>>> judge.pointwise([("2+2?", "4")])[0].score
4
>>> biased = Judge(ScriptedBackend(lambda msgs: "A"))      # always prefers the first answer
>>> biased.pairwise([("2+2?", "4", "5")])[0].winner
'tie'
"""
from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tuneloop.errors import ValidationError
from tuneloop.ids import new_id, now
from tuneloop.signals.heuristics import CATEGORIES, score_row
from tuneloop.store import schema

DEFAULT_RUBRIC = ("5: correct, complete, directly answers and follows any requested format; "
                  "4: correct with minor issues; 3: partly correct or incomplete; "
                  "2: mostly wrong, evasive or badly formatted; 1: wrong, harmful, made up or a refusal.")
_SYSTEM = "You are a strict, impartial grader of AI assistant answers."
_PARAMS = {"temperature": 0.0, "max_tokens": 64}
_NAMESPACE = uuid.UUID("6f1c2a4e-7d0b-4c55-9a3e-51a0c0de0002")

_RATING_PATTERNS = (
    re.compile(r"(?:score|rating|grade)\W{0,6}(?:is|of|:|=)?\W{0,4}([1-5])(?![\d.])", re.I),
    re.compile(r"(?<![\d.])([1-5])\s*(?:/|out of)\s*5\b", re.I),
    re.compile(r"^\W*([1-5])\W*$"),
)
_CATEGORY = re.compile(r"category\W{0,6}(none|ok|" + "|".join(c.replace("_", r"[_ ]") for c in CATEGORIES) + ")",
                       re.I)
_PREFERENCE_PATTERNS = (
    re.compile(r"\[\[(A|B|tie)\]\]", re.I),
    # Keywords in any case, but only a capital A / B: a lone "a" is an article.
    re.compile(r"(?i:winner|verdict|choice|better(?: answer)?|prefer(?:red)?(?: answer)?)\W{0,6}(?i:is\W{0,3})?"
               r"(?i:answer |response )?(A|B|[Tt]ie)\b"),
    re.compile(r"\b(?i:answer|response) (A|B) (?i:is (?:better|preferred))"),
    re.compile(r"^\W*(A|B|tie)\W*$", re.I),
)


def parse_rating(reply: str) -> int | None:
    """The 1-5 grade in a judge reply, or None when there is no unambiguous one.

    >>> [parse_rating(t) for t in ["Score: 4", "I'd say 3/5.", '{"score": 5}', "**Rating**: 2 out of 5", "10/10"]]
    [4, 3, 5, 2, None]
    """
    text = reply.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text[: text.rfind("}") + 1])
            value = obj.get("score", obj.get("rating"))
            if isinstance(value, (int, float)) and 1 <= value <= 5 and float(value).is_integer():
                return int(value)
        except (ValueError, AttributeError):
            pass
    for pattern in _RATING_PATTERNS:
        m = pattern.search(text)
        if m:
            return int(m.group(1))
    return None


def parse_category(reply: str) -> str | None:
    """The failure category in a judge reply ("none" -> None)."""
    m = _CATEGORY.search(reply)
    if not m:
        return None
    value = m.group(1).lower().replace(" ", "_")
    return None if value in ("none", "ok") else value


def parse_preference(reply: str) -> str | None:
    """'A', 'B' or 'tie' from a pairwise reply, None when unreadable.

    >>> [parse_preference(t) for t in ["[[B]]", "Winner: A", "Answer B is better.", "tie", "hmm"]]
    ['B', 'A', 'B', 'tie', None]
    """
    for pattern in _PREFERENCE_PATTERNS:
        m = pattern.search(reply.strip())
        if m:
            v = m.group(1)
            return "tie" if v.lower() == "tie" else v.upper()
    return None


@dataclass(frozen=True, slots=True)
class PointwiseJudgement:
    """A 1-5 ``score`` (None if unreadable), a failure ``category`` and the ``raw`` reply."""

    score: int | None
    category: str | None
    raw: str
    usage: tuple[int, int] = (0, 0)  # (prompt, completion) tokens of the judge call: the loop's cost report sums them

    @property
    def normalized(self) -> float | None:
        """The score mapped to [0, 1]."""
        return None if self.score is None else (self.score - 1) / 4


@dataclass(frozen=True, slots=True)
class PairwiseJudgement:
    """``winner`` a|b|tie, ``p_a`` the share of the two orders in which A won (ties 0.5),
    ``consistent`` whether both orders agreed, and both raw replies."""

    winner: str
    p_a: float
    consistent: bool
    raw: tuple[str, str]
    usage: tuple[int, int] = (0, 0)  # (prompt, completion) tokens of both calls


class Judge:
    """An LLM judge over any :class:`~tuneloop.models.base.ModelBackend` (batched calls)."""

    def __init__(self, backend: Any, *, rubric: str = DEFAULT_RUBRIC, params: Mapping[str, Any] | None = None,
                 name: str | None = None) -> None:
        if not hasattr(backend, "chat_batch"):
            raise ValidationError("the judge needs a model backend with chat_batch()", field="backend")
        self.backend, self.rubric = backend, rubric
        self.params = dict(params or _PARAMS)
        self.name = name or getattr(backend, "name", "judge")

    def _pointwise_messages(self, prompt: str, answer: str) -> list[dict[str, str]]:
        user = (f"QUESTION:\n{prompt}\n\nANSWER:\n{answer}\n\nRUBRIC:\n{self.rubric}\n\n"
                "Grade the ANSWER with the RUBRIC. Reply with two lines:\n"
                "Score: <1-5>\nCategory: <none|hallucination|refusal|out_of_scope|format_violation>")
        return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]

    def _pairwise_messages(self, prompt: str, a: str, b: str) -> list[dict[str, str]]:
        user = (f"QUESTION:\n{prompt}\n\nANSWER A:\n{a}\n\nANSWER B:\n{b}\n\nCRITERIA:\n{self.rubric}\n\n"
                "Which answer is better? Reply with exactly one of: [[A]], [[B]] or [[tie]].")
        return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]

    def pointwise(self, items: Sequence[tuple[str, str]]) -> list[PointwiseJudgement]:
        """Grade each (prompt, answer)."""
        if not items:
            return []
        replies = self.backend.chat_batch([self._pointwise_messages(p, a) for p, a in items], **self.params)
        return [PointwiseJudgement(parse_rating(r.text), parse_category(r.text), r.text, _usage(r)) for r in replies]

    def pairwise(self, items: Sequence[tuple[str, str, str]]) -> list[PairwiseJudgement]:
        """Compare each (prompt, answer a, answer b), in both orders."""
        if not items:
            return []
        convs = []
        for prompt, a, b in items:
            convs.append(self._pairwise_messages(prompt, a, b))
            convs.append(self._pairwise_messages(prompt, b, a))
        replies = self.backend.chat_batch(convs, **self.params)
        out = []
        for i in range(len(items)):
            first, second = replies[2 * i].text, replies[2 * i + 1].text
            verdict = combine_orders(parse_preference(first), parse_preference(second), (first, second))
            u1, u2 = _usage(replies[2 * i]), _usage(replies[2 * i + 1])
            out.append(PairwiseJudgement(verdict.winner, verdict.p_a, verdict.consistent, verdict.raw,
                                         (u1[0] + u2[0], u1[1] + u2[1])))
        return out


def _usage(reply: Any) -> tuple[int, int]:
    return int(getattr(reply, "prompt_tokens", 0) or 0), int(getattr(reply, "completion_tokens", 0) or 0)


def combine_orders(first: str | None, second: str | None, raw: tuple[str, str] = ("", "")) -> PairwiseJudgement:
    """Merge the verdicts of (a, b) and of the swapped (b, a) into one judgement. Pure.

    >>> combine_orders("A", "B").winner, combine_orders("A", "A").winner, combine_orders("A", "A").consistent
    ('a', 'tie', False)
    """
    points_first = {"A": 1.0, "B": 0.0}.get(first or "", 0.5)     # A is answer a
    points_second = {"B": 1.0, "A": 0.0}.get(second or "", 0.5)   # B is answer a once swapped
    p_a = (points_first + points_second) / 2
    consistent = first is not None and second is not None and points_first == points_second
    winner = "a" if p_a > 0.5 else "b" if p_a < 0.5 else "tie"
    return PairwiseJudgement(winner, p_a, consistent, raw)


ENSEMBLE_WEIGHTS = {"heuristic": 0.3, "judge": 0.5, "reward": 0.2}


def ensemble_quality(heuristic: float | None = None, judge: float | None = None, reward: float | None = None,
                     weights: Mapping[str, float] = ENSEMBLE_WEIGHTS) -> float | None:
    """``quality_score`` in [0, 1]: the weighted mean of the signals that exist.

    ``heuristic`` and ``judge`` are in [0, 1]; ``reward`` (unbounded) is squashed by a
    logistic with scale 2, so +-2 (a copy, a regenerate) moves it to 0.73 / 0.27.

    >>> ensemble_quality(heuristic=1.0, judge=0.75)
    0.84375
    >>> ensemble_quality() is None
    True
    """
    parts = {"heuristic": heuristic, "judge": judge,
             "reward": None if reward is None else 1.0 / (1.0 + math.exp(-reward / 2.0))}
    present = {k: v for k, v in parts.items() if v is not None and weights.get(k, 0) > 0}
    if heuristic is not None and heuristic == 0.0:
        return 0.0  # an empty answer is worthless whatever else says
    if not present:
        return None
    total = sum(weights[k] for k in present)
    return round(sum(weights[k] * v for k, v in present.items()) / total, 6)


@dataclass(frozen=True, slots=True)
class ScoreUpdate:
    """What :func:`score_interactions` did, and the watermark for the next call."""

    scored: int
    judged: int
    watermark: float | None


def _pages(db, since: float | None, page: int, only_unscored: bool) -> Iterable[list[dict[str, Any]]]:
    """Keyset pages of chat interactions after ``since`` (each page a closed read, so the
    caller can write between pages without meeting its own read lock)."""
    it = schema.interactions
    last: tuple[float, str] | None = None
    while True:
        stmt = (sa.select(it.c.id, it.c.ts, it.c.query, it.c.response, it.c.meta, it.c.reward, it.c.status)
                .where(it.c.kind == "chat").order_by(it.c.ts, it.c.id).limit(page))
        if since is not None:
            stmt = stmt.where(it.c.ts > since)
        if only_unscored:
            stmt = stmt.where(it.c.quality_score.is_(None))
        if last is not None:
            stmt = stmt.where(sa.or_(it.c.ts > last[0], sa.and_(it.c.ts == last[0], it.c.id > last[1])))
        rows = db.fetch_all(stmt)
        if not rows:
            return
        yield rows
        last = (rows[-1]["ts"], rows[-1]["id"])


def score_interactions(db, judge: Judge | None = None, since: float | None = None, *, overwrite: bool = False,
                       expected_format: Any = None, page: int = 256) -> ScoreUpdate:
    """Score interactions after ``since``: heuristics, the judge when given, the ensemble.

    Writes ``quality_score`` and ``failure_category`` (rows with a client-given score are
    left alone unless ``overwrite``) and the judge's grade as feedback (kind ``rating``,
    source ``judge``, so it enters the reward at the judge's weight).
    """
    it = schema.interactions
    scored = judged = 0
    watermark = since
    for rows in _pages(db, since, page, only_unscored=not overwrite):
        heur = [score_row(r, expected_format) for r in rows]
        verdicts = judge.pointwise([(r["query"] or "", r["response"] or "") for r in rows]) if judge else [None] * len(rows)
        updates, feedback = [], []
        for r, h, v in zip(rows, heur, verdicts):
            j = v.normalized if v is not None else None
            category = h.category or (v.category if v is not None else None)
            updates.append({"b_id": r["id"], "b_q": ensemble_quality(h.score, j, r["reward"]), "b_cat": category})
            if v is not None and v.score is not None:
                feedback.append(_judge_feedback(r["id"], v, judge.name))
        with db.begin() as conn:
            conn.execute(it.update().where(it.c.id == sa.bindparam("b_id"))
                         .values(quality_score=sa.bindparam("b_q"), failure_category=sa.bindparam("b_cat")), updates)
            db.insert_ignore(conn, schema.feedback, feedback)
        scored += len(updates)
        judged += len(feedback)
        watermark = max(watermark or 0.0, rows[-1]["ts"])
    return ScoreUpdate(scored, judged, watermark)


def _judge_feedback(interaction_id: str, v: PointwiseJudgement, judge_name: str) -> dict[str, Any]:
    return {"id": str(uuid.uuid5(_NAMESPACE, f"judge:rating:{judge_name}:{interaction_id}")),
            "interaction_id": interaction_id, "kind": "rating", "value": float(v.score), "text": None,
            "source": "judge", "user_id": None, "ts": now(),
            "meta": {"judge": judge_name, "category": v.category,
                     "usage": {"prompt_tokens": v.usage[0], "completion_tokens": v.usage[1]}}}


def record_preferences(db, judge: Judge, pairs: Sequence[tuple[str | None, str, str, str]]) -> list[PairwiseJudgement]:
    """Judge (interaction_id, prompt, answer a, answer b) pairs and store each verdict as a done
    pairwise annotation by ``judge:<name>`` (the DPO builder's ``judge`` source)."""
    verdicts = judge.pairwise([(p, a, b) for _, p, a, b in pairs])
    rows = []
    for (iid, prompt, a, b), v in zip(pairs, verdicts):
        rows.append({"id": new_id(), "interaction_id": iid, "kind": "pairwise", "prompt": prompt, "response_a": a,
                     "response_b": b, "choice": v.winner if v.winner != "tie" else "equal", "value": v.p_a,
                     "annotator": f"judge:{judge.name}", "status": "done", "reason": "judge",
                     "meta": {"source": "judge", "consistent": v.consistent,
                              "usage": {"prompt_tokens": v.usage[0], "completion_tokens": v.usage[1]}},
                     "created_at": now(), "done_at": now()})
    if rows:
        with db.begin() as conn:
            conn.execute(schema.annotations.insert(), rows)
    return verdicts
