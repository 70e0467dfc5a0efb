"""Attribution metrics: toy linear-softmax models with known oracles, hand-computed values and ROAD."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy import ndimage, stats
from sklearn.metrics import roc_auc_score
from torch import nn

from diffxai.metrics.attribution import (
    _imputation_system,
    _pixel_ranks,
    _solve,
    auc,
    complexity,
    insertion_deletion_curves,
    mask_auroc,
    mean_curve_nauc,
    noisy_linear_impute,
    normalised_auc,
    pointing_game,
    randomisation_check,
    road_curves,
    scorable_masks,
    sensitivity,
    substrate,
)

# Small CPU workloads: extra threads only contend.
torch.set_num_threads(1)


class LinearSoftmax(nn.Module):
    """Two classes with logits (0, Σ w·x): p(class 1) = sigmoid(Σ w·x) for weight w (C, H, W)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        score = (images * self.weight).flatten(1).sum(dim=1)
        return torch.stack([torch.zeros_like(score), score], dim=1)


def probabilities(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``Predict`` from a logit model: softmax probabilities (N, K)."""

    def predict(images: torch.Tensor) -> torch.Tensor:
        return model(images).softmax(dim=1)

    return predict


def sigmoid(values: list[float]) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(values, dtype=np.float64)))


@pytest.fixture
def toy() -> tuple[LinearSoftmax, torch.Tensor, torch.Tensor]:
    """Model with distinct positive weights (1, 8, 8), images (3, 1, 8, 8) of constant 0.2, 0.5 and 0.9."""
    generator = torch.Generator().manual_seed(0)
    weight = 0.02 + 0.1 * torch.randperm(64, generator=generator).float().view(1, 8, 8) / 64
    images = torch.tensor([0.2, 0.5, 0.9]).view(3, 1, 1, 1).expand(3, 1, 8, 8).contiguous()
    return LinearSoftmax(weight), weight, images


# --- substrates -------------------------------------------------------------------------------------


def test_zero_substrate_is_black_everywhere():
    images = torch.rand(2, 3, 5, 5) * 2 - 1
    assert torch.equal(substrate(images, "zero"), torch.full_like(images, -1.0))


def test_blur_keeps_constant_image_and_smooths_checkerboard():
    constant = torch.full((1, 3, 16, 16), 0.3)
    assert torch.equal(substrate(constant, "blur"), constant)
    board = ((torch.arange(16).view(-1, 1) + torch.arange(16)) % 2).float().view(1, 1, 16, 16) * 2 - 1
    blurred = substrate(board, "blur")
    assert blurred.shape == board.shape
    assert blurred.var() < 0.01 * board.var()
    assert blurred.mean() == pytest.approx(board.mean().item(), abs=1e-6)


def test_blur_matches_scipy_gaussian_filter_with_mirror_padding():
    images = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(1)) * 2 - 1
    expected = ndimage.gaussian_filter(
        images.double().numpy(), sigma=(0, 0, 1.5, 1.5), mode="mirror", truncate=3.0
    )
    np.testing.assert_allclose(substrate(images, "blur", sigma=1.5).numpy(), expected, atol=1e-6)


def test_unknown_substrate_names_the_allowed_kinds():
    with pytest.raises(ValueError, match="zero, blur"):
        substrate(torch.zeros(1, 1, 4, 4), "mean")


# --- insertion / deletion ---------------------------------------------------------------------------


def test_insertion_deletion_hand_checked_on_2x2_image():
    # x = 0 everywhere, zero substrate −1; oracle order of the weights 4, 3, 2, 1.
    weight = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 2)
    predict = probabilities(LinearSoftmax(weight))
    images, maps = torch.zeros(1, 1, 2, 2), weight.clone()
    deletion = insertion_deletion_curves(predict, images, maps, [1], "deletion", steps=4)
    insertion = insertion_deletion_curves(predict, images, maps, [1], "insertion", steps=4)
    np.testing.assert_allclose(deletion[0], sigmoid([0, -4, -7, -9, -10]), rtol=1e-6)
    np.testing.assert_allclose(insertion[0], sigmoid([-10, -6, -3, -1, 0]), rtol=1e-6)
    # Class 0 is the complement.
    deletion_0 = insertion_deletion_curves(predict, images, maps, [0], "deletion", steps=4)
    np.testing.assert_allclose(deletion_0[0], 1 - sigmoid([0, -4, -7, -9, -10]), rtol=1e-5)


def test_step_k_moves_the_fraction_k_over_steps_of_the_pixels():
    # HW = 4, steps = 3: round(4k/3) = 0, 1, 3, 4 pixels moved, so step k sits at x = k/3 as the
    # AUC assumes (⌈4/3⌉ = 2 per step would move 0, 2, 4, 4 and reach x = 1 at k = 2).
    weight = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 2)
    predict = probabilities(LinearSoftmax(weight))
    curve = insertion_deletion_curves(predict, torch.zeros(1, 1, 2, 2), weight, [1], "deletion", steps=3)
    np.testing.assert_allclose(curve[0], sigmoid([0, -4, -9, -10]), rtol=1e-6)


def test_a_map_that_ties_every_pixel_removes_them_in_one_fixed_random_order_not_raster_order():
    """An all-zero map carries no information: deleting by it hurts a classifier that reads only
    the top rows about as much as one that reads only the bottom rows (raster order would
    delete the top rows first), and its pixel order is the same fixed shuffle for every image."""
    top, bottom = torch.zeros(1, 16, 16), torch.zeros(1, 16, 16)
    top[:, :8], bottom[:, 8:] = 0.1, 0.1
    images, flat = torch.ones(2, 1, 16, 16), torch.zeros(2, 16, 16)
    areas = {
        name: auc(
            insertion_deletion_curves(probabilities(LinearSoftmax(w)), images, flat, [1, 1], "deletion")
        )
        for name, w in (("top", top), ("bottom", bottom))
    }
    np.testing.assert_allclose(areas["top"], areas["bottom"], atol=0.03)
    ranks = _pixel_ranks(flat, absolute=True)
    assert torch.equal(ranks[0], ranks[1]) and not torch.equal(ranks[0], torch.arange(256))
    # untied pixels keep their order: a strictly decreasing map is ranked in raster order
    assert torch.equal(
        _pixel_ranks(-torch.arange(256.0).view(1, 16, 16), absolute=False)[0], torch.arange(256)
    )


def test_oracle_curves_are_monotone_and_beat_the_reversed_map(toy):
    model, weight, images = toy
    predict = probabilities(model)
    oracle = weight.expand(3, 8, 8)
    targets = [1, 1, 1]
    curves = {
        (mode, name): insertion_deletion_curves(predict, images, maps, targets, mode, absolute=False)
        for mode in ("insertion", "deletion")
        for name, maps in (("oracle", oracle), ("reversed", -oracle))
    }
    assert curves["deletion", "oracle"].shape == (3, 17)
    assert (np.diff(curves["deletion", "oracle"], axis=1) < 0).all()
    assert (np.diff(curves["insertion", "oracle"], axis=1) > 0).all()
    assert (auc(curves["insertion", "oracle"]) > auc(curves["insertion", "reversed"])).all()
    assert (auc(curves["deletion", "oracle"]) < auc(curves["deletion", "reversed"])).all()


@pytest.mark.parametrize("kind", ["zero", "blur"])
def test_curve_ends_are_predictions_on_image_and_substrate(toy, kind):
    model, _, _ = toy
    predict = probabilities(model)
    images = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    maps = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(3))
    targets = np.array([1, 0, 1, 0])
    rows, columns = torch.arange(4), torch.as_tensor(targets)
    on_image = predict(images)[rows, columns].detach().numpy()
    on_substrate = predict(substrate(images, kind))[rows, columns].detach().numpy()
    deletion = insertion_deletion_curves(predict, images, maps, targets, "deletion", kind, steps=5)
    insertion = insertion_deletion_curves(predict, images, maps, targets, "insertion", kind, steps=5)
    np.testing.assert_allclose(deletion[:, 0], on_image, rtol=1e-6)
    np.testing.assert_allclose(deletion[:, -1], on_substrate, rtol=1e-6)
    np.testing.assert_allclose(insertion[:, 0], on_substrate, rtol=1e-6)
    np.testing.assert_allclose(insertion[:, -1], on_image, rtol=1e-6)


def test_blur_oracle_contribution_map_beats_reversed(toy):
    # With the blur substrate, deleting pixel i changes the logit by −w_i (x_i − b_i): that is the oracle.
    model, weight, _ = toy
    predict = probabilities(model)
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(4)) * 2 - 1
    oracle = (weight * (images - substrate(images, "blur")))[:, 0]
    kwargs = {"substrate_kind": "blur", "absolute": False}
    deletion = insertion_deletion_curves(predict, images, oracle, [1, 1, 1], "deletion", **kwargs)
    reversed_ = insertion_deletion_curves(predict, images, -oracle, [1, 1, 1], "deletion", **kwargs)
    assert (deletion <= reversed_ + 1e-7).all()
    assert (auc(deletion) < auc(reversed_)).all()


def test_chunked_prediction_matches_one_batch(toy):
    model, weight, images = toy
    calls = []

    def predict(batch: torch.Tensor) -> torch.Tensor:
        calls.append(len(batch))
        return model(batch).softmax(dim=1)

    maps = weight.expand(3, 8, 8)
    whole = insertion_deletion_curves(predict, images, maps, [1, 0, 1], "insertion", steps=4)
    chunked = insertion_deletion_curves(predict, images, maps, [1, 0, 1], "insertion", steps=4, batch_size=4)
    np.testing.assert_allclose(chunked, whole, rtol=1e-6)
    assert calls == [15, 4, 4, 4, 3]


# --- AUC --------------------------------------------------------------------------------------------


def test_auc_and_normalised_auc_by_hand():
    # x = 0, 1/2, 1: areas 1/2, 1, 1/2 and maxima 1, 1, 1; the last is 0.1875 + 0.125 with max 0.5.
    three = np.array([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.5, 1.0], [0.5, 0.25, 0.25]])
    np.testing.assert_allclose(auc(three), [0.5, 1.0, 0.5, 0.3125])
    np.testing.assert_allclose(normalised_auc(three), [0.5, 1.0, 0.5, 0.625])
    # x = 0, 1/3, 2/3, 1: (0.3 + 0.4 + 0.3) / 3 = 1/3; max 0.4.
    four = np.array([[0.2, 0.4, 0.4, 0.2], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(auc(four), [1 / 3, 0.0])
    normalised = normalised_auc(four)
    assert normalised[0] == pytest.approx((1 / 3) / 0.4)
    assert np.isnan(normalised[1])


def test_the_nauc_of_a_set_is_that_of_its_mean_curve():
    """Thesis §6.4: AUC of the mean curve over the images, divided by its maximum. A flat curve
    at p = 1e-4 has a per-image ratio of 1 (the best insertion score) but barely moves the mean."""
    curves = np.array([[0.9, 0.5, 0.1], [1e-4, 1e-4, 1e-4]])
    mean = curves.mean(axis=0)
    expected = ((mean[0] + mean[2]) / 2 + mean[1]) / 2 / mean.max()
    assert mean_curve_nauc(curves) == pytest.approx(expected) == pytest.approx(0.5 / 0.9, rel=1e-3)
    assert np.mean(normalised_auc(curves)) == pytest.approx((0.5 / 0.9 + 1) / 2)
    assert np.isnan(mean_curve_nauc(np.zeros((2, 3))))


# --- ROAD imputation --------------------------------------------------------------------------------


def _random_images(count: int, channels: int, size: int, seed: int) -> torch.Tensor:
    return torch.rand(count, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _random_mask(count: int, size: int, fraction: float, seed: int) -> torch.Tensor:
    return torch.rand(count, size, size, generator=torch.Generator().manual_seed(seed)) < fraction


def test_kept_pixels_are_bit_identical_and_removed_ones_change():
    images = _random_images(2, 3, 10, seed=5)
    removed = _random_mask(2, 10, 0.4, seed=6)
    imputed = noisy_linear_impute(images, removed, noise_std=0.05, generator=torch.Generator().manual_seed(0))
    kept = ~removed[:, None].expand_as(images)
    assert torch.equal(imputed[kept], images[kept])
    assert not torch.equal(imputed[~kept], images[~kept])
    assert torch.equal(images, _random_images(2, 3, 10, seed=5))


def test_removed_pixel_among_kept_pixels_of_value_v_gets_v():
    images = torch.full((1, 3, 5, 5), 0.375)
    images[0, :, 2, 2] = -0.9
    removed = torch.zeros(1, 5, 5, dtype=torch.bool)
    removed[0, 2, 2] = True
    imputed = noisy_linear_impute(images, removed, noise_std=0.0)
    assert torch.equal(imputed, torch.full((1, 3, 5, 5), 0.375))


def test_corner_pixel_uses_weights_renormalised_inside_the_image():
    # Neighbours of (0, 0): right a and below b at 1/6, diagonal c at 1/12, total 5/12 → (2a + 2b + c) / 5.
    images = torch.zeros(1, 1, 3, 3)
    images[0, 0, 0, 1], images[0, 0, 1, 0], images[0, 0, 1, 1] = 0.5, -0.25, 1.0
    removed = torch.zeros(1, 3, 3, dtype=torch.bool)
    removed[0, 0, 0] = True
    imputed = noisy_linear_impute(images, removed, noise_std=0.0)
    assert imputed[0, 0, 0, 0].item() == pytest.approx((2 * 0.5 + 2 * -0.25 + 1.0) / 5, abs=1e-7)


def test_linear_ramp_is_recovered_inside_an_interior_block():
    # Away from the border the weights are symmetric and sum to 1, so a x + b y + c solves every equation.
    y, x = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")
    ramp = (0.15 * x - 0.05 * y - 0.3).view(1, 1, 12, 12)
    removed = torch.zeros(1, 12, 12, dtype=torch.bool)
    removed[0, 3:9, 2:8] = True
    imputed = noisy_linear_impute(ramp, removed, noise_std=0.0)
    torch.testing.assert_close(imputed, ramp, atol=1e-6, rtol=0)


def test_every_imputed_pixel_is_the_weighted_mean_of_its_neighbours():
    # Checked pixel by pixel on the result, border pixels and removed neighbours included.
    images = _random_images(1, 2, 7, seed=7)
    removed = _random_mask(1, 7, 0.5, seed=8)
    imputed = noisy_linear_impute(images, removed, noise_std=0.0)[0].double()
    for y, x in removed[0].nonzero().tolist():
        total, weighted = 0.0, torch.zeros(2, dtype=torch.float64)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                inside = 0 <= y + dy < 7 and 0 <= x + dx < 7
                if (dy, dx) != (0, 0) and inside:
                    weight = 1 / 12 if dy and dx else 1 / 6
                    total += weight
                    weighted += weight * imputed[:, y + dy, x + dx]
        torch.testing.assert_close(imputed[:, y, x], weighted / total, atol=1e-6, rtol=0)


def test_every_pixel_removed_is_imputed_as_zero_plus_noise():
    images = _random_images(1, 3, 6, seed=9)
    removed = torch.ones(1, 6, 6, dtype=torch.bool)
    assert torch.equal(noisy_linear_impute(images, removed, noise_std=0.0), torch.zeros_like(images))
    noisy = noisy_linear_impute(images, removed, noise_std=0.1, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(noisy).all()
    assert 0 < noisy.std().item() < 0.2
    # A single-pixel image has no neighbours at all.
    single = noisy_linear_impute(torch.ones(1, 1, 1, 1), torch.ones(1, 1, 1), noise_std=0.0)
    assert torch.equal(single, torch.zeros(1, 1, 1, 1))


def test_isolated_component_system_is_singular_and_still_solved():
    # A removed component without kept neighbours (on a connected grid: every pixel removed) has rows
    # summing to 0, so constants span the null space; the solver must still satisfy the equations.
    matrix, _ = _imputation_system(np.zeros((2, 3, 3)), np.ones((3, 3), dtype=bool))
    assert np.allclose(matrix.toarray().sum(axis=1), 0.0)
    truth = np.random.default_rng(0).normal(size=(9, 2))
    solution = _solve(matrix, matrix @ truth)
    assert np.isfinite(solution).all()
    np.testing.assert_allclose(matrix @ solution, matrix @ truth, atol=1e-8)


def test_exactly_singular_system_falls_back_to_minimum_norm_least_squares():
    # Both pixels of a 1×2 image removed: [[1, −1], [−1, 1]], which sparse LU reports as singular.
    matrix, rhs = _imputation_system(np.zeros((1, 1, 2)), np.ones((1, 2), dtype=bool))
    np.testing.assert_array_equal(matrix.toarray(), [[1.0, -1.0], [-1.0, 1.0]])
    np.testing.assert_allclose(_solve(matrix, rhs), 0.0, atol=1e-12)
    # lsqr from 0 returns the solution orthogonal to the null space (the constants).
    np.testing.assert_allclose(_solve(matrix, np.array([[1.0], [-1.0]])), [[0.5], [-0.5]], atol=1e-10)


def test_three_channels_equal_three_single_channel_runs():
    images = _random_images(2, 3, 9, seed=10)
    removed = _random_mask(2, 9, 0.45, seed=11)
    together = noisy_linear_impute(images, removed, noise_std=0.0)
    for channel in range(3):
        alone = noisy_linear_impute(images[:, channel : channel + 1], removed, noise_std=0.0)
        torch.testing.assert_close(together[:, channel : channel + 1], alone, atol=1e-7, rtol=0)


def test_noise_has_the_requested_std_on_imputed_pixels_only():
    images = _random_images(1, 3, 48, seed=12)
    removed = _random_mask(1, 48, 0.6, seed=13)
    clean = noisy_linear_impute(images, removed, noise_std=0.0)
    noisy = noisy_linear_impute(images, removed, noise_std=0.1, generator=torch.Generator().manual_seed(2))
    noise = (noisy - clean)[removed[:, None].expand_as(images)]
    assert noise.std().item() == pytest.approx(0.1, rel=0.1)
    assert abs(noise.mean().item()) < 0.01
    assert ((noisy - clean)[~removed[:, None].expand_as(images)] == 0).all()


def test_generator_makes_imputation_reproducible():
    images, removed = _random_images(2, 1, 8, seed=14), _random_mask(2, 8, 0.5, seed=15)
    first = noisy_linear_impute(images, removed, generator=torch.Generator().manual_seed(3))
    second = noisy_linear_impute(images, removed, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, second)


@pytest.mark.parametrize("channels", [1, 3])
def test_road_morf_drops_the_target_faster_than_lerf(channels):
    generator = torch.Generator().manual_seed(16)
    weight = 0.15 * torch.randn(channels, 8, 8, generator=generator)
    images = torch.rand(3, channels, 8, 8, generator=generator) * 2 - 1
    predict = probabilities(LinearSoftmax(weight))
    oracle = (weight * images).sum(dim=1)  # contribution to the class-1 logit relative to 0
    curves = {
        order: road_curves(predict, images, oracle, [1, 1, 1], order, absolute=False, generator=generator)
        for order in ("morf", "lerf")
    }
    assert curves["morf"].shape == (3, 9)
    assert (curves["morf"].mean(axis=1) < curves["lerf"].mean(axis=1) - 0.1).all()
    assert (curves["morf"][:, 4] < curves["lerf"][:, 4]).all()


@pytest.mark.parametrize(("order", "expected"), [("morf", range(15, 20)), ("lerf", range(5))])
def test_road_imputes_round_fraction_of_pixels_in_rank_order(order, expected):
    # With noise 0 and a predictor reporting the fraction of changed pixels, the curve is the fraction.
    images = _random_images(2, 1, 5, seed=17)[..., :4]
    maps = torch.arange(40.0).view(2, 5, 4)  # most relevant: the last pixels in flattened order
    changes = []

    def predict(batch: torch.Tensor) -> torch.Tensor:
        changed = (batch != images[: len(batch)]).flatten(1)
        changes.append(changed)
        fraction = changed.float().mean(dim=1)
        return torch.stack([fraction, 1 - fraction], dim=1)

    curves = road_curves(predict, images, maps, [0, 0], order, fractions=(0.0, 0.25, 1.0), noise_std=0.0)
    np.testing.assert_allclose(curves, [[0.0, 0.25, 1.0]] * 2)
    assert changes[1][0].nonzero().flatten().tolist() == list(expected)


# --- sensitivity ------------------------------------------------------------------------------------


def _channel_mean(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return images.mean(dim=1)


def test_sensitivity_of_an_input_independent_explainer_is_zero():
    images = _random_images(3, 3, 6, seed=20)
    fixed = torch.randn(3, 6, 6, generator=torch.Generator().manual_seed(0))
    average, maximum = sensitivity(lambda x, t: fixed, images, [0, 1, 0], generator=torch.Generator())
    np.testing.assert_array_equal(average, 0.0)
    np.testing.assert_array_equal(maximum, 0.0)


def test_sensitivity_of_linear_model_gradient_is_zero():
    weight = torch.randn(3, 6, 6, generator=torch.Generator().manual_seed(1))
    model = LinearSoftmax(weight)

    def gradient(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        images = images.clone().requires_grad_(True)
        logits = model(images)
        (grad,) = torch.autograd.grad(logits[torch.arange(len(images)), targets].sum(), images)
        return grad.sum(dim=1)

    images = _random_images(2, 3, 6, seed=21)
    average, maximum = sensitivity(gradient, images, [1, 1], radius=0.1, samples=4)
    np.testing.assert_allclose(average, 0.0, atol=1e-12)
    np.testing.assert_allclose(maximum, 0.0, atol=1e-12)


def test_sensitivity_of_channel_mean_matches_hand_computation():
    images = _random_images(2, 3, 5, seed=22)
    images[0, :, 0, 0] = 0.995  # near the upper bound, so clamping matters
    radius, samples = 0.05, 6
    average, maximum = sensitivity(
        _channel_mean, images, [0, 1], radius, samples, generator=torch.Generator().manual_seed(7)
    )
    generator = torch.Generator().manual_seed(7)
    x = images.double().numpy()

    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.abs(a).max(axis=(1, 2), keepdims=True)

    reference = unit(x.mean(axis=1))
    values = []
    for _ in range(samples):
        delta = radius * (2 * torch.rand(images.shape, generator=generator) - 1)
        perturbed = np.clip(x + delta.double().numpy(), -1, 1)
        difference = unit(perturbed.mean(axis=1)) - reference
        values.append(np.sqrt((difference**2).sum(axis=(1, 2))) / np.sqrt((x**2).sum(axis=(1, 2, 3))))
    np.testing.assert_allclose(average, np.mean(values, axis=0), rtol=1e-5)
    np.testing.assert_allclose(maximum, np.max(values, axis=0), rtol=1e-5)
    assert (maximum >= average).all() and (average > 0).all()


def test_sensitivity_max_is_at_least_average_and_grows_with_radius():
    images = _random_images(4, 1, 8, seed=23)

    def squared(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x[:, 0] ** 2

    small = sensitivity(squared, images, [0] * 4, radius=0.01, generator=torch.Generator().manual_seed(0))
    large = sensitivity(squared, images, [0] * 4, radius=0.2, generator=torch.Generator().manual_seed(0))
    for average, maximum in (small, large):
        assert average.shape == maximum.shape == (4,)
        assert (maximum >= average).all()
    assert (large[0] > small[0]).all()


# --- complexity -------------------------------------------------------------------------------------


def test_complexity_uniform_one_hot_and_hand_example():
    maps = np.zeros((4, 2, 2), dtype=np.float32)
    maps[0] = -0.7  # uniform over P = 4 pixels (sign ignored)
    maps[1, 1, 0] = 3.0  # one-hot
    maps[2] = [[1.0, -1.0], [2.0, 0.0]]
    values = complexity(maps)
    assert values[0] == pytest.approx(math.log(4))
    assert values[1] == 0.0
    assert values[2] == pytest.approx(stats.entropy([0.25, 0.25, 0.5, 0.0]))
    assert values[2] == pytest.approx(-(2 * 0.25 * math.log(0.25) + 0.5 * math.log(0.5)))
    assert np.isnan(values[3])
    assert complexity(torch.ones(1, 7, 9))[0] == pytest.approx(math.log(63))


# --- model-parameter randomisation ------------------------------------------------------------------


def _small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 2),
    )


def _gradient_times_input(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    images = images.clone().requires_grad_(True)
    logits = model(images)
    (grad,) = torch.autograd.grad(logits[torch.arange(len(images)), targets].sum(), images)
    return (grad * images).sum(dim=1).detach()


def test_randomisation_lists_layers_top_down_and_decorrelates():
    model = _small_cnn()
    before = copy.deepcopy(model.state_dict())
    images, targets = _random_images(6, 1, 8, seed=30), torch.tensor([0, 1, 0, 1, 0, 1])
    result = randomisation_check(model, _gradient_times_input, images, targets, seed=0)
    assert result["layers"] == ["5", "2", "0"]
    assert result["spearman"].shape == result["pearson"].shape == (3, 6)
    assert np.abs(result["spearman"]).max() <= 1.0
    # |grad × input| keeps some of |input| (≈ 0.4 here); signed maps lose everything.
    assert result["spearman"][-1].mean() < 0.7
    signed = randomisation_check(model, _gradient_times_input, images, targets, absolute=False)
    assert abs(signed["spearman"][-1].mean()) < 0.3
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name])


def test_first_depth_randomises_only_the_top_layer():
    model = _small_cnn()
    images, targets = _random_images(4, 1, 8, seed=33), torch.tensor([1, 0, 1, 0])
    result = randomisation_check(model, _gradient_times_input, images, targets, seed=3)
    top = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in (top[5].weight, top[5].bias):
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * parameter.std())
    original = _gradient_times_input(model, images, targets).abs().flatten(1).numpy()
    randomised = _gradient_times_input(top, images, targets).abs().flatten(1).numpy()
    for sample in range(4):
        expected = stats.spearmanr(original[sample], randomised[sample]).statistic
        assert result["spearman"][0, sample] == pytest.approx(expected, abs=1e-6)
        expected = stats.pearsonr(original[sample], randomised[sample]).statistic
        assert result["pearson"][0, sample] == pytest.approx(expected, abs=1e-6)


def test_randomisation_is_reproducible_for_a_seed():
    images = _random_images(3, 1, 8, seed=31)
    first = randomisation_check(_small_cnn(), _gradient_times_input, images, [0, 1, 0], seed=4)
    second = randomisation_check(_small_cnn(), _gradient_times_input, images, [0, 1, 0], seed=4)
    np.testing.assert_array_equal(first["spearman"], second["spearman"])


def test_model_independent_explainer_fails_the_randomisation_check():
    images = _random_images(3, 1, 8, seed=32)

    def magnitude(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return x[:, 0].abs()

    result = randomisation_check(_small_cnn(), magnitude, images, [0, 1, 0])
    np.testing.assert_allclose(result["spearman"], 1.0)
    np.testing.assert_allclose(result["pearson"], 1.0)


def test_constant_maps_give_nan_correlation_and_root_parameters_count():
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(2.0))
            self.head = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.scale * x.flatten(1))

    def constant(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.ones(len(x), 2, 2)

    model = Scaled()
    result = randomisation_check(model, constant, torch.zeros(2, 1, 2, 2), [0, 1])
    assert result["layers"] == ["head", ""]
    assert np.isnan(result["spearman"]).all() and np.isnan(result["pearson"]).all()
    assert model.scale.item() == 2.0


def test_a_map_that_randomisation_flattens_has_zero_correlation():
    """A ReLU-clipped map that becomes all zero once the head is random has passed the check: its
    correlation is 0, not NaN (a NaN would drop exactly the passing images from the mean)."""

    class Gate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 2)
            nn.init.constant_(self.head.weight, 1.0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(x.flatten(1))

    def clipped(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weight = model.head.weight[0].detach().view(2, 2)
        structured = torch.arange(4.0).view(2, 2) * (weight == 1.0).all()  # zero once randomised
        return structured.expand(len(x), 2, 2)

    result = randomisation_check(Gate(), clipped, torch.zeros(2, 1, 2, 2), [0, 1], absolute=False)
    np.testing.assert_array_equal(result["spearman"], 0.0)
    np.testing.assert_array_equal(result["pearson"], 0.0)


# --- ground truth -----------------------------------------------------------------------------------


def test_mask_auroc_perfect_inverted_hand_and_degenerate():
    masks = np.zeros((2, 3, 3), dtype=bool)
    masks[:, 1, :2] = True
    maps = masks.astype(np.float32)
    np.testing.assert_allclose(mask_auroc(maps, masks), 1.0)
    np.testing.assert_allclose(mask_auroc(-maps, masks, absolute=False), 0.0)
    np.testing.assert_allclose(mask_auroc(-maps, masks, absolute=True), 1.0)
    scores = np.array([[0.1, 0.4, 0.35], [0.8, -0.9, 0.2], [0.0, 0.3, 0.5]], dtype=np.float32)
    mask = np.array([[0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=bool)
    for absolute in (False, True):
        expected = roc_auc_score(mask.ravel(), np.abs(scores.ravel()) if absolute else scores.ravel())
        assert mask_auroc(scores[None], mask[None], absolute)[0] == pytest.approx(expected)
    # By hand (absolute=False): positives 0.4, 0.8, −0.9, 0.5; negatives 0.1, 0.35, 0.2, 0.0, 0.3.
    assert mask_auroc(scores[None], mask[None], absolute=False)[0] == pytest.approx(15 / 20)
    degenerate = mask_auroc(np.ones((2, 2, 2)), np.stack([np.ones((2, 2)), np.zeros((2, 2))]).astype(bool))
    assert np.isnan(degenerate).all()


def test_pointing_game_hit_miss_and_ties():
    maps = torch.zeros(3, 2, 3)
    maps[0, 1, 2] = 5.0
    maps[1, 0, 0] = -9.0
    maps[1, 1, 1] = 4.0
    masks = torch.zeros(3, 2, 3, dtype=torch.bool)
    masks[:, 1, 2] = True
    masks[1, 1, 1] = True
    masks[2, 0, 0] = True  # all-zero map: every pixel ties, one of six in the mask
    np.testing.assert_allclose(pointing_game(maps, masks), [1, 0, 2 / 6])
    np.testing.assert_allclose(pointing_game(maps, masks, absolute=False), [1, 1, 2 / 6])


def test_the_pointing_game_of_a_patch_constant_map_is_the_share_of_its_top_patch_in_the_mask():
    """A HiT-style map, constant on 2 × 2 patches: the top patch has 3 of its 4 pixels in the mask
    but not its first one, so a first-index tie-break would call it a miss."""
    maps = torch.zeros(1, 4, 4)
    maps[0, 2:, 2:] = 1.0
    maps[0, :2, :2] = 0.5
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, 2:, 2:] = True
    masks[0, 2, 2] = False
    np.testing.assert_allclose(pointing_game(maps, masks), [0.75])
    empty = pointing_game(torch.zeros(0, 4, 4), torch.zeros(0, 4, 4, dtype=torch.bool))
    assert empty.shape == (0,) and mask_auroc(torch.zeros(0, 4, 4), np.zeros((0, 4, 4), bool)).shape == (0,)


# --- validation -------------------------------------------------------------------------------------


def test_shape_mismatches_are_named():
    predict = probabilities(LinearSoftmax(torch.ones(1, 4, 4)))
    images = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"maps shape \(2, 4, 5\) does not match images"):
        insertion_deletion_curves(predict, images, torch.zeros(2, 4, 5), [0, 1], "deletion")
    with pytest.raises(ValueError, match=r"maps shape \(3, 4, 4\)"):
        road_curves(predict, images, torch.zeros(3, 4, 4), [0, 1], "morf")
    with pytest.raises(ValueError, match=r"targets shape \(3,\) does not match the N = 2"):
        insertion_deletion_curves(predict, images, torch.zeros(2, 4, 4), [0, 1, 1], "insertion")
    with pytest.raises(ValueError, match=r"maps must be \(N, H, W\)"):
        insertion_deletion_curves(predict, images, torch.zeros(2, 1, 4, 4), [0, 1], "insertion")
    with pytest.raises(ValueError, match=r"mask shape \(2, 4, 4\) does not match maps"):
        mask_auroc(torch.zeros(2, 3, 3), torch.zeros(2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask shape \(2, 3, 3\) does not match images"):
        noisy_linear_impute(images, torch.zeros(2, 3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="maps shape"):
        sensitivity(lambda x, t: x[:, 0, :2], images, [0, 1])
    with pytest.raises(ValueError, match="morf, lerf"):
        road_curves(predict, images, torch.zeros(2, 4, 4), [0, 1], "random")
    with pytest.raises(ValueError, match="insertion, deletion"):
        insertion_deletion_curves(predict, images, torch.zeros(2, 4, 4), [0, 1], "both")


def test_randomisation_check_equals_a_hand_computation_of_the_cascading_definition():
    """Quantus' cascading model-parameter randomisation on a two-layer linear model whose gradient map is
    (W2 W1)[target]: after randomising W2, then W1, the maps are (W2' W1) and (W2' W1'), with W' drawn in
    order from one generator as N(0, std(W)); Spearman ranks are computed here by hand (argsort twice)."""
    w1 = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.5]])  # no tied pixels
    w2 = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, -1.0]])
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(w1)
        model[2].weight.copy_(w2)

    def gradient_map(net, images, targets):
        x = images.clone().requires_grad_(True)
        net(x).gather(1, targets[:, None]).sum().backward()
        return x.grad.mean(1)

    images = torch.zeros(1, 1, 2, 2)
    result = randomisation_check(model, gradient_map, images, [0], seed=3, absolute=False)
    assert result["layers"] == ["2", "1"]
    generator = torch.Generator().manual_seed(3)
    w2_new = torch.randn(w2.shape, generator=generator) * w2.std().item()
    w1_new = torch.randn(w1.shape, generator=generator) * w1.std().item()
    original = (w2 @ w1)[0].numpy()

    def ranks(values):
        return np.argsort(np.argsort(values)).astype(float)

    for depth, effective in enumerate([(w2_new @ w1)[0].numpy(), (w2_new @ w1_new)[0].numpy()]):
        expected = np.corrcoef(ranks(original), ranks(effective))[0, 1]
        assert result["spearman"][depth, 0] == pytest.approx(expected)
        assert result["pearson"][depth, 0] == pytest.approx(np.corrcoef(original, effective)[0, 1])


def test_the_jobs_faithfulness_scores_the_mean_curve():
    """The job's nAUC is of the images' mean curve: an image the classifier never believes (a flat
    p = 1e-4 insertion curve, per-image ratio 1) does not lift the score."""
    from diffxai.jobs.attribution_metrics import faithfulness

    def predict(images: torch.Tensor) -> torch.Tensor:
        p = images.clamp(0, 1).mean(dim=(1, 2, 3)).clamp(1e-4, 1)
        return torch.stack([p, 1 - p], dim=1)

    images = torch.stack([torch.ones(1, 4, 4), torch.full((1, 4, 4), -1.0)])  # the substrate is -1
    maps = torch.arange(32, dtype=torch.float32).reshape(2, 4, 4)
    settings = {"substrates": ["zero"], "curve_steps": 4, "absolute": True, "road_fractions": [0.5],
                "road_noise_std": 0.0}  # fmt: skip
    result = faithfulness(predict, images, maps, torch.tensor([0, 0]), settings, seed=0)
    bright = np.array([[1e-4, 0.25, 0.5, 0.75, 1.0]])  # p = the fraction of bright pixels revealed
    flat = np.full((1, 5), 1e-4)
    expected = mean_curve_nauc(np.concatenate([bright, flat]))
    assert result["insertion_nauc_zero"] == pytest.approx(expected, rel=1e-4)
    assert expected == pytest.approx(0.5, abs=1e-3)  # the per-image mean would be ≈ 0.75
    assert result["insertion_auc_zero"] == pytest.approx(auc(np.concatenate([bright, flat])).mean(), rel=1e-4)


def test_each_subset_metric_counts_the_images_it_averaged():
    from diffxai.jobs.attribution_metrics import subset_counts

    metrics = {"n": 50, "avg_sensitivity": 0.1, "max_sensitivity_fresh_seeds": 0.2, "sensitivity_n": 16,
               "randomisation_spearman_top_layer": 0.9, "randomisation_spearman_all_layers": 0.1,
               "randomisation_n": 8, "randomisation_defined_n": [8, 7, 5], "complexity": 4.2,
               "complexity_n": 49, "insertion_auc_zero": 0.5}  # fmt: skip
    assert subset_counts(metrics) == {
        "avg_sensitivity": 16,
        "max_sensitivity_fresh_seeds": 16,
        "randomisation_spearman_top_layer": 8,
        "randomisation_spearman_all_layers": 5,
        "complexity": 49,
    }
    with_region = {**metrics, "mask_auroc": 0.8, "pointing_game": 0.6, "ground_truth_n": 45}
    assert subset_counts(with_region)["mask_auroc"] == subset_counts(with_region)["pointing_game"] == 45


def test_only_masks_neither_empty_nor_whole_are_scorable_and_they_give_finite_auroc():
    masks = np.zeros((3, 4, 4), bool)
    masks[1, :2] = True
    masks[2] = True
    assert scorable_masks(masks).tolist() == [False, True, False]
    aurocs = mask_auroc(torch.rand(3, 4, 4), masks)
    assert np.isfinite(aurocs).tolist() == scorable_masks(masks).tolist()
