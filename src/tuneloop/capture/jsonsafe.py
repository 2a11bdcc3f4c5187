"""Turn any Python value into bounded, JSON-safe data for a trace (never raises).

Traced functions take and return anything: numpy arrays, pydantic models, open files,
megabyte documents. A span keeps a snapshot that the store can always take: strings are
clipped, containers keep their first items, depth and the total number of values are
bounded, and what JSON cannot hold becomes a short text. Non-finite floats become text
(PostgreSQL's JSONB refuses ``NaN``) and NUL characters are replaced (PostgreSQL refuses
them in text).

>>> jsonable({"q": "x" * 10, "n": float("nan"), "b": b"abc", "s": {3}}, max_chars=4)
{'q': 'xxxx…[+6 chars]', 'n': 'nan', 'b': '<3 bytes>', 's': [3]}
>>> jsonable(list(range(5)), max_items=2)
[0, 1, '…[+3 items]']
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import math
from collections.abc import Mapping
from typing import Any

MAX_CHARS, MAX_ITEMS, MAX_DEPTH, MAX_NODES = 4000, 100, 8, 2000


def clip(text: str, max_chars: int = MAX_CHARS) -> str:
    """``text`` cut to ``max_chars`` characters, saying how many were cut; NULs replaced."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}…[+{len(text) - max_chars} chars]"


def _short_repr(value: Any, max_chars: int) -> str:
    try:
        return clip(repr(value), max_chars)
    except Exception:  # a broken __repr__ must not break the host's call
        return f"<{type(value).__name__}>"


class _Converter:
    __slots__ = ("max_chars", "max_items", "max_depth", "nodes")

    def __init__(self, max_chars: int, max_items: int, max_depth: int, max_nodes: int) -> None:
        self.max_chars, self.max_items, self.max_depth, self.nodes = max_chars, max_items, max_depth, max_nodes

    def convert(self, value: Any, depth: int) -> Any:
        cls = value.__class__
        if cls is str:
            return clip(value, self.max_chars) if len(value) > self.max_chars or "\x00" in value else value
        if value is None or cls is int or cls is bool:
            return value
        if cls is float:
            return value if math.isfinite(value) else str(value)
        self.nodes -= 1
        if self.nodes < 0:
            return "…"
        if depth >= self.max_depth:
            return _short_repr(value, min(self.max_chars, 200))
        if isinstance(value, Mapping):
            return self._mapping(value.items(), len(value), depth)
        if isinstance(value, (list, tuple, set, frozenset)) or cls.__name__ == "deque":
            return self._sequence(value, len(value), depth)
        return self._other(value, depth)

    def _mapping(self, items: Any, n: int, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, (k, v) in enumerate(items):
            if i >= self.max_items:
                out["…"] = f"+{n - i} items"
                break
            out[k if k.__class__ is str else str(k)] = self.convert(v, depth + 1)
        return out

    def _sequence(self, values: Any, n: int, depth: int) -> list[Any]:
        out = []
        for i, v in enumerate(values):
            if i >= self.max_items:
                out.append(f"…[+{n - i} items]")
                break
            out.append(self.convert(v, depth + 1))
        return out

    def _other(self, value: Any, depth: int) -> Any:
        if isinstance(value, enum.Enum):
            return self.convert(value.value, depth)
        if isinstance(value, str):
            return clip(str(value), self.max_chars)
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return self.convert(float(value), depth)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return f"<{len(value)} bytes>"
        if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
            return value.isoformat()
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = [(f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value)]
            return self._mapping(fields, len(fields), depth)
        dump = getattr(value, "model_dump", None)  # pydantic v2 (openai's types among them)
        if callable(dump) and not isinstance(value, type):
            try:
                return self.convert(dump(), depth)
            except Exception:
                pass
        if hasattr(value, "tolist") and hasattr(value, "shape"):  # numpy / torch: small ones as lists
            try:
                size = getattr(value, "size", None)
                size = size() if callable(size) else size
                if size is not None and int(size) <= self.max_items:
                    return self.convert(value.tolist(), depth)
                return f"<{type(value).__name__} shape={tuple(value.shape)}>"
            except Exception:
                pass
        return _short_repr(value, self.max_chars)


_FLAT = (int, bool, type(None))


def _flat_copy(value: dict, max_chars: int) -> dict | None:
    """A copy of a small dict of plain values (the usual arguments), or None to go the long way."""
    for k, v in value.items():
        cls = v.__class__
        if k.__class__ is not str or not (cls in _FLAT or (cls is str and len(v) <= max_chars and "\x00" not in v)
                                          or (cls is float and v - v == 0.0)):
            return None
    return dict(value)


def jsonable(value: Any, *, max_chars: int = MAX_CHARS, max_items: int = MAX_ITEMS,
             max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> Any:
    """A JSON-safe, size-bounded snapshot of ``value``; never raises."""
    try:
        cls = value.__class__
        if cls is int or cls is bool or value is None or (cls is str and len(value) <= max_chars
                                                          and "\x00" not in value):
            return value
        if cls is dict and len(value) <= max_items:  # fast path: a traced call's arguments
            flat = _flat_copy(value, max_chars)
            if flat is not None:
                return flat
        return _Converter(max_chars, max_items, max_depth, max_nodes).convert(value, 0)
    except Exception:
        return _short_repr(value, max_chars)
