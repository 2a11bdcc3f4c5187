"""Exports: JSONL (atomic), Parquet, a Hugging Face ``datasets.Dataset``, and the
LLaMA-Factory ``dataset_info.json`` entry beside a dataset file.

>>> import tempfile, os, json
>>> d = tempfile.mkdtemp()
>>> p = write_jsonl([{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}],
...                 os.path.join(d, "sft.jsonl"))
>>> entry = write_llamafactory_info(p, kind="sft", fmt="messages")
>>> json.load(open(os.path.join(d, "dataset_info.json")))["sft"]["formatting"]
'sharegpt'
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tuneloop.datasets.formats import Sample, check_format, parse, render
from tuneloop.errors import DatasetError

_encode = json.JSONEncoder(ensure_ascii=False).encode

_OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                "assistant_tag": "assistant", "system_tag": "system"}


def atomic_path(path: str | Path) -> Path:
    """A temp file beside ``path`` (same filesystem, so ``os.replace`` is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def write_jsonl(rows: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows as JSON lines through a temp file and an atomic rename; return the path."""
    path = Path(path)
    tmp = atomic_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(_encode(row))
                f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_jsonl(path: str | Path) -> Iterable[dict[str, Any]]:
    """Rows of a JSONL file; a bad line raises DatasetError naming the line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{lineno}: not a JSON line ({exc.msg})", path=str(path), line=lineno) from exc


def to_parquet(jsonl_path: str | Path, parquet_path: str | Path | None = None) -> Path:
    """Convert a JSONL dataset to Parquet (pyarrow); returns the Parquet path."""
    import pyarrow as pa
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    src = Path(jsonl_path)
    out = Path(parquet_path) if parquet_path else src.with_suffix(".parquet")
    if src.stat().st_size == 0:
        table = pa.table({})
    else:
        table = pajson.read_json(src, read_options=pajson.ReadOptions(block_size=1 << 24))
    tmp = atomic_path(out)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def to_hf_dataset(path: str | Path):
    """A Hugging Face ``datasets.Dataset`` of a JSONL or Parquet dataset file."""
    from datasets import Dataset

    path = Path(path)
    if path.suffix == ".parquet":
        return Dataset.from_parquet(str(path))
    rows = list(read_jsonl(path))
    return Dataset.from_list(rows)


def llamafactory_entry(file_name: str, kind: str, fmt: str) -> dict[str, Any] | None:
    """The ``dataset_info.json`` entry that lets LLaMA-Factory read a file of ``kind``/``fmt``,
    or None when it cannot read that format (then a sibling file is written)."""
    if kind == "sft":
        if fmt == "messages":
            return {"file_name": file_name, "formatting": "sharegpt", "columns": {"messages": "messages"},
                    "tags": dict(_OPENAI_TAGS)}
        if fmt == "alpaca":
            return {"file_name": file_name, "columns": {"prompt": "instruction", "query": "input",
                                                        "response": "output", "system": "system", "history": "history"}}
        if fmt == "completion":
            return {"file_name": file_name, "columns": {"prompt": "prompt", "response": "completion"}}
        return None  # chatml text: LLaMA-Factory reads it only as pre-training text
    if kind == "dpo":
        if fmt == "standard":
            return {"file_name": file_name, "ranking": True,
                    "columns": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}}
        if fmt == "alpaca":
            return {"file_name": file_name, "ranking": True,
                    "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected",
                                "system": "system", "history": "history"}}
        if fmt == "sharegpt":
            return {"file_name": file_name, "formatting": "sharegpt", "ranking": True,
                    "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}}
        return None  # TRL's conversational chosen is a list; LLaMA-Factory wants one message
    if kind == "kto":
        if fmt == "standard":
            return {"file_name": file_name, "columns": {"prompt": "prompt", "response": "completion", "kto_tag": "label"}}
        if fmt == "alpaca":
            return {"file_name": file_name, "columns": {"prompt": "instruction", "query": "input", "response": "output",
                                                        "system": "system", "history": "history", "kto_tag": "kto_tag"}}
        return None
    return None  # retriever / reranker data is not LLaMA-Factory's


# Where a file's own format is not readable by LLaMA-Factory, a sibling in this format is.
_SIBLING_FORMAT = {"sft": "messages", "dpo": "sharegpt", "kto": "alpaca"}


def write_llamafactory_info(path: str | Path, *, kind: str, fmt: str, name: str | None = None) -> dict[str, Any] | None:
    """Add (or replace) this dataset's entry in ``dataset_info.json`` beside ``path``.

    If LLaMA-Factory cannot read ``fmt`` (TRL's conversational DPO/KTO, ChatML text), a
    sibling ``<stem>.llamafactory.jsonl`` in a format it reads is written and the entry
    points there. Returns the entry, or None for kinds LLaMA-Factory does not train.
    """
    path = Path(path)
    fmt = check_format(kind, fmt)
    name = name or path.stem
    entry = llamafactory_entry(path.name, kind, fmt)
    if entry is None and kind in _SIBLING_FORMAT:
        sibling = path.with_name(f"{path.stem}.llamafactory.jsonl")
        target = _SIBLING_FORMAT[kind]
        write_jsonl((render(parse(row, kind), kind, target) for row in read_jsonl(path)), sibling)
        entry = llamafactory_entry(sibling.name, kind, target)
    if entry is None:
        return None
    info_path = path.parent / "dataset_info.json"
    info: dict[str, Any] = {}
    if info_path.exists():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8") or "{}")
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{info_path} is not valid JSON: {exc.msg}", path=str(info_path)) from exc
    info[name] = entry
    tmp = atomic_path(info_path)
    tmp.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, info_path)
    return entry


def samples_to_rows(samples: Iterable[Sample], kind: str, fmt: str | None = None) -> Iterable[dict[str, Any]]:
    """Render samples to rows of ``kind``/``fmt`` (convenience for small, in-memory sets)."""
    for s in samples:
        yield render(s, kind, fmt)
