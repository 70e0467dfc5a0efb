"""DiME, ACE and the respaced diffusion on a toy with an exact denoiser (ground truth).

The data are two images, A (a horizontal bar) and B (a vertical bar), or Gaussian blobs
around them; the denoiser is the exact posterior mean and the classifier is linear with
A in class 0 and B in class 1 (tests/toy_diffusion.py). A counterfactual of A for class 1
must therefore be B, and every count of network evaluations can be checked by counting calls.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from torch import nn

from diffxai.config.load import DefaultFillingValidator, load_schema
from diffxai.diffusion.respaced import RespacedDiffusion, space_timesteps
from diffxai.jobs.explain import shard_batches
from diffxai.methods import ace, dime
from diffxai.methods.base import (
    ExplanationError,
    Explanations,
    Models,
    SampleNoise,
    check_images,
    choose_targets,
    class_loss,
    in_batches,
)
from tests.toy_diffusion import SCHEDULER_CONFIG, BarClassifier, ExactDenoiser, bar_images

# Small CPU workloads: extra threads only contend (as in test_models.py).
torch.set_num_threads(1)

A, B = bar_images()
CHANGED = (A != B)[0]  # (8, 8): the 10 pixels where the two bars differ
T = SCHEDULER_CONFIG["num_train_timesteps"]


def schema_defaults(method: str) -> dict:
    """The method's parameters as the config fills them: every schema default."""
    schema = load_schema()
    params: dict = {}
    errors = list(
        DefaultFillingValidator(
            {"$defs": schema["$defs"], **schema["$defs"][f"{method}_params"]}
        ).iter_errors(params)
    )
    assert not errors
    return params


DIME_DEFAULTS = schema_defaults("dime")
ACE_DEFAULTS = schema_defaults("ace")


def dime_params(**overrides):
    """Every DiME parameter: schema defaults with a short chain and no perceptual term."""
    return {**DIME_DEFAULTS, "steps": 20, "tau": 8, "lambda_p": 0, **overrides}


def ace_params(**overrides):
    """Every ACE parameter: schema defaults with a larger step, fewer attack steps and λd = 0
    (through the toy's saturated posterior the class gradient is far below the default
    λd = 0.001 for l1, and the attack would not move)."""
    return {**ACE_DEFAULTS, "step_size": 0.1, "attack_steps": 30, "lambda_d": 0.0, **overrides}


def toy_models(std: float = 0.0, classifier: nn.Module | None = None) -> Models:
    """Exact denoiser of {A, B} (Dirac points, or Gaussians of ``std``) and the bar classifier."""
    unet = ExactDenoiser(torch.stack([A, B]), std=std)
    return Models(classifier or BarClassifier(A, B), unet, dict(SCHEDULER_CONFIG), None)


def test_schema_defaults_give_every_parameter_the_methods_read():
    assert set(DIME_DEFAULTS) == dime.PARAMS
    assert set(ACE_DEFAULTS) == ace.PARAMS
    small = {"steps": 4, "tau": 2}
    dime.explain(A[None], np.array([0]), toy_models(), {**DIME_DEFAULTS, **small, "lambda_p": 0}, seed=0)
    ace.explain(
        A[None], np.array([0]), toy_models(0.02), {**ACE_DEFAULTS, **small, "attack_steps": 2}, seed=0
    )


def noisy_a(seed: int = 0, scale: float = 0.05) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (A + scale * torch.randn(A.shape, generator=g)).clamp(-1, 1)


def per_pixel_error(images, reference) -> np.ndarray:
    return np.abs(np.asarray(images) - reference.numpy()).reshape(len(images), -1).mean(1)


# --- the toy itself ------------------------------------------------------------------------------------


def test_toy_classifier_puts_a_in_class_0_and_b_in_class_1_confidently():
    logits = BarClassifier(A, B)(torch.stack([A, B, (A + B) / 2]))
    torch.testing.assert_close(logits[:, 1] - logits[:, 0], torch.tensor([-4.0, 4.0, 0.0]))


def test_toy_denoiser_is_the_exact_posterior_mean_of_two_points():
    unet = ExactDenoiser(torch.stack([A, B]))
    alpha_bar = DDPMScheduler(**SCHEDULER_CONFIG).alphas_cumprod.double()
    t = torch.tensor([700, 700])
    a = alpha_bar[700]
    g = torch.Generator().manual_seed(10)
    z = torch.stack([A, B]).double() * a.sqrt() * 0.3 + torch.randn(
        2, 1, 8, 8, generator=g, dtype=torch.float64
    )
    # brute force: Gaussian likelihood of each point, normalised
    sq = torch.stack([((z - a.sqrt() * mu.double()) ** 2).flatten(1).sum(1) for mu in (A, B)], 1)
    w = torch.softmax(-sq / (2 * (1 - a)), 1)
    expected = w[:, :1, None, None] * A.double() + w[:, 1:, None, None] * B.double()
    torch.testing.assert_close(unet.x0(z, t), expected)
    eps = unet(z.float(), t).sample.double()
    torch.testing.assert_close((z - (1 - a).sqrt() * eps) / a.sqrt(), expected, atol=1e-5, rtol=0)


