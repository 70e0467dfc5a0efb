"""Variance-based feature importance (Zhu, Jin, Fletcher: "Variance-based feature attribution with
diffusion constrained sampling", §3.2, §4.3, App. A and F).

Y is the classifier output, a vector in R^K (one-hot predicted class or class probabilities), and V a
feature whose values split the samples into groups (one group per feature value). The variance of a
vector is the trace of its covariance (the sum of per-component variances). By the law of total
variance, Var(Y) = E[Var(Y|V)] + Var[E(Y|V)] (unexplained + explained), and

* global score = Var[E(Y|V)] / Var(Y), in [0, 1];
* local score at V = v: 1 − Var(Y|V=v) / Var(Y), at most 1 and possibly negative;
* E_V[local score] = global score.

Expectations are taken under non-negative per-sample weights, normalised to sum 1, which give the
class-balanced (``balanced_weights``) and per-feature-value (``value_weights``) variants. The module
also holds the paper's companion tools: a stratified bootstrap of the scores (§4.3), CaCE (App. A),
the R² of a linear fit of logits on the feature (App. F) and the coverage of real data by generated
samples (Naeem et al. 2020, §4.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

TARGET_KINDS = ("class", "probability")
# A total variance below this fraction of E||Y||² is rounding noise of a constant Y (mean ≠ Y by ulps).
_ROUNDING = 1e-20
# Real rows per block of the coverage distance matrices: ≤ 1024 × 10,000 × 8 B ≈ 80 MB per block.
_COVERAGE_ROWS = 1024


def prediction_targets(probabilities: np.ndarray, kind: str) -> np.ndarray:
    """Y (N, K) float64 from class probabilities (N, K): "class" = one-hot argmax, "probability" = as is."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must have shape (N, K), got {probabilities.shape}")
    if kind == "class":
        return np.eye(probabilities.shape[1])[probabilities.argmax(axis=1)]
    if kind == "probability":
        return probabilities.copy()
    raise ValueError(f"kind must be one of {TARGET_KINDS}, got {kind!r}")


def _as_targets(y: np.ndarray) -> np.ndarray:
    """Y as float64 (N, K); a vector (N,) becomes (N, 1)."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or len(y) == 0:
        raise ValueError(f"y must have shape (N,) or (N, K) with N > 0, got {y.shape}")
    return y


def _normalised_weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    """Per-sample weights (n,) summing to 1; uniform when ``weights`` is None."""
    if weights is None:
        return np.full(n, 1.0 / n)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (n,):
        raise ValueError(f"weights must have shape ({n},), got {weights.shape}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError("weights must be finite and non-negative")
    total = weights.sum()
    if total <= 0:
        raise ValueError("weights must have a positive sum")
    return weights / total


@dataclass(frozen=True)
class _Grouped:
    """Samples sorted by group: y (N, K), weights (N,) summing to 1, group position (N,) of each
    sample, and per group (G,): the ids, sample counts and start offsets of its run."""

    y: np.ndarray
    weights: np.ndarray
    index: np.ndarray
    ids: np.ndarray
    counts: np.ndarray
    starts: np.ndarray


def _group(y: np.ndarray, groups: np.ndarray, weights: np.ndarray | None) -> _Grouped:
    """Validate y (N, K) / (N,), integer groups (N,) and weights (N,), and sort samples by group."""
    y = _as_targets(y)
    groups = np.asarray(groups)
    if groups.shape != (len(y),) or not np.issubdtype(groups.dtype, np.integer):
        raise ValueError(f"groups must be integer ids of shape ({len(y)},), got {groups.dtype}{groups.shape}")
    weights = _normalised_weights(weights, len(y))
    ids, index, counts = np.unique(groups, return_inverse=True, return_counts=True)
    order = np.argsort(index, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return _Grouped(y[order], weights[order], index[order], ids, counts, starts)


def _moments(y: np.ndarray, weights: np.ndarray, grouped: _Grouped) -> tuple[np.ndarray, ...]:
    """Per-group weight sums (B, G), weighted means (B, G, K) and within-group variances (B, G) of B
    weighted samples y (B, N, K), weights (B, N) laid out in ``grouped``'s group runs (nan for a group
    of zero weight)."""
    mass = np.add.reduceat(weights, grouped.starts, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.add.reduceat(weights[..., None] * y, grouped.starts, axis=1) / mass[..., None]
        deviation = y - mean[:, grouped.index]
        squares = np.einsum("bnk,bnk->bn", deviation, deviation)
        within = np.add.reduceat(weights * squares, grouped.starts, axis=1) / mass
    return mass, mean, within


def _decompose(mass: np.ndarray, mean: np.ndarray, within: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Explained Σ w_g ||μ_g − μ||² and unexplained Σ w_g Var_g variances (B,) from group masses (B, G)
    summing to 1, group means (B, G, K) and within-group variances (B, G)."""
    overall = np.einsum("bg,bgk->bk", mass, mean)
    spread = ((mean - overall[:, None]) ** 2).sum(axis=2)
    return (mass * spread).sum(axis=1), (mass * within).sum(axis=1)


