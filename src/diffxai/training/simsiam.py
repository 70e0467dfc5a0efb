"""SimSiam training of the self-supervised encoder."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch

from diffxai.models.encoder import SimSiam
from diffxai.progress import progress
from diffxai.training.augment import random_views
from diffxai.training.supervised import to_m11

log = logging.getLogger(__name__)


def train_simsiam(
    model: SimSiam,
    images_uint8: torch.Tensor,
    params: dict[str, Any],
    device: torch.device,
    generator: torch.Generator,
) -> tuple[SimSiam, dict[str, Any]]:
    """Train on uint8 images (N, C, H, W) with SGD and cosine decay.

    params: epochs, batch_size, lr (base SGD rate per 256 images).
    """
    if len(images_uint8) < 2:
        raise ValueError(f"SimSiam needs at least 2 training images (batch norm), got {len(images_uint8)}")
    model = model.to(device)
    batches_per_epoch = max(1, len(images_uint8) // params["batch_size"])
    total_steps = params["epochs"] * batches_per_epoch
    # SimSiam's linear scaling rule: lr = base_lr x batch / 256
    lr = params["lr"] * params["batch_size"] / 256
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total_steps)
    history: dict[str, Any] = {"loss": []}
    started = time.perf_counter()
    for epoch in range(params["epochs"]):
        model.train()
        order = torch.randperm(len(images_uint8), generator=generator)
        running = 0.0
        batches = order[: batches_per_epoch * params["batch_size"]].split(params["batch_size"])
        for index in progress(batches, desc=f"simsiam epoch {epoch + 1}", leave=False):
            x = to_m11(images_uint8[index])
            loss = model.loss(random_views(x, generator).to(device), random_views(x, generator).to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running += loss.item()
        history["loss"].append(running / len(batches))
        log.info("simsiam epoch %d: loss %.4f", epoch + 1, history["loss"][-1])
    history["train_time_s"] = time.perf_counter() - started
    return model.eval(), history


@torch.no_grad()
def encode(
    model: SimSiam, images_m11: torch.Tensor, device: torch.device, batch_size: int = 512
) -> torch.Tensor:
    """Features (N, feature_dim) of float images in [-1, 1]."""
    model.eval()
    return torch.cat([model.features(chunk.to(device)).cpu() for chunk in images_m11.split(batch_size)])


def feature_spread(features: torch.Tensor) -> float:
    """√d × the mean per-dimension std of the l2-normalised features (N, d): ≈ 1 for features
    spread over the sphere (those of a Gaussian), 0 for a collapsed encoder that maps every
    image to one direction (SimSiam §4.1, Fig. 2). In a collapsed space distances, and so FID
    and cosine similarity, say nothing about the images."""
    unit = torch.nn.functional.normalize(features.double(), dim=1)
    return float(unit.std(dim=0).mean() * math.sqrt(features.shape[1]))