# --- DiME: ground truth --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clean_estimate", "loss"), [("chain", "margin"), ("tweedie", "margin"), ("tweedie", "ce")]
)
def test_dime_turns_a_into_b(clean_estimate, loss):
    models = toy_models()
    images = torch.stack([A, noisy_a()])
    params = dime_params(clean_estimate=clean_estimate, class_loss=loss)
    result = dime.explain(images, np.array([0, 1]), models, params, seed=0)
    assert per_pixel_error(result.counterfactuals, B).max() < 0.1
    assert result.success.all()
    np.testing.assert_array_equal(result.sources, [0, 0])
    np.testing.assert_array_equal(result.targets, [1, 1])
    np.testing.assert_array_equal(result.extras["flip_lambda_c"], [params["lambda_c"][0]] * 2)
    tau = params["tau"]
    per_attempt = tau * (tau + 1) // 2 if clean_estimate == "chain" else tau
    np.testing.assert_array_equal(result.nfe, [per_attempt, per_attempt])
    assert models.ddpm.forward_samples == result.nfe.sum()  # the count is the real one
    np.testing.assert_array_equal(result.nfe_backward, [0, 0])
    assert models.ddpm.backward_samples == 0  # DiME differentiates the classifier only
    np.testing.assert_array_equal(result.classifier_calls, [1 + tau + 1] * 2)
    np.testing.assert_array_equal(result.classifier_gradients, [tau, tau])
    assert models.classifier.calls == result.classifier_calls.sum()
    assert np.all(result.counterfactuals >= -1) and np.all(result.counterfactuals <= 1)


@pytest.mark.parametrize("clean_estimate", ["chain", "tweedie"])
def test_dime_without_guidance_keeps_a(clean_estimate):
    """The same run with a negligible classifier scale: the chain returns to A, no flip."""
    models = toy_models()
    images = torch.stack([A, noisy_a()])
    params = dime_params(clean_estimate=clean_estimate, lambda_c=[1e-6])
    result = dime.explain(images, np.array([0, 1]), models, params, seed=0)
    assert per_pixel_error(result.counterfactuals, A).max() < 0.1
    assert not result.success.any()
    assert np.isnan(result.extras["flip_lambda_c"]).all()


def test_dime_escalates_lambda_c_only_for_samples_not_flipped():
    """Over many samples: a negligible λc flips at most a few (unguided sampling of the
    posterior), the next λc flips the rest; NFE adds one attempt per λc tried."""
    models = toy_models()
    n = 16
    params = dime_params(clean_estimate="tweedie", lambda_c=[1e-6, 10])
    result = dime.explain(A[None].repeat(n, 1, 1, 1), np.arange(n), models, params, seed=1)
    flip = result.extras["flip_lambda_c"]
    first = flip == np.float32(1e-6)
    assert first.sum() <= n // 4
    assert set(np.unique(flip[~first])) == {10.0}
    assert result.success.all()
    tau = params["tau"]
    np.testing.assert_array_equal(result.nfe, np.where(first, tau, 2 * tau))
    np.testing.assert_array_equal(result.classifier_calls, np.where(first, tau + 2, 2 * tau + 3))
    assert models.ddpm.forward_samples == result.nfe.sum()
    assert per_pixel_error(result.counterfactuals, B).max() < 0.1


# --- ACE: ground truth ---------------------------------------------------------------------------------
# The exact denoiser of Dirac points is a hard nearest-point rule at low noise, so the filter
# F_τ has zero gradient; ACE's toy uses Gaussian blobs (σ0 = 0.02) whose posterior is smooth.


def _mask_and_ce(result, row=0):
    mask = torch.from_numpy(result.extras["masks"][row]).bool()  # (1, 8, 8)
    return mask, torch.from_numpy(result.counterfactuals[row])


