"""ε-, v- and x0-prediction give the same (ε, x0) for the same noisy image."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from diffxai.diffusion.parameterization import eps_and_x0


@pytest.fixture
def noisy():
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8, generator=generator) * 2 - 1
    eps = torch.randn(4, 1, 8, 8, generator=generator)
    t = torch.tensor([10, 200, 500, 900])
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    return x0, eps, t, scheduler, scheduler.add_noise(x0, eps, t), scheduler.alphas_cumprod[t]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_exact_prediction_recovers_noise_and_clean_image(noisy, prediction_type):
    x0, eps, t, scheduler, x_t, alpha_bar = noisy
    output = {"epsilon": eps, "v_prediction": scheduler.get_velocity(x0, eps, t), "sample": x0}[
        prediction_type
    ]
    eps_hat, x0_hat = eps_and_x0(output, x_t, alpha_bar, prediction_type)
    torch.testing.assert_close(eps_hat, eps, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(x0_hat, x0, atol=1e-4, rtol=1e-4)


def test_scalar_alpha_bar_broadcasts(noisy):
    x0, eps, _t, scheduler, _, _ = noisy
    alpha_bar = scheduler.alphas_cumprod[300]
    x_t = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps
    _, x0_hat = eps_and_x0(eps, x_t, alpha_bar, "epsilon")
    torch.testing.assert_close(x0_hat, x0, atol=1e-4, rtol=1e-4)


def test_unknown_prediction_type_is_refused(noisy):
    with pytest.raises(ValueError, match="prediction_type"):
        eps_and_x0(noisy[1], noisy[4], noisy[5], "score")


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_training_target_is_what_eps_and_x0_invert(noisy, prediction_type):
    from diffxai.training.diffusion import training_target

    x0, eps, t, _, x_t, alpha_bar = noisy
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type)
    target = training_target(scheduler, x0, eps, t)
    eps_hat, x0_hat = eps_and_x0(target, x_t, alpha_bar, prediction_type)
    torch.testing.assert_close(eps_hat, eps, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(x0_hat, x0, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_min_snr_weights_give_the_same_x0_weight_for_every_target(prediction_type):
    """Min-SNR-γ weights the x0-error by min(SNR, γ) whatever the network predicts."""
    from diffxai.training.diffusion import loss_weights

    alpha_bar = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
    snr = alpha_bar / (1 - alpha_bar)
    # squared error on each target per unit squared x0-error: ε: SNR, v: SNR + 1, x0: 1
    per_x0 = {"epsilon": snr, "v_prediction": snr + 1, "sample": torch.ones_like(snr)}[prediction_type]
    weights = loss_weights(alpha_bar, 5.0, prediction_type)
    torch.testing.assert_close(weights * per_x0, snr.clamp(max=5.0))
    assert torch.equal(loss_weights(alpha_bar, None, prediction_type), torch.ones_like(alpha_bar))
