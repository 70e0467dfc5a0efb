"""Variance-based feature importance: hand examples, the law of total variance, weights, bootstrap,
CaCE, linear R² and coverage."""

from __future__ import annotations

import numpy as np
import pytest

from diffxai.methods.variance_score import (
    balanced_weights,
    bootstrap_scores,
    cace,
    coverage,
    linear_r2,
    prediction_targets,
    value_weights,
    variance_scores,
)


def one_hot(classes: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k)[classes]


def random_problem(seed: int, n: int = 300, groups: int = 6, k: int = 3):
    """Probability-like Y (n, k), integer groups (n,) and random positive weights (n,)."""
    rng = np.random.default_rng(seed)
    group = rng.integers(-3, groups - 3, size=n)
    logits = rng.normal(size=(n, k)) + group[:, None] * np.arange(k) / groups
    y = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, group, rng.uniform(0.1, 2.0, size=n)


def bernoulli_groups(rng: np.random.Generator, probabilities: np.ndarray, size: int):
    """One-hot Y (G·size, 2) with class 1 drawn with probability p_g inside group g, and groups (G·size,)."""
    groups = np.repeat(np.arange(len(probabilities)), size)
    classes = (rng.random(len(groups)) < probabilities[groups]).astype(int)
    return one_hot(classes, 2), groups


# prediction_targets


def test_class_targets_are_one_hot_argmax():
    probabilities = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    np.testing.assert_array_equal(prediction_targets(probabilities, "class"), [[0, 1, 0], [1, 0, 0]])


