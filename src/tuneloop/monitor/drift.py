"""Embedding drift between a reference window and a current window (pure functions).

Every method takes two ``(n, d)`` arrays (reference, current) and returns a frozen
:class:`DriftResult` with ``value``, ``threshold``, ``drifted`` (``value > threshold``,
and where the method has a test, also ``p_value < alpha``) and ``details``.
:func:`drift_suite` runs several methods and times each.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref, cur = rng.normal(size=(500, 16)), rng.normal(size=(500, 16)) + 0.5
>>> ks_drift(ref, cur).drifted
True
>>> drift_suite(ref, cur, methods=("ks", "centroid")).drifted
True

Our defaults, next to Evidently's (``evidently.metrics.data_drift.embedding_drift_methods``):

==================  ========================================  =============================================
method              tuneloop default                          Evidently default
==================  ========================================  =============================================
``classifier``      logistic regression, 3-fold out-of-fold   ``model`` (its default method): SGD logistic
                    ROC AUC on <= 2,500 rows per window;      regression, one 50/50 split; drift if AUC >
                    drift if AUC > 0.55 and the AUC is        0.55, or (bootstrap, default for <= 1,000
                    significant (Mann-Whitney p < 0.05)       rows) AUC > 95th pct of a random classifier
``ks``              per-component KS (p < 0.05) on <= 5,000   ``ratio``: per-component normed Wasserstein
                    rows; drift if share of drifted           >= 0.1; drift if share > 0.2. (Tabular
                    components > 0.2                          dataset drift: share >= 0.5, KS p < 0.05 for
                                                              <= 1,000 rows, Wasserstein above.)
``psi``             PSI of the distance to the reference      (PSI per column, threshold 0.1)
                    centroid, 10 reference-quantile bins;
                    drift if PSI > 0.1 (0.25 = significant)
                    and its chi-square p < 0.05
``psi_components``  share of components with PSI > 0.1 (and  -
                    p < 0.05) on <= 5,000 rows; drift if
                    share > 0.2
``mmd``             unbiased MMD^2, RBF kernel                ``mmd``: unbiased MMD^2 over *all* rows
                    exp(-|x-y|^2 / median^2), <= 1,000 rows   (kernel matrix n x n: cannot run at 100k),
                    per window, 200-permutation test,         same kernel; drift if MMD^2 > 0.015
                    drift if p < 0.05
``centroid``        cosine distance between window means      ``distance``: euclidean distance between
                    (all rows); drift if > 0.01 and a         means; drift if > 0.2, or (bootstrap,
                    permutation test on <= 2,000 rows says    <= 1,000 rows) > 95th pct of reference
                    p < 0.05                                  resamples; 0.2 misses new topics (below)
``norm``            relative shift of the mean L2 norm; drift -
                    if > 0.02 and Welch t-test p < 0.05
                    (always 0 for L2-normalized embedders)
``nn_similarity``   drop of mean max-cosine similarity of     -
                    queries to the reference ("history"),
                    current vs held-out reference queries;
                    drift if drop > 0.02 and Mann-Whitney
                    p < 0.05
==================  ========================================  =============================================

Why effect size *and* a test: on small windows an effect-size threshold alone fires on noise
(Evidently adds a bootstrap for <= 1,000 rows for the same reason); on large windows a test
alone fires on differences too small to matter. Methods that subsample do so uniformly
without replacement (``seed``), which bounds both their cost and their sensitivity: at 100,000
x 384 the whole suite runs in seconds (see benchmarks/bench_drift.py).

Calibration on real embeddings (all-MiniLM-L6-v2, templated support queries, 1,500
reference vs 1,000 current): same distribution -> no method fires (centroid 0.005, similarity
drop -0.002, AUC 0.47, KS share 0.01). 10% of current queries on a new topic -> centroid
0.014, similarity drop 0.05, AUC 0.552, MMD^2 0.0009 (p = 0.005), KS share 0.17: four
methods fire. Evidently's MMD threshold 0.015 misses even 30% new-topic traffic (MMD^2
0.008), and its 0.2 euclidean ``distance`` misses both (the means move by 0.056 and 0.134;
0.034 between same-distribution windows). A shift in topic *mix* (60% one topic; means
0.204 apart) fires six methods, not ``nn_similarity``: nothing is new, only proportions.

Which shift each method can see (tests/monitor/test_monitor_drift.py holds the table): a pure
variance change leaves the mean direction where it was, so ``centroid`` is blind to it, and
so is a linear ``classifier`` on raw embeddings (Evidently's ``model`` too; after L2
normalization a wider spread also shortens the mean, which the classifier does see);
``ks``, ``psi``, ``mmd`` and ``nn_similarity`` see it. A new topic cluster moves the mean and
lowers the similarity of new queries to history, so every method but ``norm`` sees it;
``norm`` sees only changes of length, on embedders that do not normalize.
"""
from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tuneloop.errors import ValidationError
from tuneloop.monitor._drift_base import DriftResult, _Checked, _pair
from tuneloop.monitor._drift_geometry import centroid_drift, classifier_drift, mmd_drift, nn_similarity_drift
from tuneloop.monitor._drift_stats import (PSI_MODERATE, PSI_SIGNIFICANT, ks_drift, norm_drift, psi,
                                           psi_components_drift, psi_drift, psi_p_value)

