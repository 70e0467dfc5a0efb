"""FreeMCG: the covariance identity, DDIM against diffusers, and ground truth on the exact toy.

On the toy (tests/toy_diffusion.py) the data are two bars A and B, the denoiser is the exact
posterior mean and the classifier is linear with A in class 0 and B in class 1. Particles of
A are mixtures of A and B, so they differ only where A and B differ: the FreeMCG map must be
exactly zero elsewhere, positive where B is bright and negative where A is; a counterfactual
of A must become B, with every network evaluation and classifier query counted.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from torch import nn

from diffxai.config.load import DefaultFillingValidator, load_schema
from diffxai.diffusion.tweedie import Tweedie
from diffxai.methods import freemcg
from diffxai.methods.base import ExplanationError, Models
from diffxai.methods.maps import compute_maps, map_function
from tests.toy_diffusion import SCHEDULER_CONFIG, BarClassifier, ExactDenoiser, bar_images

torch.set_num_threads(1)

A, B = bar_images()
CHANGED = (A != B)[0]


def schema_defaults(name: str) -> dict:
    schema = load_schema()
    params: dict = {}
    validator = DefaultFillingValidator({"$defs": schema["$defs"], **schema["$defs"][name]})
    assert not list(validator.iter_errors(params))
    return params


CE_DEFAULTS = schema_defaults("freemcg_params")
MAP_DEFAULTS = schema_defaults("freemcg_map_params")


class GradFreeBarClassifier(BarClassifier):
    """The bar classifier, failing if it is ever called with gradients enabled."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled(), "FreeMCG must query the classifier without gradients"
        assert not x.requires_grad
        return super().forward(x)


def toy_models(std: float = 0.0) -> Models:
    unet = ExactDenoiser(torch.stack([A, B]), std=std)
    return Models(GradFreeBarClassifier(A, B), unet, dict(SCHEDULER_CONFIG), None)


def ce_params(**overrides):
    """A short chain with a large step: the toy's two-point posterior is certain below
    t ≈ 200 (all particles equal, no gradient), so only the first steps can move the image."""
    return {**CE_DEFAULTS, "steps": 10, "particles": 16, "alpha": 1.0, **overrides}


def test_schema_defaults_are_the_published_settings_and_every_parameter():
    assert set(CE_DEFAULTS) == freemcg.CE_PARAMS
    assert set(MAP_DEFAULTS) == freemcg.MAP_PARAMS
    assert CE_DEFAULTS | {"target": None} == {
        "mode": "ddim", "t_start": 0.4, "steps": 100, "particles": 100, "alpha": 0.2, "beta": 0.02,
        "score": "probability", "unet_batch": 512, "target": None,
    }  # fmt: skip
    assert MAP_DEFAULTS["timesteps"] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert MAP_DEFAULTS["particles"] == 100


# --- the estimator -------------------------------------------------------------------------------------


def test_covariance_gradient_equals_cxx_times_the_gradient_for_a_linear_score():
    """Thm. 2 with f linear: the O(δ³) term vanishes, C_xf = C_xx ∇fᵀ exactly."""
    g = torch.Generator().manual_seed(0)
    n, k, d, m = 3, 50, 12, 2
    particles = torch.randn(n, k, d, generator=g, dtype=torch.float64)
    weights = torch.randn(m, d, generator=g, dtype=torch.float64)
    scores = particles @ weights.T + 0.7
    centred = particles - particles.mean(1, keepdim=True)
    cxx = centred.transpose(1, 2) @ centred / k  # (n, d, d)
    expected = (cxx @ weights.T).transpose(1, 2)  # (n, m, d)
    torch.testing.assert_close(freemcg.covariance_gradient(particles, scores), expected)


def test_one_particle_is_refused_not_turned_into_a_zero_gradient():
    with pytest.raises(ExplanationError, match=r"params\.particles=1"):
        freemcg.covariance_gradient(torch.ones(2, 1, 4), torch.ones(2, 1, 3))


