"""Candidate prompts a user supplies: a YAML (or JSON) list, read and validated up front.

    # prompts.yaml: each entry a complete prompt; a bare text is a system prompt
    - name: number-only
      system: Answer with the number only.
    - name: worked
      system: Think step by step, then give the number.
      sampling: {temperature: 0.2}
    - Be concise.

A mapping with a ``candidates`` key holding that list is accepted too, so the file can
carry comments and other keys. Every entry is a :class:`~tuneloop.prompts.spec.PromptSpec`;
a bad entry fails the whole file with its position named, before any cycle starts.

>>> [c.label() for c in load_candidates(["Be brief.", {"name": "terse", "system": "One word."}])]
['Be brief.', 'terse']
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tuneloop.errors import ConfigError, ValidationError
from tuneloop.prompts.spec import PromptSpec

__all__ = ["load_candidates", "untried"]


def _read(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"prompt candidates file {str(path)!r} does not exist")
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def load_candidates(source: str | os.PathLike | Sequence[Any] | None) -> list[PromptSpec]:
    """Candidates from a file path, or from a list given inline (a loop config's ``candidates``)."""
    if source is None:
        return []
    where = "prompt candidates"
    data: Any = source
    if isinstance(source, (str, os.PathLike)):
        where = str(source)
        data = _read(Path(source).expanduser())
    if isinstance(data, Mapping):
        data = data.get("candidates")
    if not isinstance(data, Sequence) or isinstance(data, (str, bytes)):
        raise ConfigError(f"{where}: expected a list of prompts (or a mapping with a 'candidates' list)")
    out: list[PromptSpec] = []
    for i, entry in enumerate(data):
        try:
            spec = PromptSpec.from_value(entry)
        except ValidationError as exc:
            raise ConfigError(f"{where}: candidate {i + 1}: {exc.message}") from exc
        if spec is None or spec.is_empty:
            raise ConfigError(f"{where}: candidate {i + 1} is empty")
        out.append(spec)
    return out


def untried(candidates: Iterable[PromptSpec], tried: Iterable[str]) -> list[PromptSpec]:
    """The candidates whose fingerprint is not in ``tried`` (each version's prompt counts once)."""
    seen = set(tried)
    out = []
    for c in candidates:
        fp = c.fingerprint()
        if fp not in seen:
            seen.add(fp)
            out.append(c)
    return out
