"""FreeMCG (seed 000): derivative-free, manifold-constrained gradients from diffusion particles.

Particles: an image x is noised to timestep t K times and each copy is denoised in one
step, x^(k) = x̂0(sqrt(ᾱ_t) x + sqrt(1 − ᾱ_t) ε_k), so the particles lie on the data
manifold near x. The classifier is queried on them as a black box (probabilities only,
through :class:`~diffxai.models.blackbox.BlackBox`), and the gradient of a class score f
is estimated by the cross-covariance (Thm. 2)

    C_xf = (1/K) Σ_k (x^(k) − x̄)(f(x^(k)) − f̄)ᵀ  ≈  C_xx ∇f(x),

which is ∇f projected onto the manifold's tangent directions (Thm. 1).

* Attribution maps (App. G): C_xf of the class's probability averaged over the timesteps
  (default 100..700 of T = 1000, given as fractions of T so that any schedule length
  works) and over colour channels. K·len(timesteps) NFE and queries per map.
* Counterfactuals (App. G), ``mode: ddim``: the input is noised to t' = t_start·T and run
  down ``steps`` deterministic DDIM steps; at each step the clean estimate x̂0 is moved
  along the normalised FreeMCG gradient of the target score and pulled back to the input,
  x̂0 ← x̂0 + α·γ_t·ĝ − β·(x̂0 − x), γ_t = sqrt(ᾱ_t ᾱ_{t_prev}), before the DDIM update
  (which keeps the network's ε̂, so the whole edit is carried to the next step).
  (K + 1)·steps NFE and K·steps queries per CE: the published 100 particles and 100
  steps make 10,100 NFE and 10,000 queries.
  ``mode: ascent`` (App. B, G; the chest X-ray variant): ``steps`` iterations
  x ← x + α·ĝ(x) − β·(x − x_input) directly on the image, particles at t'; K·steps NFE.
* ĝ is C_xf scaled to unit root-mean-square per pixel, so α is a step in [-1, 1] pixel
  units whatever the resolution (the seed normalises the gradient, after Augustin et al.).
* The reference code returns the mean of the last particles as the counterfactual; we
  return the chain's own output (a sample of the diffusion model, not an average of
  samples, which blurs) as ``counterfactuals`` and store the particle mean, its logits
  and success next to it (``particle_mean*``), so both can be evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diffxai.diffusion.tweedie import Tweedie
from diffxai.methods.base import (
    Attribution,
    ExplanationError,
    Explanations,
    Models,
    SampleNoise,
    check_images,
    check_logits,
    check_params,
    choose_targets,
    in_batches,
)
from diffxai.models.blackbox import BlackBox

MAP_PARAMS = {"timesteps", "particles", "score", "unet_batch"}
CE_PARAMS = {"mode", "t_start", "steps", "particles", "alpha", "beta", "score", "target", "unet_batch"}
MODES = ("ddim", "ascent")
SCORES = ("probability", "log_probability")
EPS = 1e-12


def covariance_gradient(particles: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """C_xf (N, M, D) from particles (N, K, D) and their scores (N, K, M); K ≥ 2 (one particle
    has no spread: the estimate would be 0 everywhere)."""
    if particles.shape[1] < 2:
        raise ExplanationError(f"params.particles={particles.shape[1]}: allowed 2 or more")
    dx = particles - particles.mean(1, keepdim=True)
    df = scores - scores.mean(1, keepdim=True)
    return torch.einsum("nkd,nkm->nmd", dx, df) / particles.shape[1]


def score(probabilities: torch.Tensor, kind: str) -> torch.Tensor:
    """The class scores f the gradient is taken of: probabilities or their logarithms."""
    if kind == "probability":
        return probabilities
    if kind == "log_probability":
        return probabilities.clamp_min(EPS).log()
    raise ExplanationError(f"params.score={kind!r}: allowed {SCORES}")


def unit_rms(gradient: torch.Tensor) -> torch.Tensor:
    """Each sample's gradient (N, ...) scaled to unit root-mean-square (zero stays zero)."""
    rms = gradient.flatten(1).pow(2).mean(1).sqrt().clamp_min(EPS)
    return gradient / rms.view(-1, *([1] * (gradient.dim() - 1)))


