"""``PromptSpec``: what a model version is told around every request, validated in one place.

A prompt version is a model version whose ``prompt`` column holds a spec: the same base
model and adapter as its parent, a different system prompt, template, few-shot examples or
sampling parameters. Serving applies it before generation, whatever the backend (local,
openai, scripted), and the offline gate and the online A/B test see exactly what users get.

>>> spec = PromptSpec(system="Answer with the number only.", template="Question: {input}",
...                   few_shot=({"user": "1+1=", "assistant": "2"},), sampling={"temperature": 0.2})
>>> [m["content"] for m in spec.apply([{"role": "user", "content": "2+2="}])]
['Answer with the number only.', '1+1=', '2', 'Question: 2+2=']
>>> PromptSpec.from_value("Be brief.").system
'Be brief.'

Fields (all optional; an empty spec changes nothing):

    system     the system prompt; a caller's own system message is appended after it
    template   the last user message; ``{input}`` stands for what the user wrote (``{query}``
               is accepted too). Other braces are left alone, so JSON examples are safe
    few_shot   example turns before the conversation: ``{"user": .., "assistant": ..}`` pairs
               or ``{"role": .., "content": ..}`` messages
    sampling   default sampling parameters (temperature, top_p, top_k, max_tokens, stop,
               seed, repetition_penalty); a request's own parameters win
    name       a short human label ("number-only"), shown by ``registry list``
    notes      why this prompt exists (a rewriter's rationale, a ticket)
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tuneloop.errors import ValidationError

__all__ = ["PromptSpec", "SAMPLING_KEYS", "INPUT_PLACEHOLDERS", "apply_to_example"]

SAMPLING_KEYS = ("temperature", "top_p", "top_k", "max_tokens", "max_new_tokens", "seed", "stop",
                 "repetition_penalty")
INPUT_PLACEHOLDERS = ("{input}", "{query}")
_ROLES = ("system", "user", "assistant")
_FIELDS = ("system", "template", "few_shot", "sampling", "name", "notes")
_MAX_TEXT = 32_000  # characters per text field: a prompt, not a document


@dataclass(frozen=True)
class PromptSpec:
    """A validated prompt: system prompt, template, few-shot turns and sampling defaults."""

    system: str | None = field(default=None, metadata={"help": "system prompt put before every conversation"})
    template: str | None = field(default=None, metadata={"help": "last user message; {input} is what the user wrote"})
    few_shot: tuple[dict[str, str], ...] = field(default=(), metadata={"help": "example turns before the conversation"})
    sampling: dict[str, Any] = field(default_factory=dict, metadata={"help": "default sampling parameters"})
    name: str | None = field(default=None, metadata={"help": "short human label"})
    notes: str | None = field(default=None, metadata={"help": "why this prompt exists"})

    def __post_init__(self) -> None:
        for key in ("system", "template", "name", "notes"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise ValidationError(f"prompt {key} must be text, not {type(value).__name__}", field=f"prompt.{key}")
            if value is not None and len(value) > _MAX_TEXT:
                raise ValidationError(f"prompt {key} is {len(value)} characters; the limit is {_MAX_TEXT}",
                                      field=f"prompt.{key}")
        if self.template is not None and not any(p in self.template for p in INPUT_PLACEHOLDERS):
            raise ValidationError("prompt template must contain {input} (where the user's message goes), "
                                  f"got {self.template[:80]!r}", field="prompt.template")
        object.__setattr__(self, "few_shot", tuple(_shot(s, i) for i, s in enumerate(self.few_shot or ())))
        object.__setattr__(self, "sampling", _sampling(self.sampling or {}))

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_value(cls, value: "PromptSpec | Mapping[str, Any] | str | None") -> "PromptSpec | None":
        """A spec from what a version's ``prompt`` column or a YAML entry holds (None stays None).

        >>> PromptSpec.from_value({"system": "Be brief.", "sampling": {"temperature": 0}}).sampling
        {'temperature': 0}
        """
        if value is None or isinstance(value, PromptSpec):
            return value
        if isinstance(value, str):
            return cls(system=value) if value.strip() else None
        if not isinstance(value, Mapping):
            raise ValidationError(f"a prompt is a text or a mapping of {', '.join(_FIELDS)}, "
                                  f"not {type(value).__name__}", field="prompt")
        unknown = sorted(set(value) - set(_FIELDS))
        if unknown:
            raise ValidationError(f"unknown prompt field(s) {unknown}; a prompt has {', '.join(_FIELDS)}",
                                  field="prompt")
        few_shot = value.get("few_shot") or ()
        if not isinstance(few_shot, Sequence) or isinstance(few_shot, str):
            raise ValidationError("prompt few_shot must be a list of example turns", field="prompt.few_shot")
        sampling = value.get("sampling") or {}
        if not isinstance(sampling, Mapping):
            raise ValidationError("prompt sampling must be a mapping such as {temperature: 0.2}", field="prompt.sampling")
        return cls(system=value.get("system"), template=value.get("template"), few_shot=tuple(few_shot),
                   sampling=dict(sampling), name=value.get("name"), notes=value.get("notes"))

    def replace(self, **changes: Any) -> "PromptSpec":
        """A copy with ``changes`` (validated again)."""
        return PromptSpec.from_value({**self.to_dict(), **changes})  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """The JSON stored in ``model_versions.prompt`` (empty fields left out)."""
        out: dict[str, Any] = {}
        for key in _FIELDS:
            value = getattr(self, key)
            if value not in (None, (), {}):
                out[key] = [dict(s) for s in value] if key == "few_shot" else dict(value) if key == "sampling" else value
        return out

    @property
    def is_empty(self) -> bool:
        return not (self.system or self.template or self.few_shot or self.sampling)

    def fingerprint(self) -> str:
        """A hash of what changes answers (not ``name``/``notes``): equal prompts, equal prints."""
        behaviour = {k: v for k, v in self.to_dict().items() if k not in ("name", "notes")}
        return hashlib.sha256(json.dumps(behaviour, sort_keys=True).encode()).hexdigest()[:16]

    def label(self, width: int = 48) -> str:
        """``name``, else the start of the system prompt, for tables."""
        text = self.name or (self.system or self.template or "").replace("\n", " ")
        return text if len(text) <= width else text[: width - 1] + "…"

    # -- application ------------------------------------------------------------------------
    def apply(self, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The conversation a model sees: system prompt, few-shot turns, then the caller's turns
        with the template filled in. The caller's list is not modified.

        >>> PromptSpec(system="S").apply([{"role": "system", "content": "Mine."}, {"role": "user", "content": "hi"}])
        [{'role': 'system', 'content': 'S\\n\\nMine.'}, {'role': 'user', 'content': 'hi'}]
        """
        msgs = [dict(m) for m in messages]
        if self.template:
            for m in reversed(msgs):
                if m.get("role") == "user":
                    text = str(m.get("content") or "")
                    # str.replace, not str.format: braces in templates (JSON examples) stay literal
                    m["content"] = self.template.replace("{input}", text).replace("{query}", text)
                    break
        shots = [turn for shot in self.few_shot for turn in _expand(shot)]
        system = self.system
        if msgs and msgs[0].get("role") == "system":
            own = str(msgs.pop(0).get("content") or "")
            # Many chat templates take one system message only: merge the version's and the caller's.
            system = f"{system}\n\n{own}" if system else own
        head = [{"role": "system", "content": system}] if system else []
        return head + shots + msgs