def _scores(
    mass: np.ndarray, mean: np.ndarray, within: np.ndarray, tolerance: float
) -> tuple[np.ndarray, ...]:
    """Explained (B,), unexplained (B,), global (B,) and local (B, G) scores from group moments (see
    ``_decompose``); the scores are nan where the total variance is at most ``tolerance`` (undefined)."""
    explained, unexplained = _decompose(mass, mean, within)
    total = explained + unexplained
    defined = total > tolerance
    safe_total = np.where(defined, total, 1.0)
    global_scores = np.where(defined, explained / safe_total, np.nan)
    local_scores = np.where(defined[:, None], 1.0 - within / safe_total[:, None], np.nan)
    return explained, unexplained, global_scores, local_scores


def _tolerance(grouped: _Grouped) -> float:
    """Total variance (Y units²) below which Y counts as constant: a rounding fraction of E||Y||²."""
    return _ROUNDING * float(grouped.weights @ (grouped.y**2).sum(axis=1))


def _check_masses(grouped: _Grouped, mass: np.ndarray) -> None:
    """Raise if a group (mass (G,)) has zero total weight: its mean and local score are undefined."""
    empty = grouped.ids[mass <= 0]
    if len(empty):
        raise ValueError(f"groups {empty.tolist()} have zero total weight")


class UndefinedScore(ValueError):
    """Var(Y) = 0: the classifier output is constant over the samples, so every score is 0/0."""


def _undefined_error() -> UndefinedScore:
    return UndefinedScore("Var(Y) is 0 (the classifier output is constant): the variance score is undefined")


def variance_scores(y: np.ndarray, groups: np.ndarray, weights: np.ndarray | None = None) -> dict:
    """Variance decomposition of Y (N, K) (or (N,)) over integer groups (N,) under per-sample weights
    (N,) (default uniform; normalised to sum 1). Variances are traces, in Y units².

    Returns "groups" (G,) sorted ids, "mass" (G,), "counts" (G,), "mean" (G, K), "within_variance"
    (G,), and floats "total_variance", "explained_variance", "unexplained_variance", "global_score",
    with "local_scores" (G,). Raises ValueError when Var(Y) = 0.
    """
    grouped = _group(y, groups, weights)
    mass, mean, within = _moments(grouped.y[None], grouped.weights[None], grouped)
    _check_masses(grouped, mass[0])
    explained, unexplained, global_scores, local_scores = _scores(mass, mean, within, _tolerance(grouped))
    if np.isnan(global_scores[0]):
        raise _undefined_error()
    return {
        "groups": grouped.ids,
        "mass": mass[0],
        "counts": grouped.counts,
        "mean": mean[0],
        "within_variance": within[0],
        "total_variance": float(explained[0] + unexplained[0]),
        "explained_variance": float(explained[0]),
        "unexplained_variance": float(unexplained[0]),
        "global_score": float(global_scores[0]),
        "local_scores": local_scores[0],
    }


