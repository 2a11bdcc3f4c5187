"""Merge a LoRA adapter into its base model (``merge_and_unload``) for export.

The merged folder is a plain Hugging Face model: it loads without PEFT, serves from vLLM or
llama.cpp (after GGUF conversion; Q8_0/F16 keep the fine-tuned behaviour, Q4_1 lost it in
our measurements), and becomes a version's ``model_path``.

>>> merge_adapter("smollm2", "runs/r1/adapter", "exports/v7")       # doctest: +SKIP
PosixPath('/.../exports/v7')
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from tuneloop.errors import ConfigError
from tuneloop.models.resolve import offline_env, resolve_model


def merge_adapter(base_model: str | os.PathLike, adapter_path: str | os.PathLike, output_dir: str | os.PathLike,
                  *, data_dir: str | os.PathLike | None = None, dtype: str = "float32") -> Path:
    """Write ``base + adapter`` as one model to ``output_dir`` (atomically) and return the folder."""
    offline_env()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = Path(adapter_path).expanduser().resolve()
    if not (adapter / "adapter_config.json").exists():
        raise ConfigError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json)")
    out = Path(output_dir).expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty; choose a new folder for the merged model")
    base = resolve_model(base_model, data_dir)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    try:
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except Exception as exc:  # noqa: BLE001 - e.g. an adapter trained on another base
        raise ConfigError(f"cannot merge adapter {adapter} into {base}: {exc}") from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        merged.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
        (tmp / "tuneloop_merge.json").write_text(json.dumps({"base_model": str(base), "adapter": str(adapter)}))
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


__all__ = ["merge_adapter"]