def test_covariance_gradient_lies_in_the_span_of_the_particles():
    """Thm. 1: particles on a 2-D subspace give a gradient inside it, whatever f is."""
    g = torch.Generator().manual_seed(1)
    basis = torch.linalg.qr(torch.randn(10, 2, generator=g, dtype=torch.float64)).Q  # (10, 2)
    particles = (torch.randn(1, 40, 2, generator=g, dtype=torch.float64) @ basis.T) + 3.0
    scores = torch.sin(particles.sum(2, keepdim=True))
    gradient = freemcg.covariance_gradient(particles, scores)[0, 0]
    residual = gradient - basis @ (basis.T @ gradient)
    assert gradient.norm() > 1e-3
    assert residual.norm() < 1e-10


def test_unit_rms_and_scores():
    x = torch.tensor([[3.0, -4.0], [0.0, 0.0]])
    torch.testing.assert_close(
        freemcg.unit_rms(x), torch.tensor([[3.0, -4.0], [0.0, 0.0]]) / torch.tensor([[12.5**0.5], [1.0]])
    )
    p = torch.tensor([[0.25, 0.75]])
    torch.testing.assert_close(freemcg.score(p, "log_probability"), p.log())
    with pytest.raises(ExplanationError, match=r"params\.score"):
        freemcg.score(p, "logit")


# --- DDIM ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", [False, True])
def test_ddim_steps_equal_diffusers(clip):
    config = {**SCHEDULER_CONFIG, "clip_sample": clip}
    unet = ExactDenoiser(torch.stack([A, B]), std=0.3, scheduler_config=config)
    tweedie = Tweedie(unet, config)
    scheduler = DDIMScheduler(**config, set_alpha_to_one=True)
    scheduler.set_timesteps(10)
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
    ours = z.clone()
    timesteps = [int(t) for t in scheduler.timesteps]
    for j, t in enumerate(timesteps):
        output = unet(z, torch.tensor([t])).sample
        z = scheduler.step(output, t, z, eta=0.0).prev_sample
        t_prev = timesteps[j + 1] if j + 1 < len(timesteps) else -1
        ours = tweedie.ddim_step(*tweedie.x0_and_eps(ours, t), t_prev)
        torch.testing.assert_close(ours, z, atol=1e-9, rtol=1e-9)


def test_chain_timesteps_are_distinct_and_end_at_zero():
    assert freemcg._chain_timesteps(400, 5) == [400, 300, 200, 100, 0]
    assert freemcg._chain_timesteps(400, 1) == [400]
    with pytest.raises(ExplanationError, match=r"params\.steps=402"):
        freemcg._chain_timesteps(400, 402)


# --- maps: ground truth --------------------------------------------------------------------------------


def test_map_is_zero_where_a_and_b_agree_and_signed_like_b_minus_a():
    models = toy_models()
    params = {**MAP_DEFAULTS, "particles": 32}
    images = torch.stack([A, A])
    result = freemcg.attribution_maps(images, torch.tensor([1, 0]), models, params, 0, np.array([5, 6]))
    maps = torch.from_numpy(result.maps)
    assert maps.shape == (2, 8, 8)
    assert maps[:, ~CHANGED].abs().max() < 1e-6 * maps[:, CHANGED].abs().min()  # float32 round-off
    direction = (B - A)[0][CHANGED]  # +2 on B's bar, −2 on A's
    assert (maps[0][CHANGED] * direction > 0).all()  # towards B for class 1
    assert (maps[1][CHANGED] * direction < 0).all()  # away from B for class 0
    np.testing.assert_array_equal(result.nfe, [7 * 32] * 2)
    assert models.ddpm.forward_samples == result.nfe.sum()


