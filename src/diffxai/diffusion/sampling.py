"""Respaced sampling from a trained noise predictor (any number of steps out of T)."""

from __future__ import annotations

from typing import Any

import torch

from diffxai.models.ddpm import build_scheduler
from diffxai.progress import progress as progress_bar


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
    ``num_steps`` respaced steps.
    """
    scheduler = build_scheduler(scheduler_config, sampler)
    scheduler.set_timesteps(num_steps)
    unet.eval()
    out, nfe = [], 0
    batches = range(0, n, batch_size)
    bar = progress_bar(total=len(batches) * num_steps, desc=f"{sampler} sampling", disable=not progress)
    for start in batches:
        size = min(batch_size, n - start)
        x = torch.randn((size, *shape), generator=generator).to(device)
        for t in scheduler.timesteps:
            output = unet(x, t.to(device)).sample
            nfe += size
            # the CPU generator keeps ancestral noise reproducible across devices
            # DDIM: the direction term uses the ε implied by the clipped clean image
            step_kwargs = (
                {"generator": generator} if sampler == "ddpm" else {"use_clipped_model_output": True}
            )
            x = scheduler.step(output.cpu(), t, x.cpu(), **step_kwargs).prev_sample.to(device)
            bar.update(1)
        out.append(x.clamp(-1, 1).cpu())
    bar.close()
    return torch.cat(out), nfe
