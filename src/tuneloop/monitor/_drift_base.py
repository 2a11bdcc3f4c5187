"""Shared pieces of the drift methods: the result type, input checks, sampling, permutations."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuneloop.errors import ValidationError


@dataclass(frozen=True)
class DriftResult:
    """The verdict of one drift method.

    ``value > threshold`` is the effect-size rule of every method; methods with a test also
    need ``p_value < details["alpha"]`` before ``drifted`` is true.

    >>> DriftResult("ks", 0.4, 0.2, True).to_dict()["drifted"]
    True
    """

    method: str
    value: float
    threshold: float
    drifted: bool
    p_value: float | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "value": _num(self.value), "threshold": _num(self.threshold),
                "drifted": bool(self.drifted), "p_value": _num(self.p_value), "details": _jsonable(self.details)}


def _num(x: Any) -> Any:
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _num(obj)
    return obj


def _matrix(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValidationError(f"{name} embeddings must be a 2-D array (n, d), got shape {a.shape}", field=name)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    if a.shape[0] < 2:
        raise ValidationError(f"{name} window needs at least 2 embeddings, got {a.shape[0]}", field=name)
    if not np.isfinite(a).all():
        raise ValidationError(f"{name} embeddings contain NaN or infinite values", field=name)
    return a


class _Checked(np.ndarray):
    """A view marking an array that :func:`_pair` already validated (the suite checks once)."""


def _pair(reference: Any, current: Any) -> tuple[np.ndarray, np.ndarray]:
    if type(reference) is _Checked and type(current) is _Checked:
        return reference.view(np.ndarray), current.view(np.ndarray)
    ref, cur = _matrix(reference, "reference"), _matrix(current, "current")
    if ref.shape[1] != cur.shape[1]:
        raise ValidationError(f"reference has {ref.shape[1]} dimensions but current has {cur.shape[1]}",
                              field="current")
    return ref, cur


def _subsample(x: np.ndarray, k: int | None, rng: np.random.Generator) -> np.ndarray:
    if k is None or len(x) <= k:
        return x
    return x[np.sort(rng.choice(len(x), size=k, replace=False))]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _perm_p(observed: float, null: np.ndarray) -> float:
    # (1 + #{null >= observed}) / (1 + B): a valid p-value for a Monte Carlo permutation test.
    return float((1 + np.count_nonzero(null >= observed - 1e-15)) / (1 + len(null)))


def _permutation_labels(n: int, m: int, n_permutations: int, rng: np.random.Generator) -> np.ndarray:
    """(n + m, B) 0/1 matrix: column b marks the rows a permutation puts in the "reference"."""
    labels = np.zeros((n + m, n_permutations), dtype=np.float64)
    for b in range(n_permutations):
        labels[rng.permutation(n + m)[:n], b] = 1.0
    return labels