@dataclass
class ParticleGradient:
    """FreeMCG at one timestep: the gradient of the class score (N, C, H, W) and the
    particle mean x̄ (N, C, H, W); ``particles`` (N, K, C, H, W) when kept."""

    gradient: torch.Tensor
    mean: torch.Tensor
    particles: torch.Tensor | None = None


def particle_gradient(
    tweedie: Tweedie,
    blackbox: BlackBox,
    x: torch.Tensor,
    t: int,
    classes: torch.Tensor,
    noise: torch.Tensor,
    kind: str,
    keep: bool = False,
) -> ParticleGradient:
    """FreeMCG gradient at ``x`` (N, C, H, W) of the score of ``classes`` (N,), particles
    from ``noise`` (N, K, C, H, W) at timestep ``t``. K NFE and K queries per image."""
    n, k = noise.shape[:2]
    noisy = tweedie.noised(x[:, None], t, noise).flatten(0, 1)
    particles = tweedie.x0(noisy, t)
    scores = score(blackbox(particles), kind).to(x.device)
    chosen = scores.view(n, k, -1).gather(2, classes.view(n, 1, 1).expand(n, k, 1))
    flat = particles.view(n, k, -1)
    gradient = covariance_gradient(flat, chosen)[:, 0].view_as(x)
    return ParticleGradient(gradient, flat.mean(1).view_as(x), particles.view_as(noise) if keep else None)


def _timesteps(fractions: list[float], num_train_timesteps: int) -> list[int]:
    """Integer timesteps of fractions of T (each in (0, 1))."""
    for f in fractions:
        if not 0 < f < 1:
            raise ExplanationError(f"params.timesteps: {f} is not a fraction of T in (0, 1)")
    return [min(num_train_timesteps - 1, round(f * num_train_timesteps)) for f in fractions]