def test_probability_targets_are_the_probabilities():
    probabilities = np.array([[0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    targets = prediction_targets(probabilities, "probability")
    assert targets.dtype == np.float64
    np.testing.assert_allclose(targets, probabilities)


def test_unknown_target_kind_names_allowed_kinds():
    with pytest.raises(ValueError, match="probability"):
        prediction_targets(np.ones((2, 2)) / 2, "logit")


# variance_scores


def test_hand_computed_two_unequal_groups():
    # group 7: y = 0, 0, 1 (mass 3/5, mean 1/3, Var 2/9); group -2: y = 1, 1 (mass 2/5, mean 1, Var 0)
    # μ = 3/5; explained = 3/5·(4/15)² + 2/5·(2/5)² = 8/75; unexplained = 3/5·2/9 = 2/15; total = 6/25
    y = np.array([[0.0], [0.0], [1.0], [1.0], [1.0]])
    result = variance_scores(y, np.array([7, 7, 7, -2, -2]))
    np.testing.assert_array_equal(result["groups"], [-2, 7])
    np.testing.assert_array_equal(result["counts"], [2, 3])
    np.testing.assert_allclose(result["mass"], [2 / 5, 3 / 5])
    np.testing.assert_allclose(result["mean"], [[1.0], [1 / 3]])
    np.testing.assert_allclose(result["within_variance"], [0.0, 2 / 9], atol=1e-15)
    assert result["explained_variance"] == pytest.approx(8 / 75)
    assert result["unexplained_variance"] == pytest.approx(2 / 15)
    assert result["total_variance"] == pytest.approx(6 / 25)
    assert result["global_score"] == pytest.approx(4 / 9)
    np.testing.assert_allclose(result["local_scores"], [1.0, 2 / 27])
    assert isinstance(result["global_score"], float)


def test_deterministic_function_of_feature_scores_one():
    groups = np.repeat([3, 1, 4, 5], [5, 2, 7, 1])
    y = one_hot(np.array([0, 2, 1, 2])[np.searchsorted([1, 3, 4, 5], groups)], 3)
    result = variance_scores(y, groups)
    assert result["global_score"] == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(result["local_scores"], 1.0, atol=1e-12)


def test_independent_of_feature_scores_zero():
    classes = np.concatenate([np.tile([0, 1, 1, 2], 1), np.tile([0, 1, 1, 2], 3), np.tile([2, 1, 0, 1], 2)])
    groups = np.repeat([0, 1, 2], [4, 12, 8])
    result = variance_scores(one_hot(classes, 3), groups)
    assert result["global_score"] == pytest.approx(0.0, abs=1e-15)
    np.testing.assert_allclose(result["local_scores"], 0.0, atol=1e-15)


def test_local_scores_average_to_global_under_group_mass():
    y, groups, weights = random_problem(0)
    result = variance_scores(y, groups, weights)
    assert result["mass"] @ result["local_scores"] == pytest.approx(result["global_score"], rel=1e-12)
    assert result["mass"].sum() == pytest.approx(1.0)
    assert 0.0 < result["global_score"] < 1.0


def test_total_equals_directly_computed_weighted_variance():
    y, groups, weights = random_problem(1)
    mean = np.average(y, axis=0, weights=weights)
    direct = sum(np.average((y[:, j] - mean[j]) ** 2, weights=weights) for j in range(y.shape[1]))
    result = variance_scores(y, groups, weights)
    assert result["total_variance"] == pytest.approx(direct, rel=1e-12)
    assert result["explained_variance"] + result["unexplained_variance"] == pytest.approx(direct, rel=1e-12)


def test_group_means_and_variances_match_direct_weighted_statistics():
    y, groups, weights = random_problem(2)
    result = variance_scores(y, groups, weights)
    for position, group in enumerate(result["groups"]):
        inside = groups == group
        mean = np.average(y[inside], axis=0, weights=weights[inside])
        variance = np.average(((y[inside] - mean) ** 2).sum(axis=1), weights=weights[inside])
        np.testing.assert_allclose(result["mean"][position], mean, rtol=1e-12)
        assert result["within_variance"][position] == pytest.approx(variance, rel=1e-10)
        assert result["mass"][position] == pytest.approx(weights[inside].sum() / weights.sum())


def test_integer_weight_equals_duplicated_sample():
    y, groups, _ = random_problem(3, n=60)
    repeats = np.random.default_rng(3).integers(1, 4, size=60)
    weighted = variance_scores(y, groups, repeats.astype(float))
    duplicated = variance_scores(np.repeat(y, repeats, axis=0), np.repeat(groups, repeats))
    assert weighted["global_score"] == pytest.approx(duplicated["global_score"], rel=1e-12)
    np.testing.assert_allclose(weighted["local_scores"], duplicated["local_scores"], rtol=1e-12)


def test_weights_are_scale_free_and_default_uniform():
    y, groups, weights = random_problem(4)
    assert variance_scores(y, groups, 7.0 * weights)["global_score"] == pytest.approx(
        variance_scores(y, groups, weights)["global_score"], rel=1e-12
    )
    assert variance_scores(y, groups)["global_score"] == pytest.approx(
        variance_scores(y, groups, np.ones(len(y)))["global_score"], rel=1e-12
    )


def test_binary_one_hot_equals_scalar_prediction():
    rng = np.random.default_rng(5)
    groups = rng.integers(0, 5, size=200)
    classes = (rng.random(200) < 0.2 + 0.15 * groups).astype(int)
    vector = variance_scores(one_hot(classes, 2), groups)
    scalar = variance_scores(classes.astype(float), groups)
    assert vector["total_variance"] == pytest.approx(2 * scalar["total_variance"], rel=1e-12)
    assert vector["global_score"] == pytest.approx(scalar["global_score"], rel=1e-12)
    np.testing.assert_allclose(vector["local_scores"], scalar["local_scores"], rtol=1e-12)


def test_size_one_group_has_zero_within_variance():
    result = variance_scores(np.array([0.0, 1.0, 1.0]), np.array([0, 0, 1]))
    assert result["within_variance"][1] == 0.0
    assert result["local_scores"][1] == 1.0


@pytest.mark.parametrize("y", [one_hot(np.full(6, 1), 3), np.tile([0.3, 0.7], (6, 1))])
def test_constant_classifier_is_undefined(y):
    with pytest.raises(ValueError, match="undefined"):
        variance_scores(y, np.array([0, 0, 1, 1, 2, 2]))


def test_invalid_weights_and_groups_raise():
    y, groups = np.array([0.0, 1.0, 1.0]), np.array([0, 1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        variance_scores(y, groups, np.array([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="zero total weight"):
        variance_scores(y, groups, np.array([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="integer"):
        variance_scores(y, groups.astype(float))


# weights


def test_balanced_weights_give_each_class_equal_mass_and_keep_relative_weights():
    classes = np.array([0, 0, 0, 5, 5, 9])
    base = np.array([1.0, 2.0, 3.0, 1.0, 1.0, 4.0])
    weights = balanced_weights(classes, base)
    for value in (0, 5, 9):
        inside = classes == value
        assert weights[inside].sum() == pytest.approx(1 / 3)
        np.testing.assert_allclose(weights[inside] / weights[inside].sum(), base[inside] / base[inside].sum())


def test_balanced_weights_on_balanced_classes_are_uniform():
    np.testing.assert_allclose(balanced_weights(np.array([1, 2, 2, 1, 3, 3])), np.full(6, 1 / 6))


def test_balanced_weights_default_base_is_uniform_within_class():
    np.testing.assert_allclose(balanced_weights(np.array([0, 0, 0, 1])), [1 / 6, 1 / 6, 1 / 6, 1 / 2])


def test_value_weights_give_equal_group_masses():
    groups = np.array([4, 4, 4, 4, 2, 8, 8])
    weights = value_weights(groups)
    masses = [weights[groups == g].sum() for g in (2, 4, 8)]
    np.testing.assert_allclose(masses, 1 / 3)
    np.testing.assert_allclose(variance_scores(np.arange(7.0), groups, weights)["mass"], 1 / 3)


# bootstrap_scores


def test_bootstrap_of_deterministic_prediction_has_zero_variance():
    rng = np.random.default_rng(6)
    groups = np.repeat(np.arange(6), [3, 10, 1, 7, 4, 8])
    y = one_hot(groups % 2, 2)
    weights = rng.uniform(0.1, 3.0, size=len(groups))
    result = bootstrap_scores(y, groups, weights, 500, np.random.default_rng(0))
    assert result["global_variance"] == pytest.approx(0.0, abs=1e-24)
    np.testing.assert_allclose(result["local_variance"], 0.0, atol=1e-24)
    np.testing.assert_allclose(result["global_ci95"], [1.0, 1.0])


def test_bootstrap_keeps_group_masses_fixed():
    # Group 0 is constant, so only its mass could vary between resamples: how its total weight of 101
    # is spread over its samples must not matter when each group keeps its original mass.
    y, groups = bernoulli_groups(np.random.default_rng(19), np.array([0.0, 0.4, 0.7]), 30)
    spread = np.ones(len(groups))
    spread[:30] = np.r_[100.0, np.full(29, 1 / 29)]
    even = np.ones(len(groups))
    even[:30] = 101 / 30
    skewed = bootstrap_scores(y, groups, spread, 400, np.random.default_rng(20))
    uniform = bootstrap_scores(y, groups, even, 400, np.random.default_rng(20))
    assert skewed["global_variance"] == pytest.approx(uniform["global_variance"], rel=1e-9)
    np.testing.assert_allclose(skewed["local_variance"], uniform["local_variance"], rtol=1e-9)


def test_bootstrap_variance_shrinks_like_one_over_group_size():
    probabilities = np.linspace(0.2, 0.8, 5)
    variances = {}
    for size in (50, 800):
        y, groups = bernoulli_groups(np.random.default_rng(size), probabilities, size)
        variances[size] = bootstrap_scores(y, groups, None, 1000, np.random.default_rng(7))
    global_ratio = variances[50]["global_variance"] / variances[800]["global_variance"]
    local_ratio = variances[50]["mean_local_variance"] / variances[800]["mean_local_variance"]
    assert 16 / 4 < global_ratio < 16 * 4
    assert 16 / 4 < local_ratio < 16 * 4


def test_bootstrap_local_variance_matches_fresh_draws():
    probabilities, size = np.array([0.3, 0.8]), 200
    draws = (bernoulli_groups(np.random.default_rng(seed), probabilities, size) for seed in range(2000))
    fresh = [variance_scores(y, groups)["local_scores"][0] for y, groups in draws]
    y, groups = bernoulli_groups(np.random.default_rng(12345), probabilities, size)
    bootstrap = bootstrap_scores(y, groups, None, 2000, np.random.default_rng(8))["local_variance"][0]
    assert 0.5 < bootstrap / np.var(fresh, ddof=1) < 2.0


def test_bootstrap_ci_brackets_the_point_estimate():
    y, groups = bernoulli_groups(np.random.default_rng(9), np.array([0.1, 0.5, 0.9]), 100)
    lo, hi = bootstrap_scores(y, groups, None, 1000, np.random.default_rng(10))["global_ci95"]
    assert lo < variance_scores(y, groups)["global_score"] < hi


def test_bootstrap_is_reproducible_for_a_seed():
    y, groups, weights = random_problem(11)
    first = bootstrap_scores(y, groups, weights, 300, np.random.default_rng(1), chunk=64)
    again = bootstrap_scores(y, groups, weights, 300, np.random.default_rng(1), chunk=64)
    other = bootstrap_scores(y, groups, weights, 300, np.random.default_rng(2), chunk=64)
    assert first["global_variance"] == again["global_variance"]
    np.testing.assert_array_equal(first["local_variance"], again["local_variance"])
    assert first["global_variance"] != other["global_variance"]


def test_bootstrap_runs_at_paper_scale():
    y, groups = bernoulli_groups(np.random.default_rng(13), np.linspace(0.05, 0.95, 20), 200)
    result = bootstrap_scores(y, groups, None, 5000, np.random.default_rng(14))
    assert result["n_resamples"] == 5000
    assert result["local_variance"].shape == (20,)
    assert np.all(np.isfinite(result["local_variance"])) and result["global_variance"] > 0


def test_bootstrap_of_constant_classifier_is_undefined():
    with pytest.raises(ValueError, match="undefined"):
        bootstrap_scores(np.ones(6), np.array([0, 0, 1, 1, 2, 2]), None, 10, np.random.default_rng(0))


# cace


def test_cace_hand_example():
    probability = np.array([0.9, 0.7, 0.2, 0.4, 0.3])
    feature = np.array([1, 1, 0, 0, 0])
    assert cace(probability, feature) == pytest.approx(0.8 - 0.3)
    # weighted: (0.9 + 3·0.7)/4 − (0.2 + 0.4 + 2·0.3)/4 = 0.75 − 0.3
    assert cace(probability, feature, np.array([1.0, 3.0, 1.0, 1.0, 2.0])) == pytest.approx(0.45)


@pytest.mark.parametrize("feature", [np.array([1, 1, 1]), np.array([0, 0, 0])])
def test_cace_needs_both_values(feature):
    with pytest.raises(ValueError, match="absent"):
        cace(np.array([0.1, 0.5, 0.9]), feature)


# linear_r2


def test_linear_r2_exact_binary_margin():
    feature = np.linspace(-2, 3, 40)
    logits = np.stack([np.sin(feature), np.sin(feature) + 2.5 * feature - 1.0], axis=1)
    result = linear_r2(feature, logits)
    assert result["r2"] == pytest.approx(1.0)
    assert result["slope"] == pytest.approx(2.5)
    assert result["intercept"] == pytest.approx(-1.0)


def test_linear_r2_equals_squared_pearson_correlation():
    rng = np.random.default_rng(15)
    feature = rng.normal(size=500)
    margin = 0.7 * feature + rng.normal(size=500)
    logits = np.stack([np.zeros(500), margin], axis=1)
    expected = np.corrcoef(feature, margin)[0, 1] ** 2
    assert linear_r2(feature, logits)["r2"] == pytest.approx(expected, rel=1e-10)
    assert 0.2 < expected < 0.5


def test_linear_r2_multiclass_is_variance_weighted():
    rng = np.random.default_rng(16)
    feature = rng.normal(size=300)
    logits = feature[:, None] * np.array([1.0, -2.0, 0.5]) + np.array([0.0, 1.0, -1.0])
    logits += rng.normal(size=(300, 3)) * np.array([0.5, 1.0, 2.0])
    residual = total = 0.0
    for column in logits.T:
        slope, intercept = np.polyfit(feature, column, 1)
        residual += np.sum((column - slope * feature - intercept) ** 2)
        total += np.sum((column - column.mean()) ** 2)
    result = linear_r2(feature, logits)
    assert result["r2"] == pytest.approx(1 - residual / total, rel=1e-10)
    assert len(result["slope"]) == len(result["intercept"]) == 3
    assert result["slope"][1] == pytest.approx(-2.0, abs=0.2)


# coverage


def test_coverage_of_real_by_itself_is_one():
    real = np.random.default_rng(17).normal(size=(200, 16))
    assert coverage(real, real.copy(), k=3) == 1.0


def test_coverage_by_far_away_fakes_is_zero():
    real = np.random.default_rng(18).normal(size=(200, 16))
    assert coverage(real, real + 100.0, k=5) == 0.0


def test_coverage_hand_example_one_dimension():
    real = np.array([[0.0], [1.0], [3.0]])
    # k=1 radii: 0 → 1, 1 → 1, 3 → 2. Fake 0.4 lies 0.4 from 0 and 0.6 from 1, but 2.6 from 3.
    assert coverage(real, np.array([[0.4], [10.0]]), k=1) == pytest.approx(2 / 3)
    # k=2 radii: 0 → 3, 1 → 2, 3 → 3. Fake 5.5 lies 2.5 < 3 from 3 only.
    assert coverage(real, np.array([[5.5]]), k=2) == pytest.approx(1 / 3)
    # A fake exactly on the radius is not covered (strict inequality): 2 is at distance 1 from 1.
    assert coverage(real, np.array([[2.0]]), k=1) == pytest.approx(1 / 3)


def test_coverage_rejects_k_not_below_real_count():
    real = np.zeros((3, 2))
    with pytest.raises(ValueError, match="k"):
        coverage(real, real, k=3)


def test_bootstrap_variances_are_the_unbiased_variances_of_the_resampled_scores():
    """Replays three resamples (each group's samples redrawn within the group) and scores each:
    the reported variances are their variances with ddof = 1 (a factor 3/2 from ddof = 0 here)."""
    from diffxai.methods import variance_score

    y, groups = bernoulli_groups(np.random.default_rng(4), np.array([0.2, 0.5, 0.9]), 12)
    grouped = variance_score._group(y, groups, None)
    indices = variance_score._resample_indices(grouped, 3, np.random.default_rng(5))
    replayed = [variance_scores(grouped.y[rows], grouped.index) for rows in indices]
    result = bootstrap_scores(y, groups, None, 3, np.random.default_rng(5), chunk=3)
    globals_ = [score["global_score"] for score in replayed]
    assert result["global_variance"] == pytest.approx(np.var(globals_, ddof=1), rel=1e-9)
    locals_ = np.array([score["local_scores"] for score in replayed])
    np.testing.assert_allclose(result["local_variance"], np.var(locals_, axis=0, ddof=1), rtol=1e-9)