@pytest.mark.parametrize(("attack", "step_size"), [("pgd", 0.1), ("cw", 0.1)])
@pytest.mark.parametrize("mask_from", ["attacked", "filtered"])
def test_ace_turns_a_into_b_inside_the_mask(attack, step_size, mask_from):
    models = toy_models(std=0.02)
    params = ace_params(attack=attack, step_size=step_size, mask_from=mask_from)
    result = ace.explain(A[None], np.array([0]), models, params, seed=0)
    mask, ce = _mask_and_ce(result)
    assert result.success.all()
    assert result.extras["flip_attack_step"][0] >= 0
    assert mask[0][CHANGED].all()  # the mask covers every changed pixel ...
    assert mask.sum() <= CHANGED.sum() + 4  # ... and little else
    inside = mask.expand_as(ce)
    assert (ce - B)[inside].abs().mean() < 0.1
    assert torch.equal(ce[~inside], A[~inside])  # outside the mask the CE is the input, exactly
    pre = torch.from_numpy(result.extras["pre_explanations"])  # the attacked x'
    assert (pre[0] - B)[0][CHANGED].abs().max() < 1  # every changed pixel is past the midpoint
    if mask_from == "attacked":  # the returned mask is region_mask of the returned x'
        expected = ace.region_mask(A[None], pre, ace.dilation_size(params, 8), params["threshold"])
        np.testing.assert_array_equal(result.extras["masks"], expected.numpy().astype(np.uint8))
    # documented counts, and the counted network evaluations
    tau, steps = params["tau"], params["attack_steps"]
    extra = tau if mask_from == "filtered" else 0
    np.testing.assert_array_equal(result.nfe, [steps * tau + tau + extra])
    np.testing.assert_array_equal(result.nfe_backward, [steps * tau])
    np.testing.assert_array_equal(result.classifier_calls, [steps + 2])
    np.testing.assert_array_equal(result.classifier_gradients, [steps])
    assert models.ddpm.forward_samples == result.nfe.sum()
    assert models.ddpm.backward_samples == result.nfe_backward.sum()


def test_ace_with_too_few_attack_steps_does_not_flip():
    """The same attack stopped after 3 steps (0.3 of the 1.0 needed to reach the midpoint)."""
    result = ace.explain(A[None], np.array([0]), toy_models(std=0.02), ace_params(attack_steps=3), seed=0)
    assert not result.success.any()
    assert result.extras["flip_attack_step"][0] == -1


def test_ace_early_stop_stops_attacking_flipped_samples():
    """An easy sample (10% of the way from A to the boundary) flips after a step or two and
    stops there; A needs about 10 steps; without early stop both run every step. (A stopped
    sample sits at the class boundary, so its CE is not asserted here.)"""
    easy = A + 0.9 * ((A + B) / 2 - A)
    images = torch.stack([easy, A])
    models = toy_models(std=0.02)
    params = ace_params(early_stop=True, mask_from="attacked")
    stopped = ace.explain(images, np.array([0, 1]), models, params, seed=0)
    tau, steps = 5, 30
    flip = stopped.extras["flip_attack_step"]
    assert 0 <= flip[0] < flip[1] < steps - 1
    np.testing.assert_array_equal(stopped.nfe_backward, (flip + 1) * tau)
    np.testing.assert_array_equal(stopped.nfe, (flip + 1) * tau + tau)
    np.testing.assert_array_equal(stopped.classifier_gradients, flip + 1)
    np.testing.assert_array_equal(stopped.classifier_calls, flip + 3)
    assert models.ddpm.backward_samples == stopped.nfe_backward.sum()
    assert models.ddpm.forward_samples == stopped.nfe.sum()
    full = ace.explain(
        images, np.array([0, 1]), toy_models(std=0.02), {**params, "early_stop": False}, seed=0
    )
    np.testing.assert_array_equal(full.nfe_backward, [steps * tau] * 2)
    np.testing.assert_array_equal(full.extras["flip_attack_step"], flip)  # same noise, same first flip
    assert (stopped.nfe_backward < full.nfe_backward).all()
    assert full.success.all()


def test_region_mask_thresholds_the_normalised_change_and_dilates_it():
    images = torch.zeros(1, 3, 8, 8)
    pre = images.clone()
    pre[0, :, 2, 2] = 0.1  # channel sum 0.3: the maximum
    pre[0, 0, 6, 6] = -0.06  # 0.2 of the maximum
    pre[0, 1, 6, 1] = 0.03  # 0.1 of the maximum: below the threshold
    mask = ace.region_mask(images, pre, 1, 0.15)
    assert mask.shape == (1, 1, 8, 8)
    assert set(map(tuple, mask[0, 0].nonzero().tolist())) == {(2, 2), (6, 6)}
    dilated = ace.region_mask(images, pre, 3, 0.15)[0, 0]
    expected = torch.zeros(8, 8)
    expected[1:4, 1:4] = 1
    expected[5:8, 5:8] = 1
    assert torch.equal(dilated, expected)
    assert not ace.region_mask(images, images, 3, 0.15).any()  # no change, no mask


def test_repaint_harmonises_the_masked_region_with_the_known_input():
    """Refining B inside a mask of 2 of its bar's pixels, with A known outside: the collage
    is A in 8 of the 10 pixels where A and B differ, so the exact denoiser resolves it to A
    and the masked pixels become A's background, not the B bar of the pre-explanation."""
    unet = ExactDenoiser(torch.stack([A, B]))
    diffusion = RespacedDiffusion(unet, SCHEDULER_CONFIG, 25)
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 1:3, 4] = 1
    g = torch.Generator().manual_seed(9)
    out = ace.repaint(diffusion, A[None], B[None], mask, 5, lambda: torch.randn(1, 1, 8, 8, generator=g))
    assert unet.forward_samples == 5
    torch.testing.assert_close(out[0], A, atol=1e-3, rtol=0)


