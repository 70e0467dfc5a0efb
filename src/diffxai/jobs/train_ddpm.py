"""Job ``train_ddpm``: the DDPM (EMA weights) written as ``model.safetensors`` + ``config.json``.

Its quality metrics come from the separate ``evaluate_ddpm`` job, so changing how
samples are measured never re-trains the model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from diffxai.jobs.model_job import ModelJob
from diffxai.jobs.persistence import PERSISTENCE_SETTINGS
from diffxai.models.ddpm import build_unet, scheduler_config
from diffxai.provenance import config_hash, source_hash
from diffxai.training.diffusion import train_ddpm, unet_output
from diffxai.training.supervised import to_m11

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.train_ddpm"]
SAMPLING_SECTIONS = ("evaluation", "check", "latents")  # sample from the trained model: weights unchanged


def resume_checkpoint(cache_dir: str | Path, job: ModelJob, modules: list[str]) -> Path:
    """The checkpoint path of this exact training run: named by a hash of the model's training
    config, the job's seed, the source of ``modules`` (the training job's, with all they
    import) and the data's config and code, so a changed setting, seed, training code or
    dataset never resumes (or, once finished, reloads) a stale run."""
    training = {k: v for k, v in job.model_cfg.items() if k not in SAMPLING_SECTIONS}
    if "train" in training:  # how often it is saved does not change what it trains
        training["train"] = {k: v for k, v in training["train"].items() if k not in PERSISTENCE_SETTINGS}
    data = job.data.store.attrs.get("provenance", {})
    key = config_hash(
        [training, job.seed, source_hash(*modules), data.get("config_hash"), data.get("source_hash")]
    )
    return Path(cache_dir) / f"checkpoint-{key}.pt"


def fit(
    job: ModelJob,
    model: torch.nn.Module,
    schedule: dict[str, Any],
    cache_dir: str | Path,
    modules: list[str],
    output=unet_output,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train a diffusion model on the job's training images, resumable from ``cache_dir`` (a
    checkpoint of the training job ``modules``); returns the EMA model and its history.
    ``output``: see :func:`train_ddpm`."""
    torch.manual_seed(job.seed)
    data = job.data
    images = to_m11(torch.from_numpy(data.array("images")[data.indices("train")]))
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    return train_ddpm(
        model,
        schedule,
        images,
        job.model_cfg["train"],
        job.device,
        torch.Generator().manual_seed(job.seed),
        checkpoint=resume_checkpoint(cache_dir, job, modules),
        output=output,
    )


def run(job: ModelJob, cache_dir: str | Path) -> dict[str, Any]:
    """Train (or load) the DDPM, resuming from ``cache_dir``; returns its config.json record."""
    cfg, data = job.model_cfg, job.data
    size = data.image_size[0]
    unet = build_unet(cfg["unet"], data.channels, size)
    info: dict[str, Any] = {
        "kind": "ddpm",
        "in_channels": data.channels,
        "image_size": size,
        "unet_config": dict(unet.config),
        "scheduler_config": scheduler_config(cfg["schedule"]),
    }
    if job.checkpoint:
        ema, loaded = job.load_checkpoint(info)
        info.update({k: v for k, v in loaded.items() if k in ("unet_config", "scheduler_config")})
        info["training"] = {}
    else:
        ema, info["training"] = fit(job, unet, info["scheduler_config"], cache_dir, MODULES)
    job.save(ema, info, MODULES)
    return info