def balanced_weights(classes: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
    """Per-sample weights (N,) giving each present class of ``classes`` (N,) total mass 1/K_present,
    keeping the relative ``base`` weights (N,) (default uniform) within a class."""
    classes = np.asarray(classes)
    base = _normalised_weights(base, len(classes))
    _, index = np.unique(classes, return_inverse=True)
    class_mass = np.bincount(index, weights=base)
    if np.any(class_mass <= 0):
        raise ValueError("every class needs a positive total base weight")
    return base / (class_mass[index] * len(class_mass))


def value_weights(groups: np.ndarray) -> np.ndarray:
    """Per-sample weights (N,) giving every group (N,) the same total mass, whatever its size."""
    return balanced_weights(groups)


def _resample_indices(grouped: _Grouped, size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices (size, N) into the sorted samples: each position draws uniformly from its own group."""
    counts = grouped.counts[grouped.index]
    return grouped.starts[grouped.index] + rng.integers(0, counts, size=(size, len(counts)))


def bootstrap_scores(
    y: np.ndarray,
    groups: np.ndarray,
    weights: np.ndarray | None,
    n_resamples: int,
    rng: np.random.Generator,
    chunk: int = 256,
) -> dict:
    """Stratified bootstrap of the scores of ``variance_scores(y, groups, weights)``.

    Each resample redraws every group's samples with replacement (same group size), carrying their
    weights; each group keeps its original mass (only means and within variances are resampled, which
    do not depend on the scale of the weights). Resamples run in chunks of ``chunk`` (memory ~
    chunk × N × K × 8 B per array). A resample with zero total variance, or in which a group drew
    only zero-weight samples, has nan scores, which the variances (nanvar, ddof=1) skip.

    Returns floats "global_variance", "mean_local_variance" (mean over groups, paper Table 4),
    "local_variance" (G,), "global_ci95" [2.5 %, 97.5 %] percentiles, and "n_resamples".
    Results are reproducible for a given rng state and ``chunk``.
    """
    if n_resamples < 2 or chunk < 1:
        raise ValueError("need n_resamples >= 2 and chunk >= 1")
    grouped = _group(y, groups, weights)
    mass, mean, within = _moments(grouped.y[None], grouped.weights[None], grouped)
    _check_masses(grouped, mass[0])
    tolerance = _tolerance(grouped)
    if np.isnan(_scores(mass, mean, within, tolerance)[2][0]):
        raise _undefined_error()
    global_scores = np.empty(n_resamples)
    local_scores = np.empty((n_resamples, len(grouped.ids)))
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        indices = _resample_indices(grouped, stop - start, rng)
        _, res_mean, res_within = _moments(grouped.y[indices], grouped.weights[indices], grouped)
        fixed_mass = np.broadcast_to(mass, res_within.shape)
        _, _, global_scores[start:stop], local_scores[start:stop] = _scores(
            fixed_mass, res_mean, res_within, tolerance
        )
    local_variance = np.nanvar(local_scores, axis=0, ddof=1)
    return {
        "global_variance": float(np.nanvar(global_scores, ddof=1)),
        "local_variance": local_variance,
        "mean_local_variance": float(local_variance.mean()),
        "global_ci95": np.nanpercentile(global_scores, [2.5, 97.5]).tolist(),
        "n_resamples": n_resamples,
    }


def cace(positive_probability: np.ndarray, feature: np.ndarray, weights: np.ndarray | None = None) -> float:
    """CaCE of a binary feature (Goyal et al. 2019; paper App. A): weighted mean of the positive-class
    probability (N,) where feature (N,) == 1 minus where feature == 0."""
    probability = np.asarray(positive_probability, dtype=np.float64)
    feature = np.asarray(feature)
    if probability.ndim != 1 or feature.shape != probability.shape:
        raise ValueError(f"need matching 1-D arrays, got {probability.shape} and {feature.shape}")
    if not np.all(np.isin(feature, (0, 1))):
        raise ValueError("feature must be binary (0/1)")
    weights = _normalised_weights(weights, len(probability))
    means = []
    for value in (1, 0):
        present = feature == value
        if not present.any():
            raise ValueError(f"feature value {value} is absent: CaCE is undefined")
        means.append(np.average(probability[present], weights=weights[present]))
    return float(means[0] - means[1])


def _logit_target(logits: np.ndarray) -> np.ndarray:
    """Regression target from logits (N, K): the margin (N,) logits[:, 1] − logits[:, 0] for K = 2,
    all logits (N, K) for K > 2."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, K) with K >= 2, got {logits.shape}")
    return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits


def linear_r2(feature: np.ndarray, logits: np.ndarray) -> dict:
    """R² of a least-squares line of the logits (N, K) on the feature (N,) (paper App. F).

    K = 2: the logit margin is regressed, "slope" and "intercept" are floats. K > 2: all K logits are
    regressed, R² is variance-weighted over outputs, "slope" and "intercept" are lists of K floats.
    """
    x = np.asarray(feature, dtype=np.float64)
    target = _logit_target(logits)
    if x.ndim != 1 or len(x) != len(target):
        raise ValueError(f"feature must have shape ({len(target)},), got {x.shape}")
    model = LinearRegression().fit(x[:, None], target)
    r2 = r2_score(target, model.predict(x[:, None]), multioutput="variance_weighted")
    if target.ndim == 1:
        return {"r2": float(r2), "slope": float(model.coef_[0]), "intercept": float(model.intercept_)}
    return {"r2": float(r2), "slope": model.coef_[:, 0].tolist(), "intercept": model.intercept_.tolist()}


def _kth_neighbour_radii(real: np.ndarray, k: int) -> np.ndarray:
    """Euclidean distance (M,) from each real vector (M, D) to its k-th nearest other real vector."""
    radii = np.empty(len(real))
    for start in range(0, len(real), _COVERAGE_ROWS):
        rows = np.arange(start, min(start + _COVERAGE_ROWS, len(real)))
        distances = cdist(real[rows], real)
        distances[np.arange(len(rows)), rows] = np.inf
        radii[rows] = np.partition(distances, k - 1, axis=1)[:, k - 1]
    return radii


def _nearest_distances(queries: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Euclidean distance (Q,) from each query (Q, D) to its nearest point (P, D)."""
    nearest = np.empty(len(queries))
    for start in range(0, len(queries), _COVERAGE_ROWS):
        stop = min(start + _COVERAGE_ROWS, len(queries))
        nearest[start:stop] = cdist(queries[start:stop], points).min(axis=1)
    return nearest


def coverage(real: np.ndarray, fake: np.ndarray, k: int) -> float:
    """Coverage (Naeem et al. 2020): fraction of real vectors (M, D) with a fake vector (F, D) strictly
    closer than their k-th nearest other real vector (Euclidean). Distances are computed exactly
    (scipy ``cdist``) in blocks of real rows."""
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1] or len(fake) == 0:
        raise ValueError(f"need real (M, D) and non-empty fake (F, D), got {real.shape} and {fake.shape}")
    if not 1 <= k < len(real):
        raise ValueError(f"need 1 <= k < M = {len(real)}, got k = {k}")
    covered = _nearest_distances(real, fake) < _kth_neighbour_radii(real, k)
    return float(covered.mean())
