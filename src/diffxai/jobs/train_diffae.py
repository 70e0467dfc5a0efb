"""Job ``train_diffae``: the diffusion autoencoder (EMA weights of encoder and UNet, trained
jointly) written as ``model.safetensors`` + ``config.json``.

The same loss, EMA and resumable checkpoints as the DDPM; the UNet sees z_sem = E(x0) of
the clean batch. Latents and reconstruction metrics come from the separate
``encode_diffae`` job, so changing how many images are encoded never re-trains.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from diffxai.jobs.model_job import ModelJob
from diffxai.jobs.train_ddpm import fit
from diffxai.models.ddpm import scheduler_config
from diffxai.models.diffae import DiffAE, build_diffae

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.train_diffae"]


def conditioned_output(
    network: DiffAE, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor, condition: None = None
) -> torch.Tensor:
    """The DiffAE's prediction at (x_t, t) conditioned on the code of the clean image x0."""
    return network(x_t, t, network.encode_semantic(x0))


def run(job: ModelJob, cache_dir: str | Path) -> dict[str, Any]:
    """Train (or load) the DiffAE, resuming from ``cache_dir``; returns its config.json record."""
    cfg, data = job.model_cfg, job.data
    size = data.image_size[0]
    model, spec = build_diffae(cfg, data.channels, size)
    info: dict[str, Any] = {
        "kind": "diffae",
        "in_channels": data.channels,
        "image_size": size,
        **spec,
        "scheduler_config": scheduler_config(cfg["schedule"]),
    }
    if job.checkpoint:
        ema, _ = job.load_checkpoint(info)
        info["training"] = {}
    else:
        ema, info["training"] = fit(
            job, model, info["scheduler_config"], cache_dir, MODULES, conditioned_output
        )
    job.save(ema, info, MODULES)
    return info
