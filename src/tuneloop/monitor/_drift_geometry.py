"""Drift methods on the geometry of the embedding cloud: MMD, domain classifier, centroid, novelty."""
from __future__ import annotations

from typing import Any

import numpy as np

from tuneloop.errors import ValidationError
from tuneloop.monitor._drift_base import (DriftResult, _pair, _perm_p, _permutation_labels, _subsample,
                                          _unit_rows)


def _rbf_kernel(z: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    z = z.astype(np.float32, copy=False)
    sq = np.einsum("ij,ij->i", z, z, dtype=np.float64)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T).astype(np.float64)
    np.maximum(d2, 0.0, out=d2)
    # Median heuristic on a random sample of distinct pairs: the exact median over all
    # N^2/2 pairs costs more than the kernel itself and moves the bandwidth by < 1%.
    n = len(z)
    i, j = rng.integers(0, n, size=(2, min(200_000, n * n)))
    keep = i != j
    median = float(np.median(d2[i[keep], j[keep]]))
    gamma = 1.0 / median if median > 0 else 1.0
    np.multiply(d2, -gamma, out=d2)
    np.exp(d2, out=d2)
    return d2, gamma


def _mmd2_unbiased(kernel: np.ndarray, labels: np.ndarray, n: int, m: int) -> np.ndarray:
    """MMD^2_u for each label column (1 = reference row), kernel with a zeroed diagonal."""
    row_sums = kernel.sum(axis=1)
    total = row_sums.sum()
    k_lab = kernel @ labels                       # (N, B)
    xx = np.einsum("ib,ib->b", labels, k_lab)     # sum over reference pairs
    x_all = labels.T @ row_sums                   # sum over (reference, anything) pairs
    xy = x_all - xx
    yy = total - 2.0 * x_all + xx
    return xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2.0 * xy / (n * m)


