"""Supervised training with early stopping: classifiers, regressors, attribute oracles.

Images are kept as uint8 and converted per batch to [-1, 1]; Gaussian input noise
(``noise_std``) makes the models robust to the faint background noise of
generated samples, which later measure and explain them.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from diffxai.progress import progress

log = logging.getLogger(__name__)


def to_m11(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) in 0..255 -> float32 in [-1, 1]."""
    return images_uint8.float() / 127.5 - 1.0


@dataclass
class Task:
    """What a head is trained for: loss on (outputs, targets) and a validation score (higher is better)."""

    name: str
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    score: Callable[[torch.Tensor, torch.Tensor], float]


def _accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    return (outputs.argmax(1) == targets).float().mean().item()


def _r2(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    residual = ((outputs[:, 0] - targets) ** 2).sum()
    total = ((targets - targets.mean()) ** 2).sum()
    return (1 - residual / total).item()


def _multilabel_accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    return ((outputs > 0).float() == targets).float().mean().item()


TASKS = {
    "classifier": Task("classifier", nn.functional.cross_entropy, _accuracy),
    "regressor": Task("regressor", lambda o, t: nn.functional.mse_loss(o[:, 0], t), _r2),
    "oracle": Task("oracle", nn.functional.binary_cross_entropy_with_logits, _multilabel_accuracy),
}


@torch.no_grad()
def predict(
    network: nn.Module, images_uint8: torch.Tensor, device: torch.device, batch_size: int = 512
) -> torch.Tensor:
    """Raw network outputs (N, K) on CPU for uint8 images."""
    network.eval()
    return torch.cat([network(to_m11(chunk).to(device)).cpu() for chunk in images_uint8.split(batch_size)])


def without_single_batch(batches: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Index batches with a last batch of one sample joined to the one before: batch norm cannot
    train on a single sample (a timm CNN's last 1 × 1 stage fails)."""
    if len(batches) > 1 and len(batches[-1]) == 1:
        return (*batches[:-2], torch.cat(batches[-2:]))
    return batches


def fit(
    network: nn.Module,
    task: Task,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    params: dict[str, Any],
    device: torch.device,
    generator: torch.Generator,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``network`` with Adam; keep the weights of the best validation epoch.

    ``train``/``val``: (uint8 images (N, C, H, W), targets). params: max_epochs,
    batch_size, lr, weight_decay, patience, noise_std, warmup_epochs (the learning rate
    rises linearly over their steps, as transformers need), min_epochs (no early stop before).
    History per epoch: train_loss (mean per training image), val_score, lr.
    """
    network = network.to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    images, targets = train
    steps_per_epoch = len(without_single_batch(torch.arange(len(images)).split(params["batch_size"])))
    warmup_steps = params["warmup_epochs"] * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / (warmup_steps + 1))
    )
    best_score, best_state, stale = -np.inf, None, 0
    history: dict[str, Any] = {"train_loss": [], "val_score": [], "lr": []}
    started = time.perf_counter()
    for epoch in range(params["max_epochs"]):
        network.train()
        order = torch.randperm(len(images), generator=generator)
        total, batches = 0.0, without_single_batch(order.split(params["batch_size"]))
        for index in progress(batches, desc=f"{task.name} epoch {epoch + 1}", leave=False):
            x = to_m11(images[index])
            if params["noise_std"] > 0:
                x = x + params["noise_std"] * torch.randn(x.shape, generator=generator)
            loss = task.loss(network(x.to(device)), targets[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(index)
        score = task.score(predict(network, val[0], device), val[1])
        history["train_loss"].append(total / len(images))  # per image: the last batch may be larger
        history["val_score"].append(score)
        history["lr"].append(optimizer.param_groups[0]["lr"])
        log.info(
            "epoch %d: train loss %.4f, validation %s score %.4f",
            epoch + 1,
            history["train_loss"][-1],
            task.name,
            score,
        )
        if not np.isfinite(score):
            log.warning("epoch %d: the validation %s score is undefined (%s)", epoch + 1, task.name, score)
        selection = score if np.isfinite(score) else -np.inf
        # an undefined score (one validation image, constant targets) keeps the latest weights
        # until a score is defined; a defined best is kept against a later undefined one
        if best_state is None or selection > best_score or (best_score == -np.inf and selection == -np.inf):
            best_score, best_state, stale = selection, copy.deepcopy(network.state_dict()), 0
        else:
            stale += 1
            if stale >= params["patience"] and epoch + 1 >= params["min_epochs"]:
                log.info("early stop after epoch %d (best validation score %.4f)", epoch + 1, best_score)
                break
    network.load_state_dict(best_state)
    history.update(
        best_val_score=best_score,
        epochs=len(history["val_score"]),
        train_time_s=time.perf_counter() - started,
    )
    return network.eval(), history
