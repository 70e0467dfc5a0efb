"""Fréchet distance between Gaussians fitted to two feature sets (FID in any feature space).

clean-fid computes the matrix square root with ``scipy.linalg.sqrtm(..., disp=False)``,
an argument scipy 1.18 removed. We need only the trace of sqrt(Σ1 Σ2), which equals
the sum of square roots of the eigenvalues of the symmetric PSD matrix
sqrt(Σ1) Σ2 sqrt(Σ1); computing it with ``eigh`` is stable for singular
covariances (few samples, many features) and independent of the scipy version.
"""

from __future__ import annotations

import numpy as np


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D), float64."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||μ1 − μ2||² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2})."""
    root1 = _sqrt_psd(np.atleast_2d(sigma1))
    cross = np.linalg.eigvalsh(root1 @ np.atleast_2d(sigma2) @ root1)
    trace_sqrt = np.sqrt(np.clip(cross, 0, None)).sum()
    diff = np.atleast_1d(mu1) - np.atleast_1d(mu2)
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt
    return float(max(value, 0.0))


def fid_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between two feature sets (N_a, D) and (N_b, D); NaN unless both hold
    at least 2 samples (a covariance needs two)."""
    if min(len(features_a), len(features_b)) < 2:
        return float("nan")
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))
