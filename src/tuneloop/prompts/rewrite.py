"""Ask a model to rewrite the champion's system prompt, given the period's failure cases.

Any :class:`~tuneloop.models.base.ModelBackend` can rewrite: an OpenAI-compatible model, the
local model, or the scripted backend in tests. The rewriter sees the current system prompt,
the failure categories with their counts, and up to ``max_cases`` failed exchanges (question,
answer, users' comments). It answers with the new system prompt between ``<prompt>`` tags;
the template, few-shot turns and sampling of the champion's prompt are kept.

>>> from tuneloop.models.scripted import ScriptedBackend
>>> b = ScriptedBackend(lambda msgs: "Better: <prompt>Answer with the number only.</prompt>")
>>> rewrite_prompt(b, PromptSpec(system="Be nice."), []).system
'Answer with the number only.'
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from tuneloop.errors import TrainingError, ValidationError
from tuneloop.prompts.failures import FailureCase, summarize
from tuneloop.prompts.spec import PromptSpec

__all__ = ["rewrite_prompt", "rewrite_messages", "parse_rewrite"]

_SYSTEM = ("You improve the system prompts of AI assistants. You are shown an assistant's current system "
           "prompt and conversations where its users were unhappy. Write a better system prompt that would "
           "have avoided these failures without breaking what works. Keep it short and general: never "
           "copy a user's question or personal data into it.")
_TAG = re.compile(r"<prompt>(.*?)</prompt>", re.S | re.I)
_PARAMS = {"temperature": 0.0, "max_tokens": 400}


def rewrite_messages(current: PromptSpec | None, failures: Sequence[FailureCase], *, max_cases: int = 12,
                     instructions: str | None = None) -> list[dict[str, str]]:
    """The conversation sent to the rewriting model."""
    summary = summarize(failures)
    cats = ", ".join(f"{k} ({v})" for k, v in summary["categories"].items()) or "none recorded"
    lines = [f"CURRENT SYSTEM PROMPT:\n{(current.system if current and current.system else '(none)')}", "",
             f"FAILURE CATEGORIES: {cats}", "", "FAILED CONVERSATIONS:"]
    for i, c in enumerate(failures[:max_cases], 1):
        why = [f"category {c.category}"] if c.category else []
        if c.reward is not None and c.reward < 0:
            why.append(f"reward {c.reward:+.1f}")
        lines.append(f"{i}. USER: {c.query[:400]}\n   ASSISTANT: {c.response[:400]}\n   WHY IT FAILED: "
                     f"{', '.join(why) or 'low quality score'}")
        for text in c.comments[:2]:
            lines.append(f"   USER COMMENT: {text[:300]}")
    if not failures:
        lines.append("(none recorded this period)")
    if instructions:
        lines += ["", f"OWNER'S GUIDANCE: {instructions}"]
    lines += ["", "Reply with the new system prompt only, between <prompt> and </prompt>."]
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def parse_rewrite(reply: str) -> str | None:
    """The new system prompt from the rewriter's reply (inside ``<prompt>`` tags), or None.

    >>> parse_rewrite("Sure! <prompt> Be brief. </prompt>"), parse_rewrite("no tags here")
    ('Be brief.', None)
    """
    m = _TAG.search(reply or "")
    text = m.group(1).strip() if m else ""
    return text or None


def rewrite_prompt(backend: Any, current: PromptSpec | None, failures: Sequence[FailureCase], *,
                   params: Mapping[str, Any] | None = None, max_cases: int = 12,
                   instructions: str | None = None) -> PromptSpec:
    """A new prompt: the champion's, with the system prompt the model wrote.

    Raises :class:`~tuneloop.errors.TrainingError` when the reply holds no usable prompt or
    repeats the current one (nothing to test).
    """
    messages = rewrite_messages(current, failures, max_cases=max_cases, instructions=instructions)
    reply = backend.chat(messages, **{**_PARAMS, **dict(params or {})}).text
    system = parse_rewrite(reply)
    if system is None:
        raise TrainingError("the prompt rewriter's reply holds no <prompt>...</prompt>: "
                            f"{(reply or '').strip()[:200]!r}")
    base = current or PromptSpec()
    if system == (base.system or "").strip():
        raise TrainingError("the prompt rewriter returned the current system prompt unchanged")
    try:
        return base.replace(system=system, name=None, notes=f"rewritten from {len(failures)} failure cases")
    except ValidationError as exc:
        raise TrainingError(f"the prompt rewriter's prompt is invalid: {exc.message}") from exc
