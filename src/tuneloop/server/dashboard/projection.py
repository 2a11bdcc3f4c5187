"""2-D projection of reference vs current embeddings for the drift page.

The pure core, :func:`pca_2d`, fits a principal component analysis on both windows
together (so neither window's spread dominates by construction) and projects each onto
the first two components. :class:`ProjectionCache` re-embeds a sample of each window of
an ``embedding`` drift report and keeps the result, because embedding is the slow part.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> p = pca_2d(rng.normal(size=(50, 8)), rng.normal(size=(40, 8)) + 3.0)
>>> p.reference.shape, p.current.shape
((50, 2), (40, 2))
>>> p.explained_variance_ratio[0] > 0.5     # the shift is the main direction of variance
True

Why PCA and not t-SNE/UMAP (Evidently draws a t-SNE): PCA is linear, deterministic and
takes milliseconds on a few thousand rows with numpy alone; distances along its axes
mean something, so a moved cloud is a moved distribution, not a layout artefact.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuneloop.errors import ValidationError

__all__ = ["Projection", "ProjectionCache", "pca_2d"]


@dataclass(frozen=True)
class Projection:
    """Both windows in the plane of the first two principal components of their union."""

    reference: np.ndarray              # (n_reference, 2)
    current: np.ndarray                # (n_current, 2)
    explained_variance_ratio: tuple[float, float]
    components: np.ndarray             # (2, dim), unit rows
    mean: np.ndarray                   # (dim,), subtracted before projecting

    def to_dict(self, digits: int = 4) -> dict[str, Any]:
        """JSON for the chart: point lists and the share of variance on each axis."""
        return {"reference": np.round(self.reference, digits).tolist(),
                "current": np.round(self.current, digits).tolist(),
                "explained_variance_ratio": [round(v, 4) for v in self.explained_variance_ratio],
                "n_reference": int(len(self.reference)), "n_current": int(len(self.current))}


def _as_matrix(name: str, x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValidationError(f"{name} must be a 2-D array (rows x dims), got shape {a.shape}", field=name)
    if not np.isfinite(a).all():
        raise ValidationError(f"{name} holds NaN or infinite values", field=name)
    return a


def pca_2d(reference: Any, current: Any) -> Projection:
    """Project ``reference`` and ``current`` (``(n, d)`` arrays, same ``d``) onto 2 principal axes.

    Components follow scikit-learn's sign convention (the largest loading of each
    component is positive), so the picture does not flip between runs.
    """
    ref, cur = _as_matrix("reference", reference), _as_matrix("current", current)
    if ref.shape[1] != cur.shape[1]:
        raise ValidationError(f"reference has {ref.shape[1]} dims, current {cur.shape[1]}", field="current")
    if len(ref) + len(cur) < 3 or ref.shape[1] < 2:
        raise ValidationError("a 2-D projection needs at least 3 rows and 2 dimensions", field="reference")
    both = np.vstack([ref, cur])
    mean = both.mean(axis=0)
    # Economy SVD of the centred data: rows of vt are the principal axes, s**2 their variances.
    _, s, vt = np.linalg.svd(both - mean, full_matrices=False)
    comps = vt[:2].copy()
    pivot = np.argmax(np.abs(comps), axis=1)
    comps *= np.sign(comps[np.arange(2), pivot])[:, None]
    total = float((s ** 2).sum())
    ratio = (s[:2] ** 2) / total if total > 0 else np.zeros(2)  # min(n, d) >= 2: two values
    return Projection((ref - mean) @ comps.T, (cur - mean) @ comps.T, (float(ratio[0]), float(ratio[1])),
                      comps, mean)


class ProjectionCache:
    """Projections of drift reports by report id (least recently used dropped first).

    ``compute(report_id)`` returns the JSON dict; concurrent requests for one report wait
    for a single computation instead of embedding the same texts twice.
    """

    def __init__(self, compute: Callable[[str], Mapping[str, Any]], size: int = 16) -> None:
        self._compute, self._size = compute, size
        self._items: OrderedDict[str, Mapping[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._busy: dict[str, threading.Lock] = {}

    def get(self, report_id: str) -> Mapping[str, Any]:
        with self._lock:
            if report_id in self._items:
                self._items.move_to_end(report_id)
                return self._items[report_id]
            busy = self._busy.setdefault(report_id, threading.Lock())
        with busy:
            with self._lock:
                if report_id in self._items:
                    return self._items[report_id]
            value = self._compute(report_id)
            with self._lock:
                self._items[report_id] = value
                self._busy.pop(report_id, None)
                while len(self._items) > self._size:
                    self._items.popitem(last=False)
            return value
