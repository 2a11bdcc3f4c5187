"""Per-component and 1-D drift statistics: KS, PSI, embedding-norm shift (see drift.py)."""
from __future__ import annotations

from typing import Any

import numpy as np

from tuneloop.errors import ValidationError
from tuneloop.monitor._drift_base import DriftResult, _pair, _subsample

PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25


def ks_drift(reference: Any, current: Any, *, alpha: float = 0.05, share_threshold: float = 0.2,
             max_rows: int | None = 5_000, seed: int = 0) -> DriftResult:
    """Two-sample Kolmogorov-Smirnov test per component; value = share of drifted components.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(400, 4))
    >>> round(ks_drift(x[:200], x[200:] + 1).value, 2)
    1.0
    """
    from scipy.stats import ks_2samp

    ref, cur = _pair(reference, current)
    rng = np.random.default_rng(seed)
    r, c = _subsample(ref, max_rows, rng), _subsample(cur, max_rows, rng)
    # scipy's exact p-values cost O(n*m) per component; beyond ~1e6 pairs the asymptotic
    # Kolmogorov distribution agrees to 3 decimals and is 3-6x faster.
    method = "auto" if len(r) * len(c) <= 1_000_000 else "asymp"
    res = ks_2samp(r, c, axis=0, method=method)
    stat, p = np.atleast_1d(res.statistic), np.atleast_1d(res.pvalue)
    flags = p < alpha
    share = float(flags.mean())
    top = np.argsort(-stat)[:5]
    details = {"alpha": alpha, "n_components": int(len(stat)), "n_drifted": int(flags.sum()),
               "statistic_mean": float(stat.mean()), "statistic_max": float(stat.max()),
               "top_components": [{"component": int(j), "statistic": float(stat[j]), "p_value": float(p[j])}
                                  for j in top],
               "rows": [len(r), len(c)], "p_method": method}
    return DriftResult("ks", share, share_threshold, share > share_threshold, None, details)


def psi(reference: Any, current: Any, *, bins: int = 10, eps: float = 1e-4) -> float:
    """Population Stability Index of two 1-D samples, bins at reference quantiles.

    PSI = sum((c_i - r_i) * ln(c_i / r_i)) over bins, proportions floored at ``eps`` so an
    empty bin does not make it infinite. Rule of thumb: < 0.1 stable, 0.1-0.25 moderate,
    > 0.25 significant.

    >>> import numpy as np
    >>> x = np.arange(1000.0)
    >>> psi(x, x)
    0.0
    """
    r, c = np.asarray(reference, dtype=np.float64).ravel(), np.asarray(current, dtype=np.float64).ravel()
    if len(r) < bins or len(c) == 0:
        raise ValidationError(f"psi needs at least {bins} reference values and 1 current value", field="reference")
    return float(_psi_matrix(r[:, None], c[:, None], bins=bins, eps=eps)[0])


def _psi_matrix(r: np.ndarray, c: np.ndarray, *, bins: int, eps: float) -> np.ndarray:
    """PSI per column of ``r`` (n, d) vs ``c`` (m, d)."""
    d = r.shape[1]
    inner = np.quantile(r, np.linspace(0, 1, bins + 1)[1:-1], axis=0)  # (bins-1, d)
    cols = np.arange(d)

    def proportions(x: np.ndarray) -> np.ndarray:
        # bin index = number of inner edges <= x (np.searchsorted side="right", per column)
        idx = np.zeros(x.shape, dtype=np.int64)
        for edge in inner:
            idx += x >= edge
        counts = np.bincount((idx * d + cols).ravel(), minlength=bins * d).reshape(bins, d)
        return np.maximum(counts / len(x), eps)

    pr, pc = proportions(r), proportions(c)
    return ((pc - pr) * np.log(pc / pr)).sum(axis=0)


def psi_p_value(value: Any, n: int, m: int, bins: int = 10) -> Any:
    """Asymptotic p-value of PSI under "same distribution": PSI / (1/n + 1/m) ~ chi^2(bins - 1).

    PSI is a symmetrized KL divergence, and like the G-test statistic it is chi-square
    distributed when both samples come from one distribution (Yurdakul, 2018). PSI's noise
    floor is therefore about (bins - 1) * (1/n + 1/m): 0.06 at 300 rows per window, which
    is why a bare 0.1 threshold false-alarms on small windows.

    >>> round(float(psi_p_value(0.1, 300, 300)), 3), float(psi_p_value(0.1, 3000, 3000)) < 1e-20
    (0.091, True)
    """
    from scipy.stats import chi2

    return chi2.sf(np.asarray(value, dtype=np.float64) / (1.0 / n + 1.0 / m), bins - 1)