def _cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise 1 - cos(a_i, b_i) for two (k, d) arrays."""
    num = np.einsum("ij,ij->i", a, b)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return 1.0 - num / np.maximum(den, 1e-12)


def mmd_drift(reference: Any, current: Any, *, alpha: float = 0.05, max_rows: int | None = 1_000,
              n_permutations: int = 200, min_value: float = 0.0, seed: int = 0) -> DriftResult:
    """Unbiased MMD^2 with an RBF kernel (median heuristic) and a permutation test.

    The kernel is exp(-|x - y|^2 / median^2), median over pooled pairwise distances (as
    Evidently). At most ``max_rows`` rows per window enter the (2k x 2k) kernel matrix, so
    the cost is bounded whatever the window size; ``threshold`` is the permutation null's
    1 - alpha quantile and ``drifted`` means p < alpha (and MMD^2 > ``min_value``).

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(400, 8))
    >>> mmd_drift(x[:200], x[200:] + 0.5).drifted
    True
    """
    ref, cur = _pair(reference, current)
    rng = np.random.default_rng(seed)
    r, c = _subsample(ref, max_rows, rng), _subsample(cur, max_rows, rng)
    n, m = len(r), len(c)
    kernel, gamma = _rbf_kernel(np.vstack([r, c]), rng)
    np.fill_diagonal(kernel, 0.0)
    observed_labels = np.zeros((n + m, 1))
    observed_labels[:n] = 1.0
    labels = np.hstack([observed_labels, _permutation_labels(n, m, n_permutations, rng)])
    stats = _mmd2_unbiased(kernel, labels, n, m)
    observed, null = float(stats[0]), stats[1:]
    p = _perm_p(observed, null)
    critical = float(np.quantile(null, 1 - alpha))
    details = {"alpha": alpha, "gamma": gamma, "n_permutations": n_permutations, "rows": [n, m],
               "min_value": min_value, "null_mean": float(null.mean())}
    return DriftResult("mmd", max(observed, 0.0), critical, bool(p < alpha and observed > min_value), p, details)


def classifier_drift(reference: Any, current: Any, *, threshold: float = 0.55, alpha: float = 0.05,
                     max_rows: int | None = 2_500, folds: int = 3, c: float = 1.0, seed: int = 0) -> DriftResult:
    """Domain classifier: out-of-fold ROC AUC of a logistic regression telling current from reference.

    AUC 0.5 means the windows cannot be told apart. ``p_value`` is the one-sided Mann-Whitney
    test of the out-of-fold scores (AUC > 0.5); ``drifted`` needs AUC > ``threshold`` (0.55,
    Evidently's default) and p < ``alpha``.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(600, 8))
    >>> classifier_drift(x[:300], x[300:] + 0.5).drifted
    True
    """
    from scipy.stats import mannwhitneyu
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ref, cur = _pair(reference, current)
    rng = np.random.default_rng(seed)
    r, cu = _subsample(ref, max_rows, rng), _subsample(cur, max_rows, rng)
    folds = int(min(folds, len(r), len(cu)))
    if folds < 2:
        raise ValidationError("classifier drift needs at least 2 embeddings per window", field="reference")
    x = np.vstack([r, cu]).astype(np.float64)
    y = np.r_[np.zeros(len(r)), np.ones(len(cu))]
    # liblinear: 3-4x faster than lbfgs here (400 x 16 and 5,000 x 384 alike), same AUC.
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, solver="liblinear"))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    # Out-of-fold scores: every row is scored by a model that never saw it, so AUC is ~0.5
    # when nothing changed even though 384 features can overfit a few hundred rows.
    scores = cross_val_predict(model, x, y, cv=cv, method="decision_function")
    auc = float(roc_auc_score(y, scores))
    p = float(mannwhitneyu(scores[y == 1], scores[y == 0], alternative="greater").pvalue)
    details = {"alpha": alpha, "folds": folds, "rows": [len(r), len(cu)], "C": c}
    return DriftResult("classifier", auc, threshold, bool(auc > threshold and p < alpha), p, details)


def centroid_drift(reference: Any, current: Any, *, threshold: float = 0.01, alpha: float = 0.05,
                   max_rows: int | None = 2_000, n_permutations: int = 200, seed: int = 0) -> DriftResult:
    """Cosine distance between the mean embeddings of the two windows (all rows).

    ``p_value`` comes from a permutation test of the same statistic on at most ``max_rows``
    rows per window; ``drifted`` needs distance > ``threshold`` and p < ``alpha``.

    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(400, 8)) + 1.0
    >>> centroid_drift(x[:200], x[200:] + np.eye(8)[0]).drifted
    True
    """
    ref, cur = _pair(reference, current)
    mu_r, mu_c = ref.mean(axis=0, dtype=np.float64), cur.mean(axis=0, dtype=np.float64)
    value = float(_cosine_distance(mu_r[None], mu_c[None])[0])
    rng = np.random.default_rng(seed)
    r, c = _subsample(ref, max_rows, rng), _subsample(cur, max_rows, rng)
    n, m = len(r), len(c)
    z = np.vstack([r, c]).astype(np.float64)
    labels = np.hstack([np.r_[np.ones(n), np.zeros(m)][:, None], _permutation_labels(n, m, n_permutations, rng)])
    # Window means for all permutations at once: one (B, N) @ (N, d) product.
    sums_r = labels.T @ z
    means_r = sums_r / n
    means_c = (z.sum(axis=0)[None] - sums_r) / m
    stats = _cosine_distance(means_r, means_c)
    p = _perm_p(float(stats[0]), stats[1:])
    details = {"alpha": alpha, "n_permutations": n_permutations, "rows": [n, m],
               "reference_centroid_norm": float(np.linalg.norm(mu_r)),
               "current_centroid_norm": float(np.linalg.norm(mu_c)),
               "euclidean_distance": float(np.linalg.norm(mu_r - mu_c))}
    return DriftResult("centroid", value, threshold, bool(value > threshold and p < alpha), p, details)


def nn_similarity_drift(reference: Any, current: Any, *, threshold: float = 0.02, alpha: float = 0.05,
                        max_history: int | None = 10_000, max_queries: int = 1_000, seed: int = 0) -> DriftResult:
    """How much less similar new queries are to history (seed 001's mean cosine to history).

    Each of at most ``max_queries`` current rows gets its maximum cosine similarity to a
    reference sample (the history); the same is done for held-out reference rows (the
    baseline). ``value`` = baseline mean - current mean (a drop means novel queries);
    ``drifted`` needs drop > ``threshold`` and a one-sided Mann-Whitney p < ``alpha``.

    >>> import numpy as np
    >>> x, e0 = np.random.default_rng(0).normal(size=(600, 8)), 4 * np.eye(8)[0]
    >>> nn_similarity_drift(x[:400] + e0, x[400:] - e0).drifted
    True
    """
    from scipy.stats import mannwhitneyu

    ref, cur = _pair(reference, current)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ref))
    n_hold = min(max_queries, len(ref) // 2)
    holdout, history_idx = ref[order[:n_hold]], order[n_hold:]
    if max_history is not None:
        history_idx = history_idx[:max_history]
    history = _unit_rows(ref[np.sort(history_idx)].astype(np.float32))
    queries = _unit_rows(_subsample(cur, max_queries, rng).astype(np.float32))

    def max_sim(q: np.ndarray) -> np.ndarray:
        return np.concatenate([(q[i:i + 512] @ history.T).max(axis=1) for i in range(0, len(q), 512)])

    base, now = max_sim(_unit_rows(holdout.astype(np.float32))), max_sim(queries)
    drop = float(base.mean() - now.mean())
    p = float(mannwhitneyu(base, now, alternative="greater").pvalue)
    details = {"alpha": alpha, "mean_similarity_reference": float(base.mean()),
               "mean_similarity_current": float(now.mean()), "rows": [len(history), len(holdout), len(queries)]}
    return DriftResult("nn_similarity", drop, threshold, bool(drop > threshold and p < alpha), p, details)
