"""Constrained sampling (seed 002 §3.3) against an exact denoiser: DPS reaches the target component,
region sampling keeps the known pixels exactly, NFE is counted."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffxai.diffusion.constrained import dps_step, sample_with_region, sample_with_value
from diffxai.models.ddpm import build_scheduler
from tests.toy_diffusion import SCHEDULER_CONFIG, SIZE, ExactDenoiser

SHAPE = (1, SIZE, SIZE)
DARK, BRIGHT = -0.5, 0.5


class MeanIntensity(nn.Module):
    """g(x) = mean pixel value (N,): the feature the sampler constrains."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).mean(dim=1)


def two_level_data(std: float = 0.2) -> ExactDenoiser:
    """Equal mixture of a dark (all −0.5) and a bright (all +0.5) image, each with N(0, std²) pixel noise."""
    means = torch.stack([torch.full(SHAPE, DARK), torch.full(SHAPE, BRIGHT)])
    return ExactDenoiser(means, std=std)


def constrained(targets: torch.Tensor, rho: float, steps: int = 50, seed: int = 0):
    return sample_with_value(
        two_level_data(), SCHEDULER_CONFIG, MeanIntensity(), targets, SHAPE, steps, rho,
        torch.Generator().manual_seed(seed), batch_size=32,
    )  # fmt: skip


def test_dps_draws_from_the_component_of_the_target_value():
    targets = torch.tensor([DARK] * 32 + [BRIGHT] * 32)
    result = constrained(targets, rho=0.2)
    measured = MeanIntensity()(result.images)
    assert (measured[:32] < 0).float().mean() >= 0.95
    assert (measured[32:] > 0).float().mean() >= 0.95
    assert (measured - targets).abs().median() < 0.05


def test_without_guidance_the_components_are_equally_likely():
    targets = torch.tensor([DARK] * 64)
    measured = MeanIntensity()(constrained(targets, rho=1e-6).images)
    assert 0.3 < (measured < 0).float().mean() < 0.7  # the guidance above is what picks the component


def test_dps_counts_one_network_evaluation_per_sample_and_step():
    denoiser = two_level_data()
    result = sample_with_value(
        denoiser, SCHEDULER_CONFIG, MeanIntensity(), torch.zeros(10), SHAPE, 7, 0.1,
        torch.Generator().manual_seed(0), batch_size=4,
    )  # fmt: skip
    assert result.nfe == 70 == denoiser.forward_samples
    assert denoiser.backward_samples == 70  # the gradient goes through the denoiser (DPS)
    assert result.images.shape == (10, *SHAPE)


def test_dps_step_moves_by_rho_against_the_normalised_gradient():
    scheduler = build_scheduler(SCHEDULER_CONFIG, "ddpm")
    scheduler.set_timesteps(10)
    t = scheduler.timesteps[3]
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(1))
    targets = torch.full((4,), BRIGHT)
    steps = [
        dps_step(
            two_level_data(),
            scheduler,
            MeanIntensity(),
            x,
            t,
            targets,
            rho,
            [torch.Generator().manual_seed(2 + i) for i in range(4)],
        )
        for rho in (0.0, 0.3)
    ]
    moved = (steps[1] - steps[0]).flatten(1)
    torch.testing.assert_close(moved.norm(dim=1), torch.full((4,), 0.3, dtype=moved.dtype))
    assert torch.all(moved.mean(dim=1) > 0)  # towards the brighter target


def region_samples(resample: int, n: int = 32, steps: int = 20):
    """Samples that keep a bright 3×4 patch (12 of 64 pixels), their mask and the denoiser."""
    known = torch.full((n, *SHAPE), BRIGHT)
    mask = torch.zeros(n, 1, SIZE, SIZE)
    mask[:, :, 2:5, 2:6] = 1
    denoiser = two_level_data()
    result = sample_with_region(
        denoiser, SCHEDULER_CONFIG, known, mask, steps, torch.Generator().manual_seed(0), resample=resample
    )
    return result, mask.expand_as(known).bool(), known, denoiser


def test_region_sampling_keeps_the_known_pixels_and_resamples_the_rest():
    result, inside, known, denoiser = region_samples(resample=1, n=6)
    assert torch.equal(result.images[inside], known[inside])
    outside = result.images[~inside].reshape(6, -1)
    assert outside.std() > 0.1  # the rest is sampled, not copied
    assert result.nfe == 6 * 20 == denoiser.forward_samples


def test_resampling_lets_the_rest_follow_the_kept_region():
    """Given 12 pixels at +0.5 the exact posterior puts (almost) every sample in the bright component;
    replacement alone ignores that, RePaint's resampling recovers most of it."""
    bright = {}
    for resample in (1, 10):
        result, inside, _, denoiser = region_samples(resample)
        bright[resample] = (result.images[~inside].reshape(32, -1).mean(dim=1) > 0).float().mean()
        assert result.nfe == 32 * (20 + (resample - 1) * 19) == denoiser.forward_samples
    assert bright[10] >= 0.8 and bright[10] > bright[1] + 0.2


@pytest.mark.parametrize("steps", [1, 3])
def test_region_sampling_with_a_full_mask_returns_the_known_images(steps):
    known = torch.rand(3, *SHAPE) * 2 - 1
    result = sample_with_region(
        two_level_data(), SCHEDULER_CONFIG, known, torch.ones(3, 1, SIZE, SIZE), steps,
        torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert torch.equal(result.images, known)


def test_each_sample_is_the_same_whatever_the_batch_size():
    """A sample's noise comes from its own generator: batches of 3 (the last one short) give the
    same images as one batch, for the value and the region constraints and plain sampling."""
    from diffxai.diffusion.sampling import sample

    def draws(batch_size):
        generator = torch.Generator().manual_seed(5)
        value = sample_with_value(
            two_level_data(), SCHEDULER_CONFIG, MeanIntensity(), torch.zeros(7), SHAPE, 6, 0.1, generator,
            batch_size=batch_size,
        ).images  # fmt: skip
        known, mask = torch.full((7, *SHAPE), BRIGHT), torch.zeros(7, 1, SIZE, SIZE)
        mask[:, :, :3] = 1
        region = sample_with_region(
            two_level_data(), SCHEDULER_CONFIG, known, mask, 6, generator, resample=2, batch_size=batch_size
        ).images
        plain = {
            sampler: sample(
                two_level_data(),
                SCHEDULER_CONFIG,
                7,
                SHAPE,
                6,
                sampler,
                generator,
                batch_size,
                progress=False,
            )[0]
            for sampler in ("ddpm", "ddim")
        }
        return value, region, plain["ddpm"], plain["ddim"]

    for one, batched in zip(draws(7), draws(3), strict=True):
        torch.testing.assert_close(batched, one, rtol=1e-5, atol=1e-5)