__all__ = [
    "DEFAULT_METHODS", "PSI_MODERATE", "PSI_SIGNIFICANT", "DriftResult", "DriftSuiteResult", "centroid_drift",
    "classifier_drift", "drift_suite", "ks_drift", "mmd_drift", "nn_similarity_drift", "norm_drift", "psi",
    "psi_components_drift", "psi_drift", "psi_p_value",
]


@dataclass(frozen=True)
class DriftSuiteResult:
    """Results of several methods on one pair of windows, with seconds per method.

    ``drifted`` is true when at least ``quorum`` methods drifted (one method's false alarm
    does not fire the loop's drift trigger).

    >>> import numpy as np
    >>> x = np.random.default_rng(1).normal(size=(200, 8))
    >>> drift_suite(x[:100], x[100:], methods=("ks",), quorum=1)["ks"].drifted
    False
    """

    results: tuple[DriftResult, ...]
    seconds: Mapping[str, float]
    n_reference: int
    n_current: int
    dim: int
    quorum: int
    drifted: bool

    def __getitem__(self, method: str) -> DriftResult:
        for r in self.results:
            if r.method == method:
                return r
        raise KeyError(method)

    @property
    def drifted_methods(self) -> tuple[str, ...]:
        return tuple(r.method for r in self.results if r.drifted)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds.values()))

    def to_dict(self) -> dict[str, Any]:
        return {"drifted": self.drifted, "quorum": self.quorum, "drifted_methods": list(self.drifted_methods),
                "n_reference": self.n_reference, "n_current": self.n_current, "dim": self.dim,
                "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
                "total_seconds": round(self.total_seconds, 4),
                "methods": {r.method: r.to_dict() for r in self.results}}


# ---------------------------------------------------------------------------- the suite

_METHODS: dict[str, Callable[..., DriftResult]] = {
    "ks": ks_drift, "psi": psi_drift, "psi_components": psi_components_drift, "mmd": mmd_drift,
    "classifier": classifier_drift, "centroid": centroid_drift, "norm": norm_drift,
    "nn_similarity": nn_similarity_drift,
}
DEFAULT_METHODS: tuple[str, ...] = tuple(_METHODS)


def drift_suite(reference: Any, current: Any, methods: Iterable[str] | None = None, *,
                options: Mapping[str, Mapping[str, Any]] | None = None, quorum: int = 2, seed: int = 0,
                progress: Callable[[str], None] | None = None) -> DriftSuiteResult:
    """Run ``methods`` (default: all of :data:`DEFAULT_METHODS`) and time each.

    ``options`` passes keyword arguments per method, e.g. ``{"mmd": {"max_rows": 500}}``;
    ``progress`` is called with each method's name before it runs.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(400, 8))
    >>> suite = drift_suite(x[:200], x[200:] + 1.0, methods=["ks", "mmd"])
    >>> suite.drifted, suite.drifted_methods
    (True, ('ks', 'mmd'))
    """
    names = list(methods) if methods is not None else list(DEFAULT_METHODS)
    unknown = [m for m in names if m not in _METHODS]
    if unknown or not names:
        raise ValidationError(f"unknown drift methods {unknown}; choose from {list(_METHODS)}", field="methods")
    options = dict(options or {})
    stray = [k for k in options if k not in names]
    if stray:
        raise ValidationError(f"options given for methods that do not run: {stray}", field="options")
    if quorum < 1:
        raise ValidationError("quorum must be at least 1", field="quorum")
    for name, kwargs in options.items():
        allowed = set(inspect.signature(_METHODS[name]).parameters) - {"reference", "current"}
        if set(kwargs) - allowed:
            raise ValidationError(f"unknown options {sorted(set(kwargs) - allowed)} for drift method {name!r}; "
                                  f"it takes {sorted(allowed)}", field="options")
    ref, cur = _pair(reference, current)
    # Validate once: each method's own check is skipped for arrays marked as checked.
    ref_checked, cur_checked = ref.view(_Checked), cur.view(_Checked)
    results, seconds = [], {}
    for name in names:
        if progress is not None:
            progress(name)
        kwargs = dict(options.get(name, {}))
        if "seed" in inspect.signature(_METHODS[name]).parameters:
            kwargs.setdefault("seed", seed)
        start = time.perf_counter()
        results.append(_METHODS[name](ref_checked, cur_checked, **kwargs))
        seconds[name] = time.perf_counter() - start
    n_drifted = sum(r.drifted for r in results)
    return DriftSuiteResult(tuple(results), seconds, len(ref), len(cur), ref.shape[1],
                            quorum, n_drifted >= min(quorum, len(results)))