def test_map_of_a_sample_does_not_depend_on_its_batch_and_particles_are_cached():
    models = toy_models(std=0.1)
    params = {**MAP_DEFAULTS, "particles": 8, "timesteps": [0.2, 0.5]}
    images = torch.stack([A, B, A])
    ids = np.array([10, 11, 12])
    together = compute_maps("freemcg", images, torch.tensor([1, 0, 1]), models, params, 0, ids, True)
    alone = compute_maps("freemcg", images[2:], torch.tensor([1]), models, params, 0, ids[2:])
    np.testing.assert_allclose(together.maps[2], alone.maps[0], atol=1e-6)
    assert together.extras["particles"].shape == (3, 2, 8, 1, 8, 8)
    assert together.extras["particles"].dtype == np.float16
    np.testing.assert_array_equal(together.classifier_calls, [16, 16, 16])  # counted rows, not assumed


# --- counterfactuals: ground truth ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [{}, {"score": "log_probability"}, {"mode": "ascent", "t_start": 0.3, "steps": 6, "beta": 0.0}],
)
def test_counterfactual_of_a_is_b_with_exact_counts(overrides):
    models = toy_models()
    params = ce_params(**overrides)
    result = freemcg.explain(A[None], np.array([0]), models, params, seed=0)
    assert result.success.all()
    assert np.abs(result.counterfactuals[0] - B.numpy()).mean() < 0.1
    k, steps = params["particles"], params["steps"]
    expected_nfe = steps * (k + 1) if params["mode"] == "ddim" else steps * k
    assert result.nfe[0] == expected_nfe == models.ddpm.forward_samples
    # queries: particles, plus the input, the CE and the particle mean
    assert result.classifier_calls[0] == steps * k + 3 == models.classifier.calls
    assert result.classifier_gradients[0] == 0 and result.nfe_backward[0] == 0
    assert result.extras["particle_mean"].shape == (1, 1, 8, 8)


def test_counterfactuals_do_not_depend_on_the_batch():
    models = toy_models(std=0.05)
    images = torch.stack([A, B, A])
    ids = np.array([3, 4, 5])
    params = ce_params(steps=4, particles=8)
    together = freemcg.explain(images, ids, models, params, seed=1)
    one_by_one = freemcg.explain(images, ids, models, params, seed=1, batch_size=1)
    # float32 matmuls of other batch sizes round differently; the normalised gradient carries that on
    np.testing.assert_allclose(together.counterfactuals, one_by_one.counterfactuals, atol=1e-4)
    np.testing.assert_array_equal(together.targets, [1, 0, 1])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mode": "sde"}, "params.mode"),
        ({"t_start": 1.2}, "params.t_start"),
        ({"steps": 500}, "params.steps=500"),
        ({"bogus": 1}, "unknown params"),
    ],
)
def test_bad_parameters_are_named(overrides, message):
    with pytest.raises(ExplanationError, match=message):
        freemcg.explain(A[None], np.array([0]), toy_models(), ce_params(**overrides), seed=0)


def test_a_nan_classifier_is_named_by_sample():
    class NaNClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()), requires_grad=False)

        def forward(self, x):
            return torch.full((len(x), 2), float("nan"))

    models = Models(NaNClassifier(), ExactDenoiser(torch.stack([A, B])), dict(SCHEDULER_CONFIG))
    with pytest.raises(ExplanationError, match="sample 7"):
        freemcg.explain(A[None], np.array([7]), models, ce_params(), seed=0)


def test_map_function_repeats_the_noise_unless_asked_for_fresh_seeds():
    models = toy_models(std=0.1)
    params = {**MAP_DEFAULTS, "particles": 6, "timesteps": [0.3]}
    images, targets, ids = torch.stack([A, B]), torch.tensor([1, 0]), np.array([1, 2])
    same = map_function("freemcg", models, params, 0, ids)
    torch.testing.assert_close(same(images, targets), same(images, targets))
    fresh = map_function("freemcg", models, params, 0, ids, fresh_seeds=True)
    first, second = fresh(images, targets), fresh(images, targets)
    torch.testing.assert_close(first, same(images, targets))  # the first call uses the seed itself
    assert not torch.allclose(first, second)


