"""Oracle-based CE metrics (DiME §4.1): MNAC and the correlation difference CD.

An oracle predicts A binary attributes; its outputs on the images and on their CEs are arrays
(N, A) of bools or 0/1 values. The query attribute is the one the CE was asked to flip.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def mnac(oracle_before: np.ndarray, oracle_after: np.ndarray, exclude: list[int]) -> float:
    """Mean over samples of the number of attributes whose oracle output changed, ``exclude`` left out."""
    changed = np.asarray(oracle_before).astype(bool) != np.asarray(oracle_after).astype(bool)
    kept = np.setdiff1d(np.arange(changed.shape[1]), exclude)
    return float(changed[:, kept].sum(axis=1).mean())


def _pearson_columns(values: np.ndarray) -> np.ndarray:
    """Pearson correlation (A, A) between the columns of values (N, A); NaN where a column is constant."""
    values = np.asarray(values, dtype=np.float64)
    centered = values - values.mean(axis=0)
    norms = np.sqrt((centered**2).sum(axis=0))
    constant = np.ptp(values, axis=0) == 0
    norms[constant] = 1.0
    correlation = np.clip((centered.T @ centered) / np.outer(norms, norms), -1.0, 1.0)
    correlation[constant, :] = np.nan
    correlation[:, constant] = np.nan
    return correlation


def label_correlations(labels: np.ndarray) -> np.ndarray:
    """Pearson correlation (A, A) of binary ground-truth labels (N, A); NaN for constant labels."""
    return _pearson_columns(labels)


def correlation_difference(
    oracle_before: np.ndarray, oracle_after: np.ndarray, true_correlation: np.ndarray, query: int
) -> dict[str, Any]:
    """DiME eq. 9–10: CD = Σ_{a≠q} |c_qa − c^M_qa|.

    δ_a = O_a(CE) − O_a(x) ∈ {−1, 0, 1}; c^M_qa is the Pearson correlation over samples between δ_q
    and δ_a; c_qa comes from ``true_correlation`` (the (A, A) matrix of :func:`label_correlations`,
    or its row q, shape (A,)). Where δ_q or δ_a is constant c^M_qa is undefined: it counts as 0
    and a is listed in ``undefined``. Returns ``cd`` (float), ``per_attribute`` (A,) |c_qa − c^M_qa|
    (NaN at q), ``model_correlation`` (A,) c^M_qa (NaN at q) and ``undefined`` (list of a ≠ q).
    """
    delta = np.asarray(oracle_after).astype(np.int64) - np.asarray(oracle_before).astype(np.int64)
    true_row = np.asarray(true_correlation, dtype=np.float64)
    true_row = true_row[query] if true_row.ndim == 2 else true_row
    model_row = _pearson_columns(delta)[query]
    others = np.arange(delta.shape[1]) != query
    undefined = np.flatnonzero(others & np.isnan(model_row))
    model_row[undefined] = 0.0
    model_row[query] = np.nan
    per_attribute = np.abs(true_row - model_row)
    return {
        "cd": float(per_attribute[others].sum()),
        "per_attribute": per_attribute,
        "model_correlation": model_row,
        "undefined": undefined.tolist(),
    }
