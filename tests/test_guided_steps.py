"""DiME's guided pass and ACE's RePaint refinement against the seeds' equations, step by step.

The end-to-end toy tests (test_counterfactual_methods.py) check where the chains land; an
exact denoiser forgives small errors on the way there (a missing 1/sqrt(ᾱ), a sign, an
off-by-one noise level). Here every noise draw is fixed, the classifier is linear (its
margin gradient is a constant, written down by hand) and the perceptual network is the
identity, so each chain is re-derived from the equations and compared number for number:

- DiME (seed 003, eqs. 4 and 8, implementation details): z_τ = sqrt(ᾱ_τ) x + sqrt(1 − ᾱ_τ) ε;
  each reverse step shifts the posterior mean by −Σ_i (∇_{x_i}(λc L_class + λp L_perc) / sqrt(ᾱ_i)
  + η sign(z_i − x)), with x_i = x̂0(z_i) (Tweedie).
- ACE refinement (seed 004, App. A, Algorithm 2): each step denoises the collage
  m·z_i + (1 − m)·(sqrt(ᾱ_i) x + sqrt(1 − ᾱ_i) ε), the input noised to the same level i.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from diffxai.diffusion.respaced import RespacedDiffusion
from diffxai.methods import ace, dime
from diffxai.methods.base import Models
from tests.toy_diffusion import SCHEDULER_CONFIG, BarClassifier, ExactDenoiser, bar_images

torch.set_num_threads(1)

A, B = bar_images()
STEPS = 10  # respaced: index 4 is timestep 444 (ᾱ ≈ 0.37), so 1/sqrt(ᾱ) is far from 1


class Identity(nn.Module):
    """Perceptual 'features' = the image itself: L_perc = mean((x_i − x)²), gradient 2(x_i − x)/D."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x]