class RecordedGradient:
    """Stands in for ``freemcg.particle_gradient``: records where it is asked and returns a fixed,
    unnormalised gradient, so one chain step can be checked against its formula."""

    def __init__(self, gradient: torch.Tensor):
        self.gradient, self.points, self.timesteps = gradient, [], []

    def __call__(self, tweedie, blackbox, x, t, classes, noise, kind, keep=False):
        self.points.append(x.clone())
        self.timesteps.append(t)
        return freemcg.ParticleGradient(self.gradient.expand_as(x).clone(), x.clone())


def test_ascent_steps_add_the_unit_rms_gradient_and_pull_back_to_the_input(monkeypatch):
    """App. G's update, x ← x + α ĝ − β (x − x_input) with ĝ scaled to unit RMS, at every step."""
    fixed = RecordedGradient(5.0 * (B - A) + 0.5)
    monkeypatch.setattr(freemcg, "particle_gradient", fixed)
    alpha, beta = 0.3, 0.25
    params = ce_params(mode="ascent", t_start=0.3, steps=3, alpha=alpha, beta=beta)
    result = freemcg.explain(A[None], np.array([0]), toy_models(), params, seed=0)
    unit = fixed.gradient / fixed.gradient.pow(2).mean().sqrt()
    chain = [*fixed.points, torch.from_numpy(result.counterfactuals)]
    assert len(chain) == 4
    torch.testing.assert_close(chain[0], A[None])
    for x, following in itertools.pairwise(chain):
        torch.testing.assert_close(following, (x + alpha * unit - beta * (x - A)).clamp(-1, 1))
    assert not torch.equal(chain[1], chain[2])  # the step moved the image: the identity is not vacuous


def test_ddim_step_scales_the_gradient_by_gamma_t(monkeypatch):
    """In ddim mode the clean estimate at t moves by α γ_t ĝ − β (x0 − x_input), γ_t = √(ᾱ_t ᾱ_prev);
    one step ends at t_prev = −1 (ᾱ = 1), so the CE is that edited estimate."""
    fixed = RecordedGradient(3.0 * (B - A) - 0.2)
    monkeypatch.setattr(freemcg, "particle_gradient", fixed)
    alpha, beta = 0.4, 0.1
    params = ce_params(mode="ddim", t_start=0.4, steps=1, alpha=alpha, beta=beta)
    result = freemcg.explain(A[None], np.array([0]), toy_models(std=0.05), params, seed=0)
    (x0,), (t,) = fixed.points, fixed.timesteps
    scheduler = DDIMScheduler(**SCHEDULER_CONFIG)
    assert t == round(0.4 * scheduler.config.num_train_timesteps)
    gamma = float(scheduler.alphas_cumprod[t].sqrt())
    assert gamma < 0.9  # γ_t differs from 1 and from ᾱ_t enough to tell them apart
    unit = fixed.gradient / fixed.gradient.pow(2).mean().sqrt()
    expected = (x0 + alpha * gamma * unit - beta * (x0 - A)).clamp(-1, 1)
    torch.testing.assert_close(torch.from_numpy(result.counterfactuals), expected)


# --- particles, chain start and channels against the equations ----------------------------------


class ZeroNoise(nn.Module):
    """A UNet whose ε̂ is 0: x̂0(x_t) = x_t / sqrt(ᾱ_t) (no clipping), so a particle is
    x + sqrt((1 − ᾱ_t)/ᾱ_t) ε, written down from the forward process."""

    def __init__(self, channels: int = 1, size: int = 8) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.config = {"sample_size": size, "in_channels": channels}

    def forward(self, x: torch.Tensor, t: torch.Tensor):
        return type("Output", (), {"sample": torch.zeros_like(x)})()