def apply_to_example(row: Mapping[str, Any], spec: PromptSpec | None) -> dict[str, Any]:
    """A training row as the model will see it when served with ``spec`` (train as you serve).

    ``messages`` rows get the spec applied to the turns before the final assistant answer(s);
    ``prompt`` rows whose prompt is a list of messages get it applied to that list; plain-text
    rows are left as they are.

    >>> apply_to_example({"messages": [{"role": "user", "content": "1+1="}, {"role": "assistant", "content": "2"}]},
    ...                  PromptSpec(system="Number only."))["messages"][0]
    {'role': 'system', 'content': 'Number only.'}
    """
    out = dict(row)
    if spec is None or spec.is_empty:
        return out
    msgs = row.get("messages")
    if isinstance(msgs, list) and msgs:
        cut = len(msgs)
        while cut > 0 and msgs[cut - 1].get("role") == "assistant":
            cut -= 1
        out["messages"] = spec.apply(msgs[:cut]) + [dict(m) for m in msgs[cut:]]
    elif isinstance(row.get("prompt"), list):
        out["prompt"] = spec.apply(row["prompt"])
    return out


def _expand(shot: Mapping[str, str]) -> list[dict[str, str]]:
    if "role" in shot:
        return [{"role": shot["role"], "content": shot["content"]}]
    return [{"role": "user", "content": shot["user"]}, {"role": "assistant", "content": shot["assistant"]}]


def _shot(shot: Any, i: int) -> dict[str, str]:
    """One validated few-shot entry, kept in the form it was given (a pair or a message)."""
    if not isinstance(shot, Mapping):
        raise ValidationError(f"few_shot[{i}] must be a mapping, not {type(shot).__name__}", field="prompt.few_shot")
    if "role" in shot:
        if shot["role"] not in _ROLES or not isinstance(shot.get("content"), str):
            raise ValidationError(f"few_shot[{i}] needs a role ({', '.join(_ROLES)}) and a text content",
                                  field="prompt.few_shot")
        return {"role": shot["role"], "content": shot["content"]}
    if set(shot) != {"user", "assistant"} or not all(isinstance(v, str) for v in shot.values()):
        raise ValidationError(f"few_shot[{i}] must be {{user: .., assistant: ..}} or {{role: .., content: ..}}, "
                              f"got keys {sorted(shot)}", field="prompt.few_shot")
    return {"user": shot["user"], "assistant": shot["assistant"]}


def _sampling(params: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - set(SAMPLING_KEYS))
    if unknown:
        raise ValidationError(f"unknown sampling parameter(s) {unknown}; use {', '.join(SAMPLING_KEYS)}",
                              field="prompt.sampling")
    out = dict(params)
    checks = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "repetition_penalty": (0.0, 10.0)}
    for key, (lo, hi) in checks.items():
        v = out.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi):
            raise ValidationError(f"sampling {key} must be a number within [{lo}, {hi}], got {v!r}",
                                  field=f"prompt.sampling.{key}")
    for key in ("top_k", "max_tokens", "max_new_tokens", "seed"):
        v = out.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "seed" else 1)):
            raise ValidationError(f"sampling {key} must be a positive whole number, got {v!r}",
                                  field=f"prompt.sampling.{key}")
    stop = out.get("stop")
    if stop is not None and not (isinstance(stop, str) or
                                 (isinstance(stop, list) and all(isinstance(s, str) for s in stop))):
        raise ValidationError("sampling stop must be a text or a list of texts", field="prompt.sampling.stop")
    return out
