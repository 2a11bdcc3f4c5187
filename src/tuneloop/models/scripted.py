"""A deterministic backend for tests of the gateway and the loop (never for production).

>>> b = ScriptedBackend({"hi": "hello"}, default="?")
>>> b.chat([{"role": "user", "content": "hi"}]).text
'hello'
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from tuneloop.models.base import Completion, Message


class ScriptedBackend:
    """Answers from a mapping (last user message -> answer) or a function of the messages."""

    def __init__(self, script: Mapping[str, str] | Callable[[Sequence[Message]], str],
                 *, default: str = "", name: str = "scripted", delay_s: float = 0.0,
                 fail_with: Exception | None = None) -> None:
        self.script, self.default, self.name = script, default, name
        self.delay_s, self.fail_with = delay_s, fail_with
        self.calls = 0

    def _answer(self, messages: Sequence[Message]) -> str:
        if callable(self.script):
            return self.script(messages)
        last = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        return self.script.get(last, self.default)

    def chat(self, messages: Sequence[Message], **params: Any) -> Completion:
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        text = self._answer(messages)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        return Completion(text=text, prompt_tokens=prompt_tokens, completion_tokens=len(text.split()), model=self.name)

    def chat_batch(self, conversations: Sequence[Sequence[Message]], **params: Any) -> list[Completion]:
        return [self.chat(c, **params) for c in conversations]

    def stream(self, messages: Sequence[Message], **params: Any) -> Iterator[str]:
        text = self.chat(messages, **params).text
        for i, word in enumerate(text.split(" ")):
            yield word if i == 0 else " " + word

    def close(self) -> None:
        pass