UNCLIPPED = {**SCHEDULER_CONFIG, "clip_sample": False}


def test_particles_are_one_step_denoised_copies_noised_by_the_forward_process():
    """x^(k) = x̂0(sqrt(ᾱ_t) x + sqrt(1 − ᾱ_t) ε_k) and x̄ their mean: with antithetic draws
    (ε, −ε) the mean is x exactly, and each particle sits sqrt((1 − ᾱ_t)/ᾱ_t)·ε from it."""
    tweedie = Tweedie(ZeroNoise(), UNCLIPPED)
    t = 500
    epsilon = torch.randn(1, 2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = torch.cat([epsilon, -epsilon], dim=1)  # (N=1, K=4, C, H, W)
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    blackbox = freemcg.BlackBox(BarClassifier(A, B))
    result = freemcg.particle_gradient(
        tweedie, blackbox, x, t, torch.tensor([1]), noise, "probability", keep=True
    )
    alpha_bar = tweedie.alpha_bar[t]
    torch.testing.assert_close(result.particles, x[:, None] + ((1 - alpha_bar) / alpha_bar).sqrt() * noise)
    torch.testing.assert_close(result.mean, x, atol=1e-5, rtol=0)
    assert not torch.allclose(result.particles[:, 0], x, atol=1e-2)  # the mean is not one particle


def test_the_chain_starts_from_the_input_noised_to_t_start():
    """App. G: z_{t'} = sqrt(ᾱ_t') x + sqrt(1 − ᾱ_t') ε with t' = t_start·T; one DDIM step with no
    guidance and the ε̂ = 0 network lands on x̂0 = z / sqrt(ᾱ_t'), i.e. x + sqrt((1 − ᾱ)/ᾱ) ε."""
    models = Models(GradFreeBarClassifier(A, B), ZeroNoise(), dict(UNCLIPPED), None)
    params = ce_params(mode="ddim", t_start=0.3, steps=1, alpha=0.0, beta=0.0, particles=2)
    ids = np.array([4])
    result = freemcg.explain(A[None], ids, models, params, seed=7)
    epsilon = freemcg.SampleNoise(7, ids, (1, 8, 8)).draw([0])  # the chain's first draw
    alpha_bar = Tweedie(ZeroNoise(), UNCLIPPED).alpha_bar[300]
    expected = (A[None] + ((1 - alpha_bar) / alpha_bar).sqrt() * epsilon).clamp(-1, 1)
    torch.testing.assert_close(torch.from_numpy(result.counterfactuals), expected)


def test_a_map_averages_the_gradient_over_colour_channels_and_timesteps(monkeypatch):
    calls = []

    def fixed(tweedie, blackbox, x, t, classes, noise, kind, keep=False):
        calls.append(t)
        gradient = torch.arange(3.0).view(1, 3, 1, 1).expand_as(x) * (1 + t / 100)
        return freemcg.ParticleGradient(gradient.clone(), x.clone())

    monkeypatch.setattr(freemcg, "particle_gradient", fixed)
    models = Models(GradFreeBarClassifier(A, B), ZeroNoise(channels=3), dict(UNCLIPPED), None)
    params = {**MAP_DEFAULTS, "timesteps": [0.1, 0.3], "particles": 2}
    images = torch.zeros(2, 3, 8, 8)
    result = freemcg.attribution_maps(images, torch.tensor([0, 1]), models, params, 0, np.array([0, 1]))
    assert calls == [100, 300]
    # channels 0, 1, 2 give 0, 1, 2 (× 2 at t = 100, × 4 at t = 300): mean over timesteps 3, over channels 3
    np.testing.assert_allclose(result.maps, np.full((2, 8, 8), 3.0))


def test_a_fraction_close_to_one_stays_on_the_schedule():
    assert freemcg._timesteps([0.9999, 0.5], 1000) == [999, 500]
