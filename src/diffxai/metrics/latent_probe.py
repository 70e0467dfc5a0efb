"""Linear probes of a latent space: how much of a factor, or of the class, a linear read-out
of the codes recovers on held-out codes.

GCD (seed 001) moves every image along one straight line in the DiffAE's semantic space, so
a concept it can change globally must be (close to) linear there. These probes measure that:
held-out R² of a ridge regression for a factor, held-out accuracy of a logistic regression
for a label.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score

RIDGE_ALPHAS = np.logspace(-3, 3, 13)


def held_out_r2(model, codes: np.ndarray, target: np.ndarray, folds: int = 3, seed: int = 0) -> float:
    """Mean held-out R² over ``folds`` (shuffled by ``seed``) of a scikit-learn regressor from
    codes (N, D) to target (N,)."""
    split = KFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(model, codes, target, cv=split, scoring="r2").mean())


def linear_r2(codes: np.ndarray, target: np.ndarray, folds: int = 3, seed: int = 0) -> float:
    """:func:`held_out_r2` of a ridge regression (α chosen inside each training fold)."""
    return held_out_r2(RidgeCV(alphas=RIDGE_ALPHAS), codes, target, folds, seed)


def linear_accuracy(codes: np.ndarray, labels: np.ndarray, folds: int = 3, seed: int = 0) -> float:
    """Mean held-out accuracy over ``folds`` (stratified) of a logistic regression from codes
    (N, D) to integer labels (N,)."""
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(LogisticRegression(max_iter=5000), codes, labels, cv=split).mean())


def doubled_angle(magnitude: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """(N, 2): magnitude · (cos 2θ, sin 2θ) for angles θ (N,) in radians, the smooth code of an
    axis-like quantity (θ and θ + π are the same orientation)."""
    return np.stack([magnitude * np.cos(2 * angle), magnitude * np.sin(2 * angle)], axis=1)
