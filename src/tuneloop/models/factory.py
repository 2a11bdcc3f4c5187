"""Build the backend a registered model version names.

A ``model_versions`` row says how to answer: ``backend`` (local | openai | scripted),
``base_model``, ``adapter_path`` or ``model_path`` (a merged full model), ``prompt`` (system
prompt, template, few-shot examples — prompt versions are versions too) and ``params``
(sampling defaults plus backend options).

    prompt = {"system": "Answer in one word.",
              "template": "Question: {query}",            # applied to the last user message
              "few_shot": [{"user": "Capital of Peru?", "assistant": "Lima"}]}
    params = {"temperature": 0, "max_tokens": 16,          # sampling defaults (a request overrides them)
              "base_url": "http://vllm:8000/v1", "model": "m", "api_key_env": "VLLM_KEY"}  # openai options

>>> from tuneloop.models.factory import backend_for_version
>>> b = backend_for_version({"id": "v1", "backend": "scripted", "params": {"script": {"hi": "hello"}},
...                          "prompt": {"system": "Be brief."}})
>>> b.chat([{"role": "user", "content": "hi"}]).text
'hello'
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from tuneloop.errors import ConfigError
from tuneloop.models.base import Completion, Message, ModelBackend

SAMPLING_KEYS = ("temperature", "top_p", "top_k", "max_tokens", "max_new_tokens", "seed", "stop",
                 "repetition_penalty")
_OPENAI_OPTIONS = ("base_url", "api_key", "api_key_env", "model", "timeout", "connect_timeout", "retries",
                   "max_connections", "headers")
_LOCAL_OPTIONS = ("device", "dtype", "max_batch_size")


def apply_prompt(messages: Sequence[Message], prompt: dict[str, Any] | str | None) -> list[Message]:
    """Prepend the version's system prompt and few-shot turns; fill its template with the last user turn.

    >>> apply_prompt([{"role": "user", "content": "2+2?"}], {"system": "Be brief.", "template": "Q: {query}"})
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Q: 2+2?'}]
    """
    msgs = [dict(m) for m in messages]
    if not prompt:
        return msgs
    if isinstance(prompt, str):
        prompt = {"system": prompt}
    template = prompt.get("template")
    if template:
        for m in reversed(msgs):
            if m.get("role") == "user":
                text = str(m.get("content", ""))
                m["content"] = template.replace("{query}", text).replace("{input}", text)
                break
    shots: list[Message] = []
    for shot in prompt.get("few_shot") or []:
        if "role" in shot:
            shots.append({"role": shot["role"], "content": shot["content"]})
        else:
            shots += [{"role": "user", "content": shot["user"]}, {"role": "assistant", "content": shot["assistant"]}]
    system = prompt.get("system")
    if msgs and msgs[0].get("role") == "system":
        own = msgs.pop(0)["content"]
        # Many chat templates take one system message only: merge the version's and the caller's.
        system = f"{system}\n\n{own}" if system else own
    head = [{"role": "system", "content": system}] if system else []
    return head + shots + msgs


class PromptedBackend:
    """A backend seen through a version's prompt and sampling defaults."""

    def __init__(self, inner: ModelBackend, *, prompt: dict[str, Any] | str | None = None,
                 defaults: dict[str, Any] | None = None, name: str | None = None) -> None:
        self.inner, self.prompt, self.defaults = inner, prompt, dict(defaults or {})
        self.name = name or inner.name

    def _params(self, params: dict[str, Any]) -> dict[str, Any]:
        return {**self.defaults, **{k: v for k, v in params.items() if v is not None}}

    def chat(self, messages: Sequence[Message], **params: Any) -> Completion:
        return self.inner.chat(apply_prompt(messages, self.prompt), **self._params(params))

    def chat_batch(self, conversations: Sequence[Sequence[Message]], **params: Any) -> list[Completion]:
        return self.inner.chat_batch([apply_prompt(c, self.prompt) for c in conversations], **self._params(params))

    def stream(self, messages: Sequence[Message], **params: Any) -> Iterator[str]:
        return self.inner.stream(apply_prompt(messages, self.prompt), **self._params(params))

    def close(self) -> None:
        self.inner.close()


def _openai(version: dict[str, Any], options: dict[str, Any]):
    from tuneloop.models.openai_backend import OpenAIBackend

    if not options.get("base_url"):
        raise ConfigError(f"version {version.get('id')}: an openai backend needs params.base_url")
    key = options.get("api_key") or (os.environ.get(options["api_key_env"]) if options.get("api_key_env") else None)
    kw = {k: options[k] for k in ("timeout", "connect_timeout", "retries", "max_connections", "headers")
          if k in options}
    model = options.get("model") or version.get("base_model") or ""
    return OpenAIBackend(options["base_url"], key, model, name=str(version.get("id") or model), **kw)


def _local(version: dict[str, Any], options: dict[str, Any], pool, data_dir):
    from tuneloop.models.local import LocalModelPool

    if pool is None:
        pool = LocalModelPool(device=options.get("device", "cpu"), dtype=options.get("dtype", "auto"),
                              data_dir=data_dir)
    base = version.get("model_path") or version.get("base_model") or "smollm2"
    adapter = None if version.get("model_path") else version.get("adapter_path")
    kw = {"max_batch_size": options["max_batch_size"]} if "max_batch_size" in options else {}
    return pool.backend(base, adapter, name=str(version.get("id") or base), **kw)


def _scripted(version: dict[str, Any], options: dict[str, Any]):
    from tuneloop.models.scripted import ScriptedBackend

    return ScriptedBackend(options.get("script") or {}, default=options.get("default", ""),
                           name=str(version.get("id") or "scripted"), delay_s=float(options.get("delay_s", 0.0)))


def backend_for_version(version: dict[str, Any], pool=None, *, data_dir: str | None = None) -> ModelBackend:
    """The backend for one ``model_versions`` row (a dict of its columns)."""
    params = dict(version.get("params") or {})
    sampling = {k: params.pop(k) for k in SAMPLING_KEYS if k in params}
    kind = version.get("backend") or "local"
    if kind == "openai":
        inner = _openai(version, params)
    elif kind == "local":
        inner = _local(version, params, pool, data_dir)
    elif kind == "scripted":
        inner = _scripted(version, params)
    else:
        raise ConfigError(f"version {version.get('id')}: unknown backend {kind!r} (local | openai | scripted)")
    prompt = version.get("prompt")
    if not prompt and not sampling:
        return inner
    return PromptedBackend(inner, prompt=prompt, defaults=sampling, name=inner.name)


__all__ = ["backend_for_version", "apply_prompt", "PromptedBackend", "SAMPLING_KEYS"]
