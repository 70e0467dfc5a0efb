"""Fréchet distance between Gaussians: closed forms, the scipy and clean-fid references, invariants."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg

from diffxai.metrics.frechet import feature_statistics, fid_from_features, frechet_distance


def random_covariance(rng: np.random.Generator, dim: int) -> np.ndarray:
    """A well-conditioned full-rank covariance."""
    factor = rng.normal(size=(dim, 2 * dim))
    return factor @ factor.T / (2 * dim) + 0.1 * np.eye(dim)


def scipy_reference(mu1, sigma1, mu2, sigma2) -> float:
    diff = mu1 - mu2
    root = scipy.linalg.sqrtm(sigma1 @ sigma2)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(root.real))


@pytest.fixture
def gaussians():
    rng = np.random.default_rng(0)
    dim = 8
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    return mu1, random_covariance(rng, dim), mu2, random_covariance(rng, dim)


def test_equals_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    std1, std2 = rng.uniform(0.1, 2, size=5), rng.uniform(0.1, 2, size=5)
    expected = np.sum((mu1 - mu2) ** 2 + std1**2 + std2**2 - 2 * std1 * std2)
    result = frechet_distance(mu1, np.diag(std1**2), mu2, np.diag(std2**2))
    assert result == pytest.approx(expected, rel=1e-10)


def test_equals_scipy_sqrtm_reference_for_full_rank_covariances(gaussians):
    assert frechet_distance(*gaussians) == pytest.approx(scipy_reference(*gaussians), rel=1e-6)


def test_equals_clean_fid(gaussians):
    from cleanfid import fid as cleanfid

    try:
        expected = cleanfid.frechet_distance(*gaussians)
    except TypeError as error:
        if "disp" not in str(error):
            raise
        # clean-fid is broken by a scipy without sqrtm(disp=...); ours must still work on this input.
        assert frechet_distance(*gaussians) == pytest.approx(scipy_reference(*gaussians), rel=1e-6)
        pytest.skip(f"clean-fid does not run with this scipy: {error}")
    assert frechet_distance(*gaussians) == pytest.approx(expected, rel=1e-6)


def test_is_zero_for_identical_feature_sets():
    features = np.random.default_rng(2).normal(size=(200, 16))
    assert fid_from_features(features, features) == pytest.approx(0.0, abs=1e-9)


def test_is_symmetric():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(100, 6)), rng.normal(1.0, 2.0, size=(80, 6))
    assert fid_from_features(a, b) == pytest.approx(fid_from_features(b, a), rel=1e-10)


def test_is_finite_and_non_negative_for_singular_covariances():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(5, 32)), rng.normal(size=(7, 32))  # fewer samples than dimensions
    assert np.linalg.matrix_rank(feature_statistics(a)[1]) < 32
    result = fid_from_features(a, b)
    assert np.isfinite(result)
    assert result >= 0


def test_of_a_translated_copy_is_the_squared_shift():
    features = np.random.default_rng(5).normal(size=(300, 4))
    shift = np.array([0.5, -1.0, 0.0, 2.0])
    assert fid_from_features(features, features + shift) == pytest.approx(shift @ shift, rel=1e-8)


def test_grows_with_the_mean_shift():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(200, 4)), rng.normal(size=(200, 4))
    distances = [fid_from_features(a, b + shift) for shift in (0.0, 0.5, 1.0, 2.0)]
    assert all(near < far for near, far in itertools.pairwise(distances))


def test_feature_statistics_are_mean_and_unbiased_covariance():
    features = np.random.default_rng(7).normal(size=(50, 3)).astype(np.float32)
    mean, covariance = feature_statistics(features)
    assert mean.dtype == np.float64 and covariance.shape == (3, 3)
    np.testing.assert_allclose(mean, features.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(covariance, np.cov(features.astype(np.float64), rowvar=False), rtol=1e-10)


def test_a_set_of_one_sample_has_no_covariance_and_gives_nan():
    features = np.random.default_rng(0).normal(size=(5, 3))
    assert np.isnan(fid_from_features(features[:1], features))
    assert np.isnan(fid_from_features(features, features[:1]))
