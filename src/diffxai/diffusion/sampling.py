"""Respaced sampling from a trained noise predictor (any number of steps out of T)."""

from __future__ import annotations

from typing import Any

import torch

from diffxai.models.ddpm import build_scheduler
from diffxai.progress import progress as progress_bar


def per_sample_generators(generator: torch.Generator | None, n: int) -> list[torch.Generator]:
    """``n`` CPU generators, one per sample, seeded by ``n`` draws from ``generator`` (the
    global one when None): a sample's noise does not depend on the batch it is drawn in."""
    seeds = torch.randint(0, 2**62, (n,), generator=generator)
    return [torch.Generator().manual_seed(int(seed)) for seed in seeds]


def per_sample_noise(generators: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise (len(generators), *shape) on CPU, row i from generator i."""
    return torch.cat([torch.randn((1, *shape), generator=g) for g in generators])


@torch.no_grad()
def sample(
    unet: torch.nn.Module,
    scheduler_config: dict[str, Any],
    n: int,
    shape: tuple[int, int, int],
    num_steps: int,
    sampler: str = "ddim",
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> tuple[torch.Tensor, int]:
    """Draw ``n`` images (float32 (n, *shape) in [-1, 1], on CPU) and the NFE used.

    ``sampler`` is ``ddim`` (deterministic, η = 0) or ``ddpm`` (ancestral); both run
    ``num_steps`` respaced steps. Each sample draws its noise from its own generator
    (:func:`per_sample_generators`), so the images do not depend on ``batch_size``.
    """
    scheduler = build_scheduler(scheduler_config, sampler)
    scheduler.set_timesteps(num_steps)
    unet.eval()
    out, nfe = [], 0
    batches = range(0, n, batch_size)
    generators = per_sample_generators(generator, n)
    bar = progress_bar(total=len(batches) * num_steps, desc=f"{sampler} sampling", disable=not progress)
    for start in batches:
        size = min(batch_size, n - start)
        rows = generators[start : start + size]
        x = per_sample_noise(rows, shape).to(device)
        for t in scheduler.timesteps:
            output = unet(x, t.to(device)).sample
            nfe += size
            # the CPU generators keep ancestral noise reproducible across devices
            # DDIM: the direction term uses the ε implied by the clipped clean image
            step_kwargs = {"generator": rows} if sampler == "ddpm" else {"use_clipped_model_output": True}
            x = scheduler.step(output.cpu(), t, x.cpu(), **step_kwargs).prev_sample.to(device)
            bar.update(1)
        out.append(x.clamp(-1, 1).cpu())
    bar.close()
    return torch.cat(out), nfe
