"""The tiny model: built from scratch in seconds, deterministic, cached, and it chats."""
from __future__ import annotations

import hashlib

import pytest

from tuneloop.errors import ConfigError
from tuneloop.models.tiny import build_tiny_model


def _digest(folder):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir()) if f.is_file()}


def test_same_seed_gives_identical_files(tiny_path, tmp_path):
    again = build_tiny_model(tmp_path / "again")
    assert _digest(again) == _digest(tiny_path)
    assert (again / "model.safetensors").stat().st_size < 3_000_000  # tiny really is tiny


def test_other_seed_gives_other_weights(tiny_path, tmp_path):
    other = build_tiny_model(tmp_path / "other", seed=7)
    assert _digest(other)["model.safetensors"] != _digest(tiny_path)["model.safetensors"]
    assert _digest(other)["tokenizer.json"] == _digest(tiny_path)["tokenizer.json"]


def test_cached_folder_is_reused_untouched(tiny_path):
    before = (tiny_path / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model(tiny_path) == tiny_path
    assert (tiny_path / "model.safetensors").stat().st_mtime_ns == before


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "weights.bin").write_text("precious")
    with pytest.raises(ConfigError, match="not a tuneloop tiny model"):
        build_tiny_model(tmp_path / "mine")
    assert (tmp_path / "mine" / "weights.bin").read_text() == "precious"


def test_tokenizer_splits_digits_and_has_a_chat_template(tiny_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_path)
    assert 400 <= len(tok) <= 520
    pieces = tok.tokenize("12345")
    assert [p for p in pieces if p.strip("Ġ")] == ["1", "2", "3", "4", "5"]
    text = tok.apply_chat_template([{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    enc = tok.apply_chat_template([{"role": "user", "content": "hi"}], return_dict=True, add_generation_prompt=True)
    assert tok.decode(enc["input_ids"]) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


def test_tiny_model_chats_through_the_local_backend(tiny_path, pool):
    backend = pool.backend(tiny_path, max_new_tokens=6)
    out = backend.chat([{"role": "user", "content": "What is 2 + 3?"}])
    assert isinstance(out.text, str)
    assert 1 <= out.completion_tokens <= 6
    assert out.prompt_tokens > 5
    assert out.finish_reason in ("stop", "length")
