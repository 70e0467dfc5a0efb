"""Job ``train_ddpm``: the DDPM (EMA weights) written as ``model.safetensors`` + ``config.json``.

Its quality metrics come from the separate ``evaluate_ddpm`` job, so changing how
samples are measured never re-trains the model.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from diffxai.data.prepared import PreparedData
from diffxai.models.ddpm import build_unet, scheduler_config
from diffxai.models.io import load_model, save_model
from diffxai.provenance import provenance
from diffxai.training.diffusion import train_ddpm
from diffxai.training.supervised import to_m11

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.train_ddpm"]


def run(
    data_path: str | Path,
    out_dir: str | Path,
    cache_dir: str | Path,
    model_name: str,
    dataset_name: str,
    model_cfg: dict[str, Any],
    seed: int,
    device: torch.device,
    base_dir: str | Path = ".",
) -> dict[str, Any]:
    started = time.perf_counter()
    data = PreparedData(data_path)
    size = data.image_size[0]
    unet = build_unet(model_cfg["unet"], data.channels, size)
    info: dict[str, Any] = {
        "kind": "ddpm",
        "in_channels": data.channels,
        "image_size": size,
        "unet_config": dict(unet.config),
        "scheduler_config": scheduler_config(model_cfg["schedule"]),
    }
    if model_cfg["checkpoint"]:
        ema, loaded = load_model(Path(base_dir) / model_cfg["checkpoint"], spec=info)
        info.update({k: v for k, v in loaded.items() if k in ("unet_config", "scheduler_config")})
        history: dict[str, Any] = {"source": str(model_cfg["checkpoint"])}
        log.info("loaded DDPM from %s (no training)", model_cfg["checkpoint"])
    else:
        torch.manual_seed(seed)
        images = to_m11(torch.from_numpy(data.array("images")[data.indices("train")]))
        cache = Path(cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        ema, history = train_ddpm(
            unet,
            info["scheduler_config"],
            images,
            model_cfg["train"],
            device,
            torch.Generator().manual_seed(seed),
            checkpoint=cache / "checkpoint.pt",
        )
    elapsed = time.perf_counter() - started
    info["training"] = history
    info["provenance"] = provenance(
        model_cfg, MODULES, seed, str(device), elapsed, dataset=dataset_name, model=model_name
    )
    save_model(out_dir, ema, info)
    log.info("saved DDPM %s for %s after %.1f s", model_name, dataset_name, elapsed)
    return info
