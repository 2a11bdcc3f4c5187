"""backend_for_version: a model_versions row -> the backend that answers for it."""
from __future__ import annotations

import pytest

from tuneloop.errors import ConfigError
from tuneloop.models.factory import PromptedBackend, apply_prompt, backend_for_version
from tuneloop.models.local import LocalBackend
from tuneloop.models.openai_backend import OpenAIBackend


def test_apply_prompt_system_template_and_few_shot():
    msgs = [{"role": "system", "content": "Caller rules."}, {"role": "user", "content": "Capital of Peru?"}]
    prompt = {"system": "Answer in one word.", "template": "Question: {query}",
              "few_shot": [{"user": "Capital of Chile?", "assistant": "Santiago"}]}
    assert apply_prompt(msgs, prompt) == [
        {"role": "system", "content": "Answer in one word.\n\nCaller rules."},
        {"role": "user", "content": "Capital of Chile?"},
        {"role": "assistant", "content": "Santiago"},
        {"role": "user", "content": "Question: Capital of Peru?"},
    ]
    assert msgs[1]["content"] == "Capital of Peru?"  # the caller's list is not modified
    assert apply_prompt(msgs[1:], "Be brief.")[0] == {"role": "system", "content": "Be brief."}
    assert apply_prompt(msgs[1:], None) == msgs[1:]


def test_template_with_braces_is_not_format_string():
    out = apply_prompt([{"role": "user", "content": "x"}], {"template": 'Reply as JSON {"a": 1}: {query}'})
    assert out[-1]["content"] == 'Reply as JSON {"a": 1}: x'


def test_scripted_version_sees_the_prompted_messages():
    seen = []
    version = {"id": "v-prompt", "backend": "scripted", "prompt": {"system": "S", "template": "Q: {query}"},
               "params": {"script": {"Q: hi": "hello"}, "temperature": 0}}
    b = backend_for_version(version)
    assert isinstance(b, PromptedBackend) and b.name == "v-prompt"
    b.inner.script = lambda msgs: seen.append(msgs) or "ok"
    assert b.chat([{"role": "user", "content": "hi"}]).text == "ok"
    assert seen[0] == [{"role": "system", "content": "S"}, {"role": "user", "content": "Q: hi"}]


def test_local_versions_share_a_pool(tiny_path, tiny_adapter, pool):
    champion = backend_for_version({"id": "v1", "backend": "local", "base_model": str(tiny_path)}, pool)
    challenger = backend_for_version({"id": "v2", "backend": "local", "base_model": str(tiny_path),
                                      "adapter_path": str(tiny_adapter), "params": {"max_tokens": 4}}, pool)
    assert isinstance(champion, LocalBackend) and champion.name == "v1"
    assert challenger.inner.base is champion.base
    conv = [{"role": "user", "content": "hi"}]
    assert challenger.chat(conv).completion_tokens <= 4
    assert challenger.chat(conv).text != champion.chat(conv, max_tokens=4).text


def test_model_path_wins_over_base_and_adapter(tiny_path, tiny_adapter, pool):
    b = backend_for_version({"id": "merged", "backend": "local", "base_model": "smollm2",
                             "model_path": str(tiny_path), "adapter_path": str(tiny_adapter)}, pool)
    assert b.base.path == tiny_path and b.adapter_path is None


def test_openai_version(monkeypatch):
    monkeypatch.setenv("UPSTREAM_KEY", "sk-env")
    b = backend_for_version({"id": "v3", "backend": "openai", "base_model": "served-name",
                             "params": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "UPSTREAM_KEY",
                                        "timeout": 3, "retries": 0}})
    assert isinstance(b, OpenAIBackend)
    assert b.model == "served-name" and b._client.headers["Authorization"] == "Bearer sk-env"
    b.close()
    with pytest.raises(ConfigError, match="needs params.base_url"):
        backend_for_version({"id": "v4", "backend": "openai"})


def test_unknown_backend():
    with pytest.raises(ConfigError, match="unknown backend 'vllm'"):
        backend_for_version({"id": "v5", "backend": "vllm"})
