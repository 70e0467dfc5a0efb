"""Linear probes of a latent space on codes whose geometry is known."""

from __future__ import annotations

import numpy as np
import pytest

from diffxai.metrics.latent_probe import doubled_angle, linear_accuracy, linear_r2


@pytest.fixture(scope="module")
def codes() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(600, 8))


def test_a_linear_factor_is_recovered_and_a_norm_is_not(codes):
    linear = codes @ np.arange(1.0, 9.0)
    radial = np.linalg.norm(codes[:, :2], axis=1)  # rotation-invariant, like an aspect ratio
    assert linear_r2(codes, linear) > 0.999
    assert linear_r2(codes, radial) < 0.05


def test_a_half_space_label_is_linear_and_a_radial_label_is_not(codes):
    assert linear_accuracy(codes, (codes[:, 0] - codes[:, 3] > 0.2).astype(int)) > 0.95
    radial = np.linalg.norm(codes[:, :2], axis=1)
    assert linear_accuracy(codes, (radial > np.median(radial)).astype(int)) < 0.6


def test_doubled_angle_identifies_opposite_orientations_and_keeps_the_magnitude():
    angle = np.array([0.0, np.pi / 4, np.pi / 2, 0.3])
    magnitude = np.array([1.0, 2.0, 0.5, 1.5])
    vectors = doubled_angle(magnitude, angle)
    np.testing.assert_allclose(vectors[:3], [[1.0, 0.0], [0.0, 2.0], [-0.5, 0.0]], atol=1e-12)
    np.testing.assert_allclose(doubled_angle(magnitude, angle + np.pi), vectors, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), magnitude)


def test_the_probes_score_held_out_codes_not_the_ones_they_fit():
    """Random targets on nearly as many dimensions as codes: held-out codes score below the mean's
    R² of 0 and near chance accuracy, where a fit's own codes score R² >= 0 (a ridge with an
    intercept never fits worse than the mean) and accuracy 1."""
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(60, 50))
    noise = rng.normal(size=60)
    assert linear_r2(codes, noise) < 0.0
    assert linear_accuracy(codes, (noise > 0).astype(int)) < 0.75