def attribution_maps(
    images: torch.Tensor,
    targets: torch.Tensor,
    models: Models,
    params: dict[str, Any],
    seed: int,
    sample_ids: np.ndarray,
    keep_particles: bool = False,
) -> Attribution:
    """FreeMCG maps (N, H, W) of the ``targets`` class (N,) for ``images`` (N, C, H, W);
    with ``keep_particles`` the particles (N, timesteps, K, C, H, W) float16 as an extra."""
    check_params(params, MAP_PARAMS, "freemcg")
    check_images(images, models.image_shape, sample_ids)
    tweedie = Tweedie(models.ddpm, models.scheduler_config, params["unet_batch"])
    blackbox = BlackBox(models.classifier)
    timesteps = _timesteps(params["timesteps"], tweedie.num_train_timesteps)
    noise = SampleNoise(seed, sample_ids, models.image_shape)
    rows = np.arange(len(images))
    total = torch.zeros_like(images)
    kept = []
    for t in timesteps:
        draws = noise.draw_many(rows, params["particles"]).to(images.device)
        result = particle_gradient(
            tweedie, blackbox, images, t, targets, draws, params["score"], keep_particles
        )
        total += result.gradient
        if keep_particles:
            kept.append(result.particles.half().cpu().numpy())
    maps = (total / len(timesteps)).mean(1)
    n = len(images)
    extras = {"particles": np.stack(kept, axis=1)} if keep_particles else {}
    return Attribution(
        maps=maps.cpu().numpy().astype(np.float32),
        nfe=np.full(n, tweedie.nfe // n, np.int64),
        classifier_calls=np.full(n, blackbox.queries // n, np.int64),
        extras=extras,
    )


def _chain_timesteps(t_start: int, steps: int) -> list[int]:
    """``steps`` distinct timesteps from t_start down to 0, evenly spaced, descending."""
    if steps < 1 or steps > t_start + 1:
        raise ExplanationError(f"params.steps={steps}: allowed 1..{t_start + 1} (t_start·T + 1)")
    if steps == 1:
        return [t_start]
    return [round(t_start * i / (steps - 1)) for i in range(steps - 1, -1, -1)]


def _counterfactual_chain(
    tweedie: Tweedie,
    blackbox: BlackBox,
    images: torch.Tensor,
    targets: torch.Tensor,
    params: dict[str, Any],
    noise: SampleNoise,
    rows: np.ndarray,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CEs (n, C, H, W) and the mean of the last particles (n, C, H, W) of ``rows``."""
    t_start = min(tweedie.num_train_timesteps - 1, round(params["t_start"] * tweedie.num_train_timesteps))
    alpha, beta, k, kind = params["alpha"], params["beta"], params["particles"], params["score"]
    device = images.device
    draw_particles = lambda: noise.draw_many(rows, k).to(device)  # noqa: E731
    if params["mode"] == "ascent":
        x = images.clone()
        for _ in range(params["steps"]):
            result = particle_gradient(tweedie, blackbox, x, t_start, targets, draw_particles(), kind)
            x = (x + alpha * unit_rms(result.gradient) - beta * (x - images)).clamp(-1, 1)
        return x, result.mean
    timesteps = _chain_timesteps(t_start, params["steps"])
    z = tweedie.noised(images, t_start, noise.draw(rows).to(device))
    for j, t in enumerate(timesteps):
        t_prev = timesteps[j + 1] if j + 1 < len(timesteps) else -1
        x0, eps = tweedie.x0_and_eps(z, t)
        result = particle_gradient(tweedie, blackbox, x0, t, targets, draw_particles(), kind)
        gamma = (tweedie.alpha_bar_at(t) * tweedie.alpha_bar_at(t_prev)).sqrt()
        x0 = (x0 + alpha * gamma * unit_rms(result.gradient) - beta * (x0 - images)).clamp(-1, 1)
        z = tweedie.ddim_step(x0, eps, t_prev)
    return z.clamp(-1, 1), result.mean


def _log_probabilities(blackbox: BlackBox, images: torch.Tensor, sample_ids: np.ndarray, where: str):
    """Log-probabilities (N, K) from the black box (a valid set of logits), checked."""
    probabilities = blackbox(images)
    check_logits(probabilities, sample_ids, where)
    return probabilities.clamp_min(EPS).log()


@in_batches("FreeMCG batches")
def explain(
    images: torch.Tensor,
    sample_ids: np.ndarray,
    models: Models,
    params: dict[str, Any],
    seed: int,
) -> Explanations:
    """FreeMCG counterfactuals of ``images`` (N, C, H, W) in [-1, 1], in batches of
    ``batch_size``; the classifier is used only as a black box (no gradients)."""
    check_params(params, CE_PARAMS, "freemcg")
    if params["mode"] not in MODES:
        raise ExplanationError(f"params.mode={params['mode']!r}: allowed {MODES}")
    if not 0 < params["t_start"] < 1:
        raise ExplanationError(f"params.t_start={params['t_start']}: allowed a fraction of T in (0, 1)")
    check_images(images, models.image_shape, sample_ids)
    blackbox = BlackBox(models.classifier)
    logits_before = _log_probabilities(blackbox, images, sample_ids, "on the input")
    targets = choose_targets(logits_before, params.get("target")).to(images.device)
    tweedie = Tweedie(models.ddpm, models.scheduler_config, params["unet_batch"])
    rows = np.arange(len(images))
    noise = SampleNoise(seed, sample_ids, models.image_shape)
    counterfactuals, particle_mean = _counterfactual_chain(
        tweedie, blackbox, images, targets, params, noise, rows
    )
    logits_after = _log_probabilities(blackbox, counterfactuals, sample_ids, "on the CE")
    mean_logits = _log_probabilities(blackbox, particle_mean, sample_ids, "on the particle mean")
    n = len(images)
    extras = {
        "particle_mean": particle_mean.cpu().numpy(),
        "particle_mean_logits": mean_logits.numpy(),
        "particle_mean_success": (mean_logits.argmax(1) == targets.cpu()).numpy(),
    }
    return Explanations(
        counterfactuals=counterfactuals.cpu().numpy(),
        sources=logits_before.argmax(1).numpy(),
        targets=targets.cpu().numpy(),
        logits_before=logits_before.numpy(),
        logits_after=logits_after.numpy(),
        nfe=np.full(n, tweedie.nfe // n, np.int64),
        nfe_backward=np.zeros(n, np.int64),
        classifier_calls=np.full(n, blackbox.queries // n, np.int64),
        classifier_gradients=np.zeros(n, np.int64),
        seconds=np.zeros(n, np.float32),
        extras=extras,
    )
