"""Build the backend a registered model version names.

A ``model_versions`` row says how to answer: ``backend`` (local | openai | scripted),
``base_model``, ``adapter_path`` or ``model_path`` (a merged full model), ``prompt`` (a
:class:`~tuneloop.prompts.spec.PromptSpec`: system prompt, template, few-shot examples,
sampling — prompt versions are versions too) and ``params`` (sampling defaults plus backend
options). The prompt is applied for every backend, so the gate and the A/B test see what users get.

    prompt = {"system": "Answer in one word.",
              "template": "Question: {input}",            # applied to the last user message
              "few_shot": [{"user": "Capital of Peru?", "assistant": "Lima"}],
              "sampling": {"temperature": 0.2}}           # wins over params' sampling
    params = {"temperature": 0, "max_tokens": 16,          # sampling defaults (a request overrides them)
              "base_url": "http://vllm:8000/v1", "model": "m", "api_key_env": "VLLM_KEY"}  # openai options
    # scripted (tests): {"script": {last user message: answer}, "default": ".."} or
    #                   {"script_ref": "package.module:function"} (a function of the messages)

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
from tuneloop.prompts.spec import SAMPLING_KEYS, PromptSpec

_OPENAI_OPTIONS = ("base_url", "api_key", "api_key_env", "model", "timeout", "connect_timeout", "retries",
                   "max_connections", "headers")
_LOCAL_OPTIONS = ("device", "dtype", "max_batch_size")


def apply_prompt(messages: Sequence[Message], prompt: "PromptSpec | dict[str, Any] | str | None") -> list[Message]:
    """Prepend the version's system prompt and few-shot turns; fill its template with the last user turn.

    ``prompt`` is anything :meth:`PromptSpec.from_value <tuneloop.prompts.spec.PromptSpec.from_value>`
    reads (a spec, its dict, or a bare system prompt).

    >>> apply_prompt([{"role": "user", "content": "2+2?"}], {"system": "Be brief.", "template": "Q: {query}"})
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Q: 2+2?'}]
    """
    spec = PromptSpec.from_value(prompt)
    return spec.apply(messages) if spec is not None else [dict(m) for m in messages]


class PromptedBackend:
    """A backend seen through a version's prompt and sampling defaults."""

    def __init__(self, inner: ModelBackend, *, prompt: PromptSpec | dict[str, Any] | str | None = None,
                 defaults: dict[str, Any] | None = None, name: str | None = None) -> None:
        self.inner, self.prompt = inner, PromptSpec.from_value(prompt)
        # the spec's sampling wins over the version's params; a request's own parameters win over both
        self.defaults = {**dict(defaults or {}), **(self.prompt.sampling if self.prompt else {})}
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


def _script_function(ref: str):
    """``"package.module:function"`` (a function of the messages) for a scripted version."""
    import importlib

    module, _, attr = str(ref).partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr) if module and attr else None
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"scripted backend: cannot import script_ref {ref!r}: {exc}") from exc
    if not callable(fn):
        raise ConfigError(f"scripted backend: script_ref {ref!r} must name a function, as 'package.module:function'")
    return fn


def _scripted(version: dict[str, Any], options: dict[str, Any]):
    from tuneloop.models.scripted import ScriptedBackend

    script = _script_function(options["script_ref"]) if options.get("script_ref") else options.get("script") or {}
    return ScriptedBackend(script, default=options.get("default", ""),
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
    prompt = PromptSpec.from_value(version.get("prompt"))
    if (prompt is None or prompt.is_empty) and not sampling:
        return inner
    return PromptedBackend(inner, prompt=prompt, defaults=sampling, name=inner.name)


__all__ = ["backend_for_version", "apply_prompt", "PromptedBackend", "SAMPLING_KEYS"]
