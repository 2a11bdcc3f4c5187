"""The model-backend protocol every serving path uses.

A backend turns chat messages into a completion. Backends: ``local`` (transformers +
optional PEFT LoRA adapter), ``openai`` (any OpenAI-compatible upstream), ``scripted``
(deterministic answers, for tests only).

>>> from tuneloop.models.scripted import ScriptedBackend
>>> b = ScriptedBackend(lambda msgs: "Paris")
>>> b.chat([{"role": "user", "content": "Capital of France?"}]).text
'Paris'
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, Any]  # {"role": "system"|"user"|"assistant", "content": str}


@dataclass(frozen=True, slots=True)
class Completion:
    """One answer of a backend."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class ModelBackend(Protocol):
    """What the gateway, the judge, the evaluator and the simulator call."""

    name: str

    def chat(self, messages: Sequence[Message], **params: Any) -> Completion:
        """Answer one conversation. ``params``: max_tokens, temperature, top_p, seed, stop."""
        ...

    def chat_batch(self, conversations: Sequence[Sequence[Message]], **params: Any) -> list[Completion]:
        """Answer many conversations (batched where the backend can)."""
        ...

    def stream(self, messages: Sequence[Message], **params: Any) -> Iterator[str]:
        """Yield the answer in text chunks."""
        ...

    def close(self) -> None:
        ...