class Draws:
    """The noise tensors a chain consumes, in order, fixed in advance; counts what was used."""

    def __init__(self, count: int, shape: tuple[int, ...], seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.noises = [torch.randn(shape, generator=generator) for _ in range(count)]
        self.used = 0

    def __call__(self) -> torch.Tensor:
        self.used += 1
        return self.noises[self.used - 1]


def noised(x: torch.Tensor, alpha_bar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Eq. 4.1 / DiME's forward process: sqrt(ᾱ) x + sqrt(1 − ᾱ) ε."""
    return alpha_bar.sqrt() * x + (1 - alpha_bar).sqrt() * noise


def ancestral_step(
    diffusion: RespacedDiffusion, z: torch.Tensor, x0: torch.Tensor, i: int, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The unguided posterior mean at z_i and its noise term sqrt(Σ_i) ε (zero at i = 0), written
    from the respaced chain's β_i rather than through the class under test."""
    alpha_bar = diffusion.alpha_bar[i]
    previous = diffusion.alpha_bar[i - 1] if i > 0 else torch.tensor(1.0)
    beta = 1 - alpha_bar / previous
    mean = (previous.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - previous) * z) / (1 - alpha_bar)
    spread = (beta * (1 - previous) / (1 - alpha_bar)).sqrt() * noise if i > 0 else torch.zeros_like(z)
    return mean, spread


def chain_estimate(diffusion: RespacedDiffusion, z: torch.Tensor, x0: torch.Tensor, i: int, draws: Draws):
    """DiME's published clean image x_i: the unguided ancestral chain run from z_i to step 0
    (the step out of z_i reuses x̂0(z_i); one draw per step, the last one unused)."""
    for j in range(i, -1, -1):
        mean, spread = ancestral_step(diffusion, z, x0 if j == i else diffusion.predict_x0(z, j), j, draws())
        z = mean + spread
    return z


def dime_reference(
    diffusion: RespacedDiffusion, images: torch.Tensor, margin_gradient: torch.Tensor, params, draws: Draws
) -> torch.Tensor:
    """DiME from the seed's equations (no autograd), with Tweedie or chain clean estimates."""
    tau, pixels = params["tau"], images[0].numel()
    z = noised(images, diffusion.alpha_bar[tau - 1], draws())
    for i in range(tau - 1, -1, -1):
        x0 = diffusion.predict_x0(z, i)
        if params["clean_estimate"] == "chain" and i > 0:
            x0_tweedie, x0 = x0, chain_estimate(diffusion, z, x0, i, draws)
        else:
            x0_tweedie = x0
        gradient_x = params["lambda_c"] * margin_gradient + params["lambda_p"] * 2 * (x0 - images) / pixels
        shift = gradient_x / diffusion.alpha_bar[i].sqrt() + params["eta_l1"] * torch.sign(z - images)
        mean, spread = ancestral_step(diffusion, z, x0_tweedie, i, draws())
        z = mean - diffusion.guidance_variance[i] * shift + spread
    return z.clamp(-1, 1)


@pytest.mark.parametrize(
    ("tau", "lambda_p", "eta"), [(5, 0.0, 0.0), (5, 30.0, 0.0), (5, 0.0, 0.05), (3, 30.0, 0.05)]
)
def test_dime_pass_is_eq_8_guidance_of_the_noised_input(tau, lambda_p, eta):
    """Each term separately, then together: the classifier gradient divided by sqrt(ᾱ_i), the
    perceptual term pulling x_i towards x, and η·sign(z_i − x) on the noisy image."""
    classifier = BarClassifier(A, B)
    diffusion = RespacedDiffusion(ExactDenoiser(torch.stack([A, B]), std=0.3), SCHEDULER_CONFIG, STEPS)
    generator = torch.Generator().manual_seed(3)
    images = (torch.stack([A, B]) + 0.1 * torch.randn(2, 1, 8, 8, generator=generator)).clamp(-1, 1)
    targets = torch.tensor([1, 0])
    # margin loss max_other − logit_target of a linear head: its gradient is w_other − w_target
    weight = classifier.linear.weight.view(2, 1, 8, 8)
    margin_gradient = weight[1 - targets] - weight[targets]
    params = {"tau": tau, "lambda_p": lambda_p, "eta_l1": eta, "clean_estimate": "tweedie",
              "class_loss": "margin", "lambda_c": 2.0}  # fmt: skip
    models = Models(classifier, diffusion.unet, SCHEDULER_CONFIG, Identity())
    draws = Draws(tau + 1, tuple(images.shape), seed=4)
    counterfactuals, nfe = dime._guided_pass(
        diffusion, models, images, targets, params["lambda_c"], params, draws, np.array([0, 1])
    )
    assert draws.used == tau + 1 and nfe == tau
    draws.used = 0
    expected = dime_reference(diffusion, images, margin_gradient, params, draws)
    torch.testing.assert_close(counterfactuals, expected, rtol=1e-5, atol=1e-5)
    # and the guidance did something: without it the chain ends elsewhere
    draws.used = 0
    unguided = dime_reference(
        diffusion, images, margin_gradient * 0, {**params, "lambda_p": 0, "eta_l1": 0}, draws
    )
    assert (counterfactuals - unguided).abs().max() > 1e-2


@pytest.mark.parametrize("lambda_p", [0.0, 30.0])
def test_dime_chain_guides_with_the_clean_image_of_a_full_unguided_chain(lambda_p):
    """The published clean estimate: at every i > 0 the gradients are taken at the end of an
    unguided chain from z_i (i + 1 evaluations), while the guided step itself is the posterior
    mean of the one-step estimate; NFE per pass τ(τ + 1)/2."""
    tau = 4
    classifier = BarClassifier(A, B)
    diffusion = RespacedDiffusion(ExactDenoiser(torch.stack([A, B]), std=0.3), SCHEDULER_CONFIG, STEPS)
    images = torch.stack([A, B])
    targets = torch.tensor([1, 0])
    weight = classifier.linear.weight.view(2, 1, 8, 8)
    params = {"tau": tau, "lambda_p": lambda_p, "eta_l1": 0.05, "clean_estimate": "chain",
              "class_loss": "margin", "lambda_c": 2.0}  # fmt: skip
    models = Models(classifier, diffusion.unet, SCHEDULER_CONFIG, Identity())
    draws = Draws(1 + tau + sum(1 + i for i in range(1, tau)), tuple(images.shape), seed=6)
    counterfactuals, nfe = dime._guided_pass(
        diffusion, models, images, targets, params["lambda_c"], params, draws, np.array([0, 1])
    )
    assert draws.used == len(draws.noises) and nfe == tau * (tau + 1) // 2
    draws.used = 0
    margin_gradient = weight[1 - targets] - weight[targets]
    expected = dime_reference(diffusion, images, margin_gradient, params, draws)
    torch.testing.assert_close(counterfactuals, expected, rtol=1e-5, atol=1e-5)
    draws.used = 0
    one_step = {**params, "clean_estimate": "tweedie"}
    tweedie = dime_reference(diffusion, images, margin_gradient, one_step, draws)
    assert (counterfactuals - tweedie).abs().max() > 1e-2  # the chain's x_i is not x̂0(z_i)


def test_repaint_denoises_the_collage_with_the_input_at_the_same_noise_level():
    """Algorithm 2 with fixed draws: noise x' to τ, then per step i draw the known part
    q(x, i) and denoise m·z_i + (1 − m)·q(x, i); outside the mask the CE is x exactly."""
    tau = 5
    diffusion = RespacedDiffusion(ExactDenoiser(torch.stack([A, B]), std=0.3), SCHEDULER_CONFIG, STEPS)
    images, pre = A[None], B[None]
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 1:4, 3:6] = 1
    draws = Draws(2 * tau + 1, (1, 1, 8, 8), seed=5)
    counterfactual = ace.repaint(diffusion, images, pre, mask, tau, draws)
    assert draws.used == 2 * tau + 1
    draws.used = 0
    z = noised(pre, diffusion.alpha_bar[tau - 1], draws())
    for i in range(tau - 1, -1, -1):
        collage = mask * z + (1 - mask) * noised(images, diffusion.alpha_bar[i], draws())
        mean, spread = ancestral_step(diffusion, collage, diffusion.predict_x0(collage, i), i, draws())
        z = mean + spread
    expected = mask * z.clamp(-1, 1) + (1 - mask) * images
    torch.testing.assert_close(counterfactual, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(counterfactual[mask.expand_as(images) == 0], images[mask.expand_as(images) == 0])