def psi_drift(reference: Any, current: Any, *, projection: str | np.ndarray = "centroid_distance",
              threshold: float = PSI_MODERATE, alpha: float = 0.05, bins: int = 10,
              eps: float = 1e-4) -> DriftResult:
    """PSI of a 1-D projection of the embeddings (default: euclidean distance to the reference mean).

    ``projection`` is ``"centroid_distance"`` (sees mean shifts, variance changes and new
    clusters), ``"pc1"`` (the reference's first principal component) or a vector of length d.
    ``drifted`` needs PSI > ``threshold`` and :func:`psi_p_value` < ``alpha``.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(4000, 8))
    >>> psi_drift(x[:2000], x[2000:] * 1.5).drifted
    True
    """
    ref, cur = _pair(reference, current)
    r, c = _project(ref, cur, projection)
    value = float(_psi_matrix(r[:, None], c[:, None], bins=bins, eps=eps)[0])
    severity = "significant" if value > PSI_SIGNIFICANT else "moderate" if value > PSI_MODERATE else "none"
    name = projection if isinstance(projection, str) else "vector"
    p = float(psi_p_value(value, len(r), len(c), bins))
    details = {"alpha": alpha, "projection": name, "bins": bins, "severity": severity,
               "expected_null_psi": (bins - 1) * (1 / len(r) + 1 / len(c)),
               "reference_mean": float(r.mean()), "current_mean": float(c.mean())}
    return DriftResult("psi", value, threshold, bool(value > threshold and p < alpha), p, details)


def _project(ref: np.ndarray, cur: np.ndarray, projection: str | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(projection, str) and projection == "centroid_distance":
        mu = ref.mean(axis=0, dtype=np.float64).astype(ref.dtype)

        def distance(x: np.ndarray) -> np.ndarray:
            # |x - mu|^2 = |x|^2 - 2 x.mu + |mu|^2: no (n, d) temporary for 100k-row windows
            d2 = np.einsum("ij,ij->i", x, x) - 2.0 * (x @ mu) + float(mu @ mu)
            return np.sqrt(np.maximum(d2, 0.0)).astype(np.float64)

        return distance(ref), distance(cur)
    if isinstance(projection, str) and projection == "pc1":
        sample = _subsample(ref, 20_000, np.random.default_rng(0)).astype(np.float64)
        centred = sample - sample.mean(axis=0)
        vector = np.linalg.svd(centred, full_matrices=False)[2][0]
    elif isinstance(projection, str):
        raise ValidationError(f"unknown projection {projection!r}: use 'centroid_distance', 'pc1' or a vector",
                              field="projection")
    else:
        vector = np.asarray(projection, dtype=np.float64).ravel()
        if vector.shape[0] != ref.shape[1]:
            raise ValidationError(f"projection vector has length {vector.shape[0]}, expected {ref.shape[1]}",
                                  field="projection")
    return ref @ vector, cur @ vector


def psi_components_drift(reference: Any, current: Any, *, component_threshold: float = PSI_MODERATE,
                         share_threshold: float = 0.2, alpha: float = 0.05, bins: int = 10, eps: float = 1e-4,
                         max_rows: int | None = 5_000, seed: int = 0) -> DriftResult:
    """PSI per component; value = share of components with PSI > ``component_threshold`` (and p < alpha).

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(4000, 8))
    >>> psi_components_drift(x[:2000], x[2000:] + 0.5).value
    1.0
    """
    ref, cur = _pair(reference, current)
    rng = np.random.default_rng(seed)
    r, c = _subsample(ref, max_rows, rng), _subsample(cur, max_rows, rng)
    values = _psi_matrix(r, c, bins=bins, eps=eps)
    flags = (values > component_threshold) & (psi_p_value(values, len(r), len(c), bins) < alpha)
    share = float(flags.mean())
    top = np.argsort(-values)[:5]
    details = {"alpha": alpha, "component_threshold": component_threshold, "n_components": int(len(values)),
               "n_drifted": int(flags.sum()), "psi_mean": float(values.mean()), "psi_max": float(values.max()),
               "top_components": [{"component": int(j), "psi": float(values[j])} for j in top],
               "rows": [len(r), len(c)]}
    return DriftResult("psi_components", share, share_threshold, share > share_threshold, None, details)


def norm_drift(reference: Any, current: Any, *, threshold: float = 0.02, alpha: float = 0.05) -> DriftResult:
    """Relative shift of the mean L2 norm (seed 001's "embedding norm drift"), Welch t-test.

    ``value`` = |mean norm (current) / mean norm (reference) - 1|. L2-normalized embedders
    (all-MiniLM-L6-v2 by default) make every norm 1, so this is 0 for them.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(400, 8))
    >>> norm_drift(x[:200], x[200:] * 1.5).drifted
    True
    """
    from scipy.stats import ttest_ind

    ref, cur = _pair(reference, current)
    nr = np.linalg.norm(ref, axis=1).astype(np.float64)
    nc = np.linalg.norm(cur, axis=1).astype(np.float64)
    mr, mc = float(nr.mean()), float(nc.mean())
    signed = mc / mr - 1.0 if mr > 0 else 0.0
    if max(nr.std(), nc.std()) <= 1e-6 * max(mr, mc, 1e-12):
        # Constant norms (an L2-normalizing embedder; float32 rounding left ~1e-7 jitter): a
        # t-test on the jitter would call noise significant.
        p = 1.0 if np.isclose(mr, mc, rtol=1e-5) else 0.0
    else:
        p = float(ttest_ind(nc, nr, equal_var=False).pvalue)
    details = {"alpha": alpha, "signed_shift": signed, "reference_mean_norm": mr, "current_mean_norm": mc,
               "reference_std_norm": float(nr.std()), "current_std_norm": float(nc.std())}
    value = abs(signed)
    return DriftResult("norm", value, threshold, bool(value > threshold and p < alpha), p, details)
