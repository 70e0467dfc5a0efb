"""Constrained ancestral (DDPM) sampling: a feature held at a target value, or a region held fixed.

Seed 002 §3.3 samples from p(X | V = v) with two constraints:

- **feature value** (eq. 8, DPS with a normalised gradient): after every regular DDPM step
  x'_{t−1} ~ p(x_{t−1} | x_t), move it against the gradient of ‖v − g(x̂0(x_t))‖² taken with
  respect to x_t *through the denoiser* (x̂0 is the Tweedie estimate), normalised per sample:
  x_{t−1} = x'_{t−1} − ρ ∇/‖∇‖.
- **region** ("inpainting", the hippocampus constraint): after every step the pixels inside a
  mask are replaced by the known image noised to the new timestep; the rest is generated.
  Replacement alone barely lets the generated part follow the known one, so each step can be
  repeated ``resample`` times, going back by forward noise in between (RePaint's resampling).

Both run ``steps`` respaced steps of diffusers' ``DDPMScheduler`` (σ_t² = β̃_t, seed 002
App. D) and count network evaluations (NFE: one per image per step). Each sample draws its
noise from its own generator, so the samples do not depend on ``batch_size``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from diffxai.diffusion.parameterization import eps_and_x0
from diffxai.diffusion.sampling import per_sample_generators, per_sample_noise
from diffxai.models.ddpm import build_scheduler
from diffxai.progress import progress


@dataclass
class ConstrainedSamples:
    """Images (N, C, H, W) in [-1, 1] and the network evaluations spent on them."""

    images: torch.Tensor
    nfe: int


def _respaced(scheduler_config: dict[str, Any], steps: int):
    scheduler = build_scheduler(scheduler_config, "ddpm")
    scheduler.set_timesteps(steps)
    return scheduler


def _step(
    scheduler, unet: nn.Module, x: torch.Tensor, t: torch.Tensor, generators: list[torch.Generator]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ancestral step, sample i's noise from ``generators[i]``; returns (x_{t−1}, the UNet
    output at x_t) (the latter keeps its graph)."""
    device = next(unet.parameters()).device
    output = unet(x, torch.full((len(x),), int(t), device=device, dtype=torch.long)).sample
    previous = scheduler.step(output.detach().cpu(), t, x.detach().cpu(), generator=generators).prev_sample
    return previous.to(device), output


def _noise_like(images: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """Standard normal noise shaped and placed like ``images`` (N, ...), row i from generator i."""
    return per_sample_noise(generators, tuple(images.shape[1:])).to(images.device)


def dps_step(
    unet: nn.Module,
    scheduler,
    regressor: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    t: torch.Tensor,
    targets: torch.Tensor,
    rho: float,
    generators: list[torch.Generator],
) -> torch.Tensor:
    """x_{t−1} (N, C, H, W) of one guided step at x_t = ``x``; ``targets`` (N,) in the feature's
    units; ``generators``: one per sample."""
    alpha_bar = scheduler.alphas_cumprod[int(t)].to(x.device)
    prediction_type = scheduler.config.prediction_type
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        previous, output = _step(scheduler, unet, x_in, t, generators)
        _, x0 = eps_and_x0(output, x_in, alpha_bar, prediction_type)
        loss = (targets - regressor(x0)).pow(2).sum()
        grad = torch.autograd.grad(loss, x_in)[0]
    norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).reshape(-1, *[1] * (x.dim() - 1))
    return previous - rho * grad / norm


@torch.no_grad()
def sample_with_value(
    unet: nn.Module,
    scheduler_config: dict[str, Any],
    regressor: Callable[[torch.Tensor], torch.Tensor],
    targets: torch.Tensor,
    shape: tuple[int, int, int],
    steps: int,
    rho: float,
    generator: torch.Generator,
    batch_size: int = 200,
    desc: str = "constrained sampling",
) -> ConstrainedSamples:
    """One sample per entry of ``targets`` (N,) whose feature g(x) is pulled to that target (eq. 8)."""
    device = next(unet.parameters()).device
    scheduler = _respaced(scheduler_config, steps)
    images, nfe = [], 0
    batches = targets.split(batch_size)
    generators = per_sample_generators(generator, len(targets))
    bar = progress(total=len(batches) * steps, desc=desc)
    for index, chunk in enumerate(batches):
        rows = generators[index * batch_size : index * batch_size + len(chunk)]
        x = per_sample_noise(rows, shape).to(device)
        for t in scheduler.timesteps:
            x = dps_step(unet, scheduler, regressor, x, t, chunk.to(device), rho, rows)
            nfe += len(chunk)
            bar.update(1)
        images.append(x.clamp(-1, 1).cpu())
    bar.close()
    return ConstrainedSamples(torch.cat(images), nfe)


@torch.no_grad()
def sample_with_region(
    unet: nn.Module,
    scheduler_config: dict[str, Any],
    known: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    generator: torch.Generator,
    resample: int = 1,
    batch_size: int = 200,
    desc: str = "region-constrained sampling",
) -> ConstrainedSamples:
    """One sample per known image (N, C, H, W) in [-1, 1] that keeps it where ``mask`` (N, 1, H, W)
    is 1 and generates the rest; the kept pixels equal the known image exactly. Every step but the
    last runs ``resample`` times (NFE = N × (steps + (resample − 1)(steps − 1)))."""
    device = next(unet.parameters()).device
    scheduler = _respaced(scheduler_config, steps)
    alpha_bar = scheduler.alphas_cumprod.to(device)
    timesteps = [int(t) for t in scheduler.timesteps]
    images, nfe = [], 0
    pairs = list(zip(known.split(batch_size), mask.split(batch_size), strict=True))
    generators = per_sample_generators(generator, len(known))
    bar = progress(total=len(pairs) * steps, desc=desc)

    for batch, (chunk, region) in enumerate(pairs):
        rows = generators[batch * batch_size : batch * batch_size + len(chunk)]
        chunk, region = chunk.to(device), region.to(device, chunk.dtype)
        x = _noise_like(chunk, rows)
        for index, t in enumerate(scheduler.timesteps):
            last = index + 1 == len(timesteps)
            for repeat in range(1 if last else resample):
                stepped, _ = _step(scheduler, unet, x, t, rows)
                nfe += len(chunk)
                if last:
                    x = region * chunk + (1 - region) * stepped
                    break
                a_prev = alpha_bar[timesteps[index + 1]]
                kept = a_prev.sqrt() * chunk + (1 - a_prev).sqrt() * _noise_like(chunk, rows)
                x_prev = region * kept + (1 - region) * stepped
                if repeat + 1 == resample:
                    x = x_prev
                else:  # back to t by the forward process, and step again
                    ratio = alpha_bar[int(t)] / a_prev
                    x = ratio.sqrt() * x_prev + (1 - ratio).sqrt() * _noise_like(chunk, rows)
            bar.update(1)
        images.append(x.clamp(-1, 1).cpu())
    bar.close()
    return ConstrainedSamples(torch.cat(images), nfe)
