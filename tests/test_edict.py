"""EDICT coupled-flow inversion: exact round trips, reduction to DDIM, and agreement with diffusers."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from diffxai.diffusion.edict import edict_coefficients, edict_denoise, edict_invert, edict_nfe

T = 1000
TIMESTEPS = list(range(0, 35 * 20, 20))  # first 35 timesteps of a 50-step DDIM schedule over T = 1000
SHAPE = (2, 1, 8, 8)


def _alphas_cumprod() -> torch.Tensor:
    """(T,) float64 ᾱ of the linear-β schedule."""
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0)


def _nonlinear_eps(x: torch.Tensor, t: int) -> torch.Tensor:
    """A noise predictor that depends nonlinearly on both x and t."""
    c_t = 0.5 + t / T
    return torch.tanh(x * c_t) + 0.1 * torch.sin(3 * x)


def _randn(seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def _image(dtype: torch.dtype) -> torch.Tensor:
    """(2, 1, 8, 8) uniform in [-1, 1]."""
    uniform = torch.rand(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return (uniform * 2 - 1).to(dtype)


# measured max |error|: ~2e-15 in float64, ~1.2e-6 in float32
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_invert_then_denoise_returns_the_image(dtype: torch.dtype, tol: float) -> None:
    image = _image(dtype)
    x, y = edict_invert(image, _nonlinear_eps, _alphas_cumprod(), TIMESTEPS)
    assert x.dtype == y.dtype == dtype
    assert (x - image).abs().max() > 0.3  # the latents really moved away from the image
    x0, y0 = edict_denoise(x, y, _nonlinear_eps, _alphas_cumprod(), TIMESTEPS)
    assert (x0 - image).abs().max() < tol
    assert (y0 - image).abs().max() < tol


# Each inverse mixing step multiplies x − y by 1/p², so float error grows like p^(−2S): at S = 35 this is
# ~2e-14 for p = 0.93 but ~5e-10 for p = 0.8 and useless for p = 0.5 (all float64).
@pytest.mark.parametrize("p", [0.9, 0.93])
def test_denoise_then_invert_returns_the_latents(p: float) -> None:
    x, y = _randn(1), _randn(2)
    x0, y0 = edict_denoise(x, y, _nonlinear_eps, _alphas_cumprod(), TIMESTEPS, p=p)
    x_back, y_back = edict_invert(x0, _nonlinear_eps, _alphas_cumprod(), TIMESTEPS, p=p, y=y0)
    assert (x_back - x).abs().max() < 1e-10
    assert (y_back - y).abs().max() < 1e-10


def _ddim(x: torch.Tensor, noise: dict[int, torch.Tensor], alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Plain deterministic DDIM from TIMESTEPS[-1] to clean via the x̂0 form, with eps(·, t) = noise[t]."""
    for i in reversed(range(len(TIMESTEPS))):
        alpha_t = alphas_cumprod[TIMESTEPS[i]]
        alpha_s = alphas_cumprod[TIMESTEPS[i - 1]] if i > 0 else torch.tensor(1.0, dtype=torch.float64)
        x0_hat = (x - (1 - alpha_t).sqrt() * noise[TIMESTEPS[i]]) / alpha_t.sqrt()
        x = alpha_s.sqrt() * x0_hat + (1 - alpha_s).sqrt() * noise[TIMESTEPS[i]]
    return x


@pytest.mark.parametrize("p", [0.3, 0.93])
def test_denoise_with_state_independent_eps_is_plain_ddim(p: float) -> None:
    noise = {t: _randn(100 + t) for t in TIMESTEPS}
    start = _randn(3)
    x, y = edict_denoise(start, start, lambda _x, t: noise[t], _alphas_cumprod(), TIMESTEPS, p=p)
    expected = _ddim(start, noise, _alphas_cumprod())
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("t", "s"), [(400, 380), (0, None)])
def test_coefficients_match_diffusers_ddim_step(t: int, s: int | None) -> None:
    scheduler = DDIMScheduler(
        num_train_timesteps=T,
        beta_schedule="linear",
        beta_start=1e-4,
        beta_end=0.02,
        clip_sample=False,
        set_alpha_to_one=True,
        prediction_type="epsilon",
    )
    scheduler.set_timesteps(50)
    assert t in scheduler.timesteps.tolist()
    timesteps = [t] if s is None else [s, t]  # the last step goes from t down to s (or to clean)
    a, b = edict_coefficients(scheduler.alphas_cumprod, timesteps)
    x_t, eps = _randn(4), _randn(5)
    prev = scheduler.step(eps, t, x_t, eta=0.0).prev_sample
    # diffusers takes square roots of its float32 ᾱ in float32 and goes through x̂0: the result is
    # exact to a few float32 ulps of the inputs (observed 4e-9 to 2e-7 absolute, depending on the
    # CPU); a wrong coefficient is off by ~1e-2
    error = (prev - (a[-1] * x_t + b[-1] * eps)).abs()
    bound = 16 * torch.finfo(torch.float32).eps * (x_t.abs() + eps.abs())
    assert (error <= bound).all(), float((error / bound).max())
    # the float64 linear-β schedule agrees to float32 precision
    a64, b64 = edict_coefficients(_alphas_cumprod(), timesteps)
    torch.testing.assert_close(a64, a, rtol=1e-5, atol=0)
    torch.testing.assert_close(b64, b, rtol=0, atol=1e-5)


def test_each_step_calls_eps_twice() -> None:
    calls: list[int] = []

    def counting_eps(x: torch.Tensor, t: int) -> torch.Tensor:
        calls.append(t)
        return _nonlinear_eps(x, t)

    x, y = edict_invert(_image(torch.float64), counting_eps, _alphas_cumprod(), TIMESTEPS)
    assert calls == [t for t in TIMESTEPS for _ in range(2)]
    assert len(calls) == edict_nfe(len(TIMESTEPS))
    calls.clear()
    edict_denoise(x, y, counting_eps, _alphas_cumprod(), TIMESTEPS)
    assert calls == [t for t in reversed(TIMESTEPS) for _ in range(2)]


@pytest.mark.parametrize("p", [0.0, 1.0, -0.2, 1.5])
def test_invalid_p_is_rejected(p: float) -> None:
    image = _image(torch.float64)
    with pytest.raises(ValueError, match=rf"p={p}"):
        edict_invert(image, _nonlinear_eps, _alphas_cumprod(), TIMESTEPS, p=p)
    with pytest.raises(ValueError, match=rf"p={p}"):
        edict_denoise(image, image, _nonlinear_eps, _alphas_cumprod(), TIMESTEPS, p=p)


@pytest.mark.parametrize(
    ("timesteps", "message"),
    [
        ([0, 40, 20], "ascending.*40, 20"),
        ([0, 20, 20], "ascending"),
        ([0, 1000], "1000"),
        ([-1, 5], "-1"),
        ([], "empty"),
    ],
)
def test_invalid_timesteps_are_rejected(timesteps: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        edict_coefficients(_alphas_cumprod(), timesteps)
    with pytest.raises(ValueError, match=message):
        edict_invert(_image(torch.float64), _nonlinear_eps, _alphas_cumprod(), timesteps)