@pytest.mark.parametrize(("size", "expected"), [(128, 15), (64, 7), (32, 3), (8, 1)])
def test_dilation_scales_with_the_image_size_and_is_odd(size, expected):
    assert ace.dilation_size({"dilation": None}, size) == expected
    assert ace.dilation_size({"dilation": 4}, size) == 4


# --- the respaced chain against diffusers ---------------------------------------------------------------


class RandomNet(nn.Module):
    """A fixed random conv: an arbitrary network output large enough to make x̂0 clip."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) / 3)
            self.conv.bias.fill_(0.1)
        self.requires_grad_(False)

    def forward(self, z, t):
        scale = 1 + torch.as_tensor(t, dtype=z.dtype).view(-1, 1, 1, 1) / T
        return SimpleNamespace(sample=3 * self.conv(z) * scale)


def _network(kind: str):
    return ExactDenoiser(torch.stack([A, B])) if kind == "exact" else RandomNet()


def _float64_scheduler(config, timesteps=None) -> DDPMScheduler:
    """diffusers' scheduler computing in float64 from the same (float32) ᾱ table: in float32
    its 1 − ᾱ_t/ᾱ_{t−1} loses ~1e-4 relative precision at small t (prev_sample off by ~1e-4)."""
    scheduler = DDPMScheduler(**config)
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()
    scheduler.one = scheduler.one.double()
    if timesteps is not None:
        scheduler.set_timesteps(timesteps=timesteps)
    assert scheduler.config.variance_type == "fixed_small"
    return scheduler


def _compare_steps(diffusion, scheduler, unet, z, indices):
    """diffusion.step(z, i, noise) against scheduler.step(..., generator) with the noise that
    diffusers draws (randn_tensor(shape, generator) = torch.randn with a generator so seeded)."""
    for i in indices:
        t = diffusion.timesteps[i]
        with torch.no_grad():
            output = unet(z, torch.full((len(z),), t)).sample
            expected = scheduler.step(
                output.double(), t, z.double(), generator=torch.Generator().manual_seed(i)
            ).prev_sample
            noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(i), dtype=torch.float64)
            got = diffusion.step(z, i, noise.float())
        torch.testing.assert_close(got.double(), expected, atol=2e-6, rtol=0, msg=f"i={i}, t={t}")


@pytest.mark.parametrize(
    ("kind", "prediction_type"), [("exact", "epsilon"), ("random", "epsilon"), ("random", "v_prediction")]
)
def test_unrespaced_step_equals_diffusers_ddpm_step(kind, prediction_type):
    config = {**SCHEDULER_CONFIG, "prediction_type": prediction_type}
    unet = _network(kind)
    diffusion = RespacedDiffusion(unet, config, T)
    assert diffusion.timesteps == list(range(T))
    z = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    _compare_steps(diffusion, _float64_scheduler(config), unet, z, [0, 1, 2, 10, 300, 999])


@pytest.mark.parametrize("num_steps", [2, 7, 20])
def test_respaced_step_equals_diffusers_on_the_same_custom_timesteps(num_steps):
    unet = RandomNet()
    diffusion = RespacedDiffusion(unet, SCHEDULER_CONFIG, num_steps)
    scheduler = _float64_scheduler(SCHEDULER_CONFIG, timesteps=diffusion.timesteps[::-1])
    z = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    _compare_steps(diffusion, scheduler, unet, z, range(num_steps))


@pytest.mark.parametrize("num_steps", [1, 7, 20, 1000])
def test_respaced_alpha_bar_is_the_training_alpha_bar_at_the_chosen_timesteps(num_steps):
    diffusion = RespacedDiffusion(RandomNet(), SCHEDULER_CONFIG, num_steps)
    alphas_cumprod = DDPMScheduler(**SCHEDULER_CONFIG).alphas_cumprod
    assert diffusion.num_steps == num_steps
    torch.testing.assert_close(diffusion.alpha_bar, alphas_cumprod[diffusion.timesteps])
    x0 = torch.stack([A, B])
    eps = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    for i in {0, num_steps // 2, num_steps - 1}:
        t = torch.full((2,), diffusion.timesteps[i])
        torch.testing.assert_close(
            diffusion.q_sample(x0, i, eps), DDPMScheduler(**SCHEDULER_CONFIG).add_noise(x0, eps, t)
        )


@pytest.mark.parametrize("num_train", [1000, 50, 7])
def test_space_timesteps_spans_the_chain_evenly(num_train):
    for num_steps in range(2, num_train + 1, 1 if num_train < 100 else 37):
        steps = space_timesteps(num_train, num_steps)
        assert len(steps) == num_steps
        assert steps[0] == 0 and steps[-1] == num_train - 1
        assert (np.diff(steps) > 0).all()  # strictly increasing
        gaps = np.diff(steps)
        assert gaps.max() - gaps.min() <= 1  # evenly spaced
    assert space_timesteps(num_train, 1) == [num_train - 1]
    assert space_timesteps(num_train, num_train) == list(range(num_train))
    for bad in (0, -1, num_train + 1):
        with pytest.raises(ValueError, match="steps"):
            space_timesteps(num_train, bad)


def test_q_sample_then_exact_predict_x0_returns_the_point_at_low_noise():
    diffusion = RespacedDiffusion(ExactDenoiser(torch.stack([A, B])), SCHEDULER_CONFIG, 20)
    x0 = torch.stack([A, B, B, A])
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    for i in (0, 1, 2, 3):
        torch.testing.assert_close(
            diffusion.predict_x0(diffusion.q_sample(x0, i, noise), i), x0, atol=1e-4, rtol=0
        )
    # at the noisiest step the estimate is a proper mixture of the two points, not either
    x0_hat = diffusion.predict_x0(diffusion.q_sample(x0, 19, noise), 19)
    assert (per_pixel_error(x0_hat, A) > 0.01).all() and (per_pixel_error(x0_hat, B) > 0.01).all()


def test_denoise_is_a_chain_of_steps_and_lands_on_a_data_point():
    unet = ExactDenoiser(torch.stack([A, B]))
    diffusion = RespacedDiffusion(unet, SCHEDULER_CONFIG, 20)
    g = torch.Generator().manual_seed(5)
    z = diffusion.q_sample(A[None].repeat(4, 1, 1, 1), 9, torch.randn(4, 1, 8, 8, generator=g))
    noises = [torch.randn(4, 1, 8, 8, generator=g) for _ in range(10)]
    out = diffusion.denoise(z, 9, noises)
    assert unet.forward_samples == 4 * 10  # start + 1 NFE per sample
    manual = z
    for k, i in enumerate(range(9, -1, -1)):
        manual = diffusion.step(manual, i, noises[k])
    torch.testing.assert_close(out, manual)
    nearest = np.minimum(per_pixel_error(out, A), per_pixel_error(out, B))
    assert nearest.max() < 1e-3


def test_guidance_shifts_the_mean_by_the_step_variance():
    diffusion = RespacedDiffusion(ExactDenoiser(torch.stack([A, B])), SCHEDULER_CONFIG, 20)
    z = diffusion.q_sample(A[None], 5, torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(6)))
    noise = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    shift = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(8))
    for i, scale in [(5, diffusion.variance[5]), (1, diffusion.variance[1]), (0, diffusion.variance[1])]:
        guided = diffusion.step(z, i, noise, shift=shift)
        torch.testing.assert_close(guided, diffusion.step(z, i, noise) - scale * shift)
    assert diffusion.variance[0] == 0


# --- targets and losses --------------------------------------------------------------------------------


def test_binary_targets_are_the_other_class():
    logits = torch.tensor([[2.0, -1.0], [-3.0, 0.5], [0.1, 0.0]])
    assert choose_targets(logits, None).tolist() == [1, 0, 1]


def test_multiclass_targets_are_the_runner_up_or_the_configured_class():
    logits = torch.tensor([[0.0, 3.0, 1.0, -2.0], [5.0, 0.0, 1.0, 4.0]])
    assert choose_targets(logits, None).tolist() == [2, 3]
    assert choose_targets(logits, 2).tolist() == [2, 2]


def test_an_image_predicted_as_the_target_goes_to_its_runner_up():
    """A fixed target on a multi-class task: every image not of it is explained towards it, the
    ones already predicted as it towards their runner-up (not a failed job)."""
    logits = torch.tensor([[0.0, 3.0, 1.0], [0.0, 1.0, 3.0], [2.5, 0.0, 3.0]])
    assert choose_targets(logits, 2).tolist() == [2, 1, 0]
    with pytest.raises(ExplanationError, match="target=5"):
        choose_targets(logits, 5)


def test_class_losses():
    logits = torch.tensor([[1.0, 4.0, 2.5], [0.0, -1.0, 3.0], [2.0, 2.0, -5.0]])
    targets = torch.tensor([2, 2, 0])
    torch.testing.assert_close(class_loss(logits, targets, "margin"), torch.tensor([1.5, -3.0, 0.0]))
    torch.testing.assert_close(
        class_loss(logits, targets, "ce"), nn.functional.cross_entropy(logits, targets, reduction="none")
    )
    with pytest.raises(ExplanationError, match="class_loss"):
        class_loss(logits, targets, "hinge")


# --- bad inputs ----------------------------------------------------------------------------------------

METHODS = {
    "dime": (
        dime.explain,
        lambda **kw: dime_params(**{"clean_estimate": "tweedie", "steps": 4, "tau": 2, **kw}),
    ),
    "ace": (ace.explain, lambda **kw: ace_params(**{"steps": 4, "tau": 2, "attack_steps": 2, **kw})),
}


@pytest.fixture(params=sorted(METHODS))
def method(request):
    return METHODS[request.param]


def test_images_of_the_wrong_shape_are_refused(method):
    explain, params = method
    for shape in [(2, 1, 7, 7), (2, 3, 8, 8)]:
        with pytest.raises(ExplanationError, match="shape"):
            explain(torch.zeros(shape), np.array([0, 1]), toy_models(), params(), seed=0)


def test_a_pixel_outside_the_range_names_the_sample(method):
    explain, params = method
    images = torch.stack([A, A.clone()])
    images[1, 0, 5, 5] = 1.5
    with pytest.raises(ExplanationError, match=r"sample 17\b"):
        explain(images, np.array([4, 17]), toy_models(), params(), seed=0)
    images[1, 0, 5, 5] = float("nan")
    with pytest.raises(ExplanationError, match=r"sample 17\b"):
        check_images(images, (1, 8, 8), np.array([4, 17]))
    images[1, 0, 5, 5] = 1 + 5e-4  # inside the rounding tolerance
    check_images(images, (1, 8, 8), np.array([4, 17]))


class NanForMarked(BarClassifier):
    """The bar classifier, NaN for images whose corner pixel is set."""

    def forward(self, x):
        logits = super().forward(x)
        return torch.where(x[:, :1, 0, 0] > 0, torch.full_like(logits, float("nan")), logits)


def test_a_classifier_returning_nan_names_the_sample(method):
    explain, params = method
    images = torch.stack([A, A.clone(), A.clone()])
    images[2, 0, 0, 0] = 1.0
    with pytest.raises(ExplanationError, match=r"sample 23\b.*non-finite"):
        explain(images, np.array([8, 9, 23]), toy_models(classifier=NanForMarked(A, B)), params(), seed=0)


def test_unknown_or_invalid_params_are_named(method):
    explain, params = method
    with pytest.raises(ExplanationError, match="lambda_x"):
        explain(A[None], np.array([0]), toy_models(), {**params(), "lambda_x": 1.0}, seed=0)
    with pytest.raises(ExplanationError, match="tau"):
        explain(A[None], np.array([0]), toy_models(), params(tau=9), seed=0)


def test_invalid_choices_are_named():
    with pytest.raises(ExplanationError, match=r"attack='foo'"):
        ace.explain(A[None], np.array([0]), toy_models(), ace_params(attack="foo"), seed=0)
    with pytest.raises(ExplanationError, match=r"distance='l3'"):
        ace.explain(A[None], np.array([0]), toy_models(), ace_params(distance="l3"), seed=0)
    with pytest.raises(ExplanationError, match=r"clean_estimate='foo'"):
        dime.explain(A[None], np.array([0]), toy_models(), dime_params(clean_estimate="foo"), seed=0)


# --- batch and shard invariance ------------------------------------------------------------------------


def test_dime_result_does_not_depend_on_the_batch():
    """Gaussian blobs (σ0 = 0.2): the CE depends on the noise, so mixed-up streams would show."""
    models = toy_models(std=0.2)
    params = dime_params(clean_estimate="tweedie")
    images = torch.stack([A, noisy_a(scale=0.2)])
    batch = dime.explain(images, np.array([3, 5]), models, params, seed=0)
    for row, sample_id in enumerate([3, 5]):
        single = dime.explain(images[row : row + 1], np.array([sample_id]), models, params, seed=0)
        np.testing.assert_allclose(single.counterfactuals[0], batch.counterfactuals[row], atol=1e-5)
        assert single.nfe[0] == batch.nfe[row]
    other_seed = dime.explain(images, np.array([3, 5]), models, params, seed=1)
    assert np.abs(other_seed.counterfactuals - batch.counterfactuals).max() > 0.05
    swapped_ids = dime.explain(images, np.array([5, 3]), models, params, seed=0)
    assert np.abs(swapped_ids.counterfactuals - batch.counterfactuals).max() > 0.05


@pytest.mark.parametrize("attack", ["pgd", "cw"])
def test_ace_result_does_not_depend_on_the_batch(attack):
    """Early stop on a batch with an easy sample: the rows stop at different attack steps."""
    models = toy_models(std=0.02)
    params = ace_params(attack=attack, early_stop=True)
    images = torch.stack([A + 0.9 * ((A + B) / 2 - A), A])
    batch = ace.explain(images, np.array([3, 5]), models, params, seed=0)
    assert batch.nfe_backward[0] < batch.nfe_backward[1]
    for row, sample_id in enumerate([3, 5]):
        single = ace.explain(images[row : row + 1], np.array([sample_id]), models, params, seed=0)
        np.testing.assert_allclose(single.counterfactuals[0], batch.counterfactuals[row], atol=1e-5)
        np.testing.assert_allclose(
            single.extras["pre_explanations"][0], batch.extras["pre_explanations"][row], atol=1e-5
        )
        assert single.nfe_backward[0] == batch.nfe_backward[row]


@pytest.mark.parametrize(
    ("n", "batch_size", "shards"),
    [(0, 4, 2), (1, 4, 3), (5, 4, 3), (10, 3, 1), (10, 3, 2), (10, 3, 4), (100, 7, 6)],
)
def test_shards_partition_the_same_aligned_batches(n, batch_size, shards):
    parts = [shard_batches(n, batch_size, shards, s) for s in range(shards)]
    batches = [b.tolist() for part in parts for b in part]
    reference = [b.tolist() for b in shard_batches(n, batch_size, 1, 0)]
    assert batches == reference  # same batches whatever the shard count, shards contiguous
    assert [i for b in batches for i in b] == list(range(n))
    assert all(0 < len(b) <= batch_size for b in batches)
    assert all(b[0] % batch_size == 0 for b in batches)


@pytest.mark.parametrize(("shards", "shard"), [(3, 3), (3, -1), (1, 1)])
def test_an_out_of_range_shard_is_refused(shards, shard):
    with pytest.raises(ValueError, match="shard"):
        shard_batches(10, 3, shards, shard)


def test_binary_targets_are_always_the_other_class_even_with_a_configured_target():
    logits = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    assert choose_targets(logits, 1).tolist() == [0, 1]


def test_in_batches_explains_consecutive_batches_and_joins_them_in_order():
    seen = []

    @in_batches("test batches")
    def explain(images, sample_ids, models, params, seed):
        seen.append((sample_ids.tolist(), seed))
        n = len(images)
        ints = sample_ids.astype(np.int64)
        return Explanations(
            counterfactuals=images.numpy() + 1, sources=ints, targets=ints + 1,
            logits_before=np.zeros((n, 2), np.float32), logits_after=np.ones((n, 2), np.float32),
            nfe=ints * 2, nfe_backward=ints, classifier_calls=ints, classifier_gradients=ints,
            seconds=np.zeros(n, np.float32), extras={"id": ints * 10},
        )  # fmt: skip

    images = torch.arange(5.0).view(5, 1, 1, 1)
    ids = np.array([7, 8, 9, 10, 11])
    joined = explain(images, ids, None, {}, 3, batch_size=2)
    assert seen == [([7, 8], 3), ([9, 10], 3), ([11], 3)]
    np.testing.assert_array_equal(joined.counterfactuals[:, 0, 0, 0], [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(joined.nfe, ids * 2)
    np.testing.assert_array_equal(joined.extras["id"], ids * 10)
    seen.clear()
    explain(images, ids, None, {}, 3)  # no batch size: one call with every image
    assert seen == [(ids.tolist(), 3)]


def test_ace_distances_are_the_l1_and_l2_norms():
    delta = torch.tensor([[3.0, -4.0], [0.0, 0.0]]).view(2, 1, 1, 2)
    np.testing.assert_allclose(ace.attack_distance(delta, "l1").numpy(), [7.0, 0.0])
    np.testing.assert_allclose(ace.attack_distance(delta, "l2").numpy(), [5.0, 0.0])  # ‖δ‖₂, not 25


class _IdentityFilter:
    """F_τ = identity: only the classifier and the distance term move the attack."""

    def q_sample(self, x, i, noise):
        return x

    def denoise(self, z, start, noises):
        return z


def test_ace_attack_flips_with_either_distance_at_its_published_lambda():
    """A linear classifier on 3 × 32 × 32 that needs ≈ 0.2 per pixel to flip: the attack must get
    there with the seed's λd (0.001 for ℓ1, 0.1 for ℓ2). A squared ℓ2 term (pull 0.2·δ per pixel)
    holds the perturbation at the input."""
    pixels = 3 * 32 * 32
    weights = torch.sign(torch.randn(pixels, generator=torch.Generator().manual_seed(0))) * (
        4 / (0.2 * pixels)
    )

    class Linear(nn.Module):
        def forward(self, x):
            margin = x.flatten(1) @ weights - 2.0
            return torch.stack([torch.zeros_like(margin), margin], 1)

    images = torch.zeros(1, 3, 32, 32)
    params = {"tau": 1, "attack": "pgd", "attack_steps": 50, "step_size": 0.04, "class_loss": "ce",
              "early_stop": False, "lambda_d": None}  # fmt: skip
    noise = SampleNoise(0, np.array([0]), (3, 32, 32))
    for distance in ("l1", "l2"):
        pre, flip_step, _ = ace.pre_explain(
            _IdentityFilter(), Models(Linear()), images, torch.tensor([1]), {**params, "distance": distance},
            noise, np.array([0]),
        )  # fmt: skip
        assert flip_step[0] >= 0, distance
        assert Linear()(pre)[0, 1] > 0, distance


class _LinearMargin(nn.Module):
    """logits (0, <x, w> + bias): the margin loss for class 1 has gradient −w everywhere."""

    def __init__(self, weights: torch.Tensor, bias: float = 0.0) -> None:
        super().__init__()
        self.weights, self.bias = weights, bias

    def forward(self, x):
        margin = x.flatten(1) @ self.weights + self.bias
        return torch.stack([torch.zeros_like(margin), margin], 1)


def _attack(classifier, images, attack, steps, step_size=0.1):
    params = {"tau": 1, "attack": attack, "attack_steps": steps, "step_size": step_size,
              "class_loss": "margin", "early_stop": False, "lambda_d": 0.0, "distance": "l1"}  # fmt: skip
    return ace.pre_explain(
        _IdentityFilter(), Models(classifier), images, torch.ones(len(images), dtype=torch.long), params,
        SampleNoise(0, np.arange(len(images)), tuple(images.shape[1:])), np.arange(len(images)),
    )[0]  # fmt: skip


def test_one_attack_step_is_a_signed_or_unit_rms_gradient_step():
    """From x = 0 against the margin loss of a linear head (gradient −w): pgd moves s·sign(w),
    gd moves s·w / RMS(w), whatever the scale of w."""
    weights = torch.linspace(-1.0, 3.0, 16) * 0.01
    images = torch.zeros(1, 1, 4, 4)
    pgd = _attack(_LinearMargin(weights, -100.0), images, "pgd", 1)
    torch.testing.assert_close(pgd.flatten(), 0.1 * torch.sign(weights))
    gd = _attack(_LinearMargin(weights, -100.0), images, "gd", 1)
    torch.testing.assert_close(gd.flatten(), 0.1 * weights / weights.pow(2).mean().sqrt())


def test_cw_leaves_an_image_the_target_already_leads_where_it_is():
    """The Carlini–Wagner margin is clamped at 0: once the target logit leads, with λd = 0 there
    is no gradient and Adam does not move the image."""
    images = torch.full((1, 1, 4, 4), 0.2)
    leading = _LinearMargin(torch.ones(16), 1.0)  # target margin 4.2 > 0
    torch.testing.assert_close(_attack(leading, images, "cw", 5), images)


@pytest.mark.parametrize("attack", ["pgd", "gd", "cw"])
def test_ace_attack_stays_in_the_image_range(attack):
    """A classifier no image in [-1, 1] flips: the attack pushes every pixel to its bound, not past it."""
    unreachable = _LinearMargin(torch.ones(16), -160.0)
    pre = _attack(unreachable, torch.zeros(1, 1, 4, 4), attack, 20, step_size=0.5)
    torch.testing.assert_close(pre, torch.ones_like(pre))


# --- boundaries of the shared checks and of ACE's mask (mutants that survived before) -----------


def test_the_shared_checks_refuse_tau_zero_pixels_below_minus_one_infinite_logits_and_target_k():
    from diffxai.methods.base import check_images, check_logits, choose_targets, prepare

    with pytest.raises(ExplanationError, match="tau"):
        prepare(None, None, None, {"tau": 0, "steps": 5}, {"tau", "steps"}, "dime", 0)
    images = torch.zeros(2, 1, 4, 4)
    images[1, 0, 0, 0] = -1.5
    with pytest.raises(ExplanationError, match=r"sample 7\b"):
        check_images(images, (1, 4, 4), np.array([3, 7]))
    with pytest.raises(ExplanationError, match=r"sample 7\b"):
        check_logits(torch.tensor([[0.0, 1.0], [float("inf"), 0.0]]), np.array([3, 7]), "on the input")
    with pytest.raises(ExplanationError, match="target=3"):
        choose_targets(torch.tensor([[0.0, 3.0, 1.0]]), 3)  # classes 0..2


def test_ace_masks_an_even_dilation_and_a_zero_threshold_exactly():
    """One changed pixel at (4, 4): dilation 2 covers rows and columns 4..5 (pad 1 before, 0
    after); threshold 0 keeps every unchanged pixel out of the mask."""
    images = torch.zeros(1, 1, 8, 8)
    pre = images.clone()
    pre[0, 0, 4, 4] = 1
    expected = torch.zeros(8, 8)
    expected[4:6, 4:6] = 1
    assert torch.equal(ace.region_mask(images, pre, 2, 0.5)[0, 0], expected)
    assert ace.region_mask(images, pre, 1, 0.0).sum() == 1


def test_aces_filter_noises_the_image_with_its_own_draws():
    """F_τ samples q(x_τ | x) before denoising: with a denoiser that returns its input and a
    forward process that adds the draw, the filtered image is the draw."""

    class Additive:
        def q_sample(self, x, i, noise):
            return x + noise

        def denoise(self, z, i, noises):
            return z

    draw = torch.ones(1, 1, 2, 2)
    assert torch.equal(ace._filter(Additive(), torch.zeros(1, 1, 2, 2), 2, lambda: draw.clone()), draw)
