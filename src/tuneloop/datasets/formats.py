"""Dataset row formats: one canonical :class:`Sample`, rendered to the format a trainer reads.

| kind | format | row | loads in |
|---|---|---|---|
| sft | ``chatml`` (default) | ``{"text": "<|im_start|>user\\n...<|im_end|>\\n..."}`` | TRL SFTTrainer (language modeling) |
| sft | ``messages`` | ``{"messages": [{"role", "content"}, ...]}`` | TRL SFTTrainer (conversational), LLaMA-Factory (openai) |
| sft | ``alpaca`` | ``{"instruction", "input", "output", "system", "history"}`` | LLaMA-Factory (alpaca) |
| sft | ``completion`` | ``{"prompt": str, "completion": str}`` | TRL SFTTrainer (prompt-completion), LLaMA-Factory |
| dpo | ``messages`` (default) | ``{"prompt": [msgs], "chosen": [msg], "rejected": [msg]}`` | TRL DPOTrainer (conversational) |
| dpo | ``standard`` | ``{"prompt": str, "chosen": str, "rejected": str}`` | TRL DPOTrainer, LLaMA-Factory (alpaca ranking) |
| dpo | ``alpaca`` | ``{"instruction", "input", "chosen", "rejected"}`` | LLaMA-Factory |
| dpo | ``sharegpt`` | ``{"conversations": [{"from","value"}], "chosen": {..}, "rejected": {..}}`` | LLaMA-Factory (seed 003) |
| kto | ``messages`` (default) | ``{"prompt": [msgs], "completion": [msg], "label": bool}`` | TRL KTOTrainer (conversational) |
| kto | ``standard`` | ``{"prompt": str, "completion": str, "label": bool}`` | TRL KTOTrainer, LLaMA-Factory (kto_tag) |
| kto | ``alpaca`` | ``{"instruction", "input", "output", "kto_tag": bool}`` | LLaMA-Factory |
| triplets | ``triplets`` | ``{"query", "positive", "negative"}`` | sentence-transformers (anchor, positive, negative) |
| reranker | ``reranker`` | ``{"query", "doc", "score"}`` | cross-encoder training |

>>> s = Sample(prompt=[{"role": "user", "content": "2+2?"}], completion="4")
>>> render(s, "sft", "completion")
{'prompt': '2+2?', 'completion': '4'}
>>> parse(render(s, "sft", "messages"), "sft").completion
'4'
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tuneloop.errors import DatasetError, ValidationError

KINDS = ("sft", "dpo", "kto", "triplets", "reranker")
FORMATS: dict[str, tuple[str, ...]] = {
    "sft": ("chatml", "messages", "alpaca", "completion"),
    "dpo": ("messages", "standard", "alpaca", "sharegpt"),
    "kto": ("messages", "standard", "alpaca"),
    "triplets": ("triplets",),
    "reranker": ("reranker",),
}
DEFAULT_FORMAT = {k: v[0] for k, v in FORMATS.items()}

Message = dict[str, str]
_CHATML = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>\n?", re.S)


@dataclass(slots=True)
class Sample:
    """One training example before formatting.

    ``prompt`` is the conversation before the answer (its last message is the user's);
    ``completion`` the answer (SFT), the chosen answer (DPO), the judged answer (KTO), the
    positive document (triplets) or the document (reranker); ``rejected`` the rejected
    answer (DPO) or the negative document (triplets); ``label`` the desirable flag (KTO) or
    the relevance score (reranker); ``members`` the (interaction id, role) lineage.
    """

    prompt: list[Message]
    completion: str = ""
    rejected: str = ""
    label: Any = None
    members: list[tuple[str, str]] = field(default_factory=list)
    source: str = "interactions"

    @property
    def query(self) -> str:
        """The last user message: what the leak guard and topic balancing look at."""
        for m in reversed(self.prompt):
            if m.get("role") == "user":
                return m.get("content") or ""
        return ""

    def texts(self) -> list[str]:
        return [m.get("content") or "" for m in self.prompt] + [self.completion, self.rejected]


def check_format(kind: str, fmt: str | None) -> str:
    """Validate ``kind``/``fmt`` and resolve ``None`` to the kind's default format."""
    if kind not in FORMATS:
        raise ValidationError(f"unknown dataset kind {kind!r}; choose one of {list(KINDS)}", field="kind")
    fmt = fmt or DEFAULT_FORMAT[kind]
    if fmt not in FORMATS[kind]:
        raise ValidationError(f"format {fmt!r} does not exist for kind {kind!r}; choose one of {list(FORMATS[kind])}",
                              field="format_type")
    return fmt


def chatml(messages: list[Message]) -> str:
    """Render messages in ChatML markup.

    >>> chatml([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    '<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\nhello<|im_end|>\\n'
    """
    return "".join(f"<|im_start|>{m['role']}\n{m.get('content') or ''}<|im_end|>\n" for m in messages)


def prompt_text(prompt: list[Message]) -> str:
    """A single-string prompt: the user message alone, or the turns with role prefixes."""
    if len(prompt) == 1 and prompt[0].get("role") == "user":
        return prompt[0].get("content") or ""
    return "\n\n".join(f"{m['role'].capitalize()}: {m.get('content') or ''}" for m in prompt)


def _alpaca_parts(prompt: list[Message]) -> dict[str, Any]:
    system = "\n".join(m.get("content") or "" for m in prompt if m.get("role") == "system")
    turns = [m for m in prompt if m.get("role") in ("user", "assistant")]
    history, pending = [], None
    for m in turns[:-1]:
        if m["role"] == "user":
            pending = m.get("content") or ""
        elif pending is not None:
            history.append([pending, m.get("content") or ""])
            pending = None
    last = turns[-1].get("content") or "" if turns else ""
    return {"instruction": last, "input": "", "system": system, "history": history}


def _assistant(text: str) -> list[Message]:
    return [{"role": "assistant", "content": text}]


def render(sample: Sample, kind: str, fmt: str | None = None) -> dict[str, Any]:
    """The output row of ``sample`` for ``kind`` in format ``fmt``."""
    fmt = check_format(kind, fmt)
    p = sample.prompt
    if kind == "sft":
        if fmt == "chatml":
            return {"text": chatml(p + _assistant(sample.completion))}
        if fmt == "messages":
            return {"messages": p + _assistant(sample.completion)}
        if fmt == "alpaca":
            return {**_alpaca_parts(p), "output": sample.completion}
        return {"prompt": prompt_text(p), "completion": sample.completion}
    if kind == "dpo":
        if fmt == "messages":
            return {"prompt": p, "chosen": _assistant(sample.completion), "rejected": _assistant(sample.rejected)}
        if fmt == "standard":
            return {"prompt": prompt_text(p), "chosen": sample.completion, "rejected": sample.rejected}
        if fmt == "alpaca":
            parts = _alpaca_parts(p)
            return {"instruction": parts["instruction"], "input": "", "system": parts["system"],
                    "history": parts["history"], "chosen": sample.completion, "rejected": sample.rejected}
        conv = [{"from": {"user": "human", "assistant": "gpt"}.get(m["role"], m["role"]), "value": m.get("content") or ""}
                for m in p]
        return {"conversations": conv, "chosen": {"from": "gpt", "value": sample.completion},
                "rejected": {"from": "gpt", "value": sample.rejected}}
    if kind == "kto":
        label = bool(sample.label)
        if fmt == "messages":
            return {"prompt": p, "completion": _assistant(sample.completion), "label": label}
        if fmt == "standard":
            return {"prompt": prompt_text(p), "completion": sample.completion, "label": label}
        parts = _alpaca_parts(p)
        return {"instruction": parts["instruction"], "input": "", "system": parts["system"],
                "history": parts["history"], "output": sample.completion, "kto_tag": label}
    if kind == "triplets":
        return {"query": sample.query, "positive": sample.completion, "negative": sample.rejected}
    return {"query": sample.query, "doc": sample.completion, "score": float(sample.label)}


def _user(text: str) -> list[Message]:
    return [{"role": "user", "content": text}]


def _msgs(value: Any) -> list[Message]:
    if isinstance(value, str):
        return _user(value)
    return [{"role": m["role"], "content": m.get("content") or ""} for m in value]


def _last_content(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return value.get("content") or value.get("value") or ""
    return (value[-1].get("content") or "") if value else ""


def _from_alpaca(row: Mapping[str, Any]) -> list[Message]:
    prompt: list[Message] = []
    if row.get("system"):
        prompt.append({"role": "system", "content": row["system"]})
    for q, a in row.get("history") or []:
        prompt += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    text = "\n".join(x for x in (row.get("instruction"), row.get("input")) if x)
    return prompt + _user(text)


def parse(row: Mapping[str, Any], kind: str) -> Sample:
    """Read a row of any format of ``kind`` back into a :class:`Sample` (rehearsal data).

    >>> parse({"prompt": "q", "chosen": "good", "rejected": "bad"}, "dpo").rejected
    'bad'
    """
    try:
        if kind == "sft":
            if "text" in row:
                msgs = [{"role": r, "content": c} for r, c in _CHATML.findall(row["text"])]
                if not msgs or msgs[-1]["role"] != "assistant":
                    raise DatasetError("a chatml row must end with an assistant turn")
                return Sample(prompt=msgs[:-1], completion=msgs[-1]["content"], source="existing")
            if "messages" in row:
                msgs = _msgs(row["messages"])
                return Sample(prompt=msgs[:-1], completion=msgs[-1]["content"], source="existing")
            if "instruction" in row:
                return Sample(prompt=_from_alpaca(row), completion=row.get("output") or "", source="existing")
            return Sample(prompt=_msgs(row["prompt"]), completion=_last_content(row["completion"]), source="existing")
        if kind == "dpo":
            if "conversations" in row:
                prompt = [{"role": {"human": "user", "gpt": "assistant"}.get(m["from"], m["from"]), "content": m["value"]}
                          for m in row["conversations"]]
            elif "instruction" in row:
                prompt = _from_alpaca(row)
            else:
                prompt = _msgs(row["prompt"])
            return Sample(prompt=prompt, completion=_last_content(row["chosen"]),
                          rejected=_last_content(row["rejected"]), source="existing")
        if kind == "kto":
            if "instruction" in row:
                return Sample(prompt=_from_alpaca(row), completion=row.get("output") or "",
                              label=bool(row["kto_tag"]), source="existing")
            return Sample(prompt=_msgs(row["prompt"]), completion=_last_content(row["completion"]),
                          label=bool(row["label"]), source="existing")
        if kind == "triplets":
            return Sample(prompt=_user(row["query"]), completion=row["positive"], rejected=row["negative"],
                          source="existing")
        if kind == "reranker":
            return Sample(prompt=_user(row["query"]), completion=row["doc"], label=float(row["score"]),
                          source="existing")
    except (KeyError, TypeError, IndexError) as exc:
        raise DatasetError(f"row does not look like a {kind} row: missing or bad {exc}", row=dict(row)) from exc
    raise ValidationError(f"unknown dataset kind {kind!r}", field="kind")
