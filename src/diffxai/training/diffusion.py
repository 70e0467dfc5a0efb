"""DDPM training: MSE on the ε, v or x0 target (Min-SNR-γ weighted), AdamW with
linear warm-up, EMA weights, resumable.

The checkpoint (model, EMA, optimiser, step, RNG state) lives outside the rule's
declared outputs (Snakemake deletes those before a job starts), so a killed job
restarts from its last checkpoint.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from diffxai.models.ddpm import build_scheduler
from diffxai.progress import progress

log = logging.getLogger(__name__)


def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model, parameter by parameter."""
    with torch.no_grad():
        for ema_param, param in zip(ema.parameters(), model.parameters(), strict=True):
            ema_param.lerp_(param, 1.0 - decay)


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Learning-rate multiplier: linear warm-up, then constant or cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress))


def loss_weights(
    alphas_cumprod: torch.Tensor, min_snr_gamma: float | None, prediction_type: str
) -> torch.Tensor:
    """Per-timestep weights (T,) of the MSE on the prediction target.

    Min-SNR-γ (Hang et al. 2023) weights the x0-error by min(SNR_t, γ), so the many
    low-noise steps stop dominating training; expressed on the ε, v or x0 target that
    is min(SNR, γ)/SNR, min(SNR, γ)/(SNR + 1) or min(SNR, γ). ``None``: plain MSE.
    """
    if not min_snr_gamma:
        return torch.ones_like(alphas_cumprod)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    clipped = snr.clamp(max=min_snr_gamma)
    return {"epsilon": clipped / snr, "v_prediction": clipped / (snr + 1), "sample": clipped}[prediction_type]


def training_target(scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to output for x_t = sqrt(ᾱ) x0 + sqrt(1 − ᾱ) ε."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    return x0


def unet_output(
    network: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor, condition: Any = None
) -> torch.Tensor:
    """An unconditional diffusers UNet's output at (x_t, t); ``x0`` and ``condition`` are unused."""
    return network(x_t, t).sample


def _global_rng() -> dict[str, Any]:
    """torch's global generators, which draw the UNet's dropout masks (CPU, and each CUDA device)."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_global_rng(state: dict[str, Any] | None) -> None:
    """Restore :func:`_global_rng` (a checkpoint of older code has none)."""
    if state is None:
        return
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def train_ddpm(
    unet: torch.nn.Module,
    scheduler_config: dict[str, Any],
    images_m11: torch.Tensor,
    params: dict[str, Any],
    device: torch.device,
    generator: torch.Generator,
    checkpoint: Path | None = None,
    stop_at: int | None = None,
    output: Callable[..., torch.Tensor] = unet_output,
    conditions: torch.Tensor | None = None,
    null_condition: torch.Tensor | None = None,
    condition_variants: bool = False,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train ``unet`` on images (float32 (N, C, H, W) in [-1, 1]); returns EMA model, history.

    params: steps, batch_size, lr, warmup_steps, ema_decay, grad_clip, hflip,
    checkpoint_every (steps), min_snr_gamma (null: uniform weights), lr_schedule
    (constant or cosine over ``steps``). ``stop_at`` ends training early (a later call
    resumes from the checkpoint), as the benchmark does to evaluate along the way.
    ``output(network, x_t, t, x0, condition)`` is the network's prediction; a conditional
    model reads its condition from the clean batch x0 (DiffAE) or gets the rows of
    ``conditions`` (N, ...) of its images (text), each replaced by ``null_condition`` with
    probability ``params["condition_dropout"]`` (classifier-free guidance training). With
    ``condition_variants``, ``conditions`` is (N, V, ...): each step takes one of an image's V
    variants (e.g. captions), drawn uniformly.
    """
    noise_scheduler = build_scheduler(scheduler_config, "ddpm")
    unet = unet.to(device)
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=params["lr"], weight_decay=0.0)
    warmup = max(1, params["warmup_steps"])
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(step, warmup, params["steps"], params.get("lr_schedule", "constant")),
    )
    history: dict[str, Any] = {"loss": [], "elapsed_s": []}
    start_step, elapsed_before = 0, 0.0
    running = None  # running mean of the loss, checkpointed so a resumed history continues it
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        unet.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        generator.set_state(state["generator"])
        _set_global_rng(state.get("global_rng"))
        history = state["history"]
        start_step, elapsed_before = int(state["step"]), float(state["elapsed_s"])
        running = state.get("running_loss")
        log.info("resumed DDPM training from %s at step %d", checkpoint, start_step)

    n, steps, batch = len(images_m11), params["steps"], params["batch_size"]
    weights = loss_weights(
        noise_scheduler.alphas_cumprod, params.get("min_snr_gamma"), noise_scheduler.config.prediction_type
    )
    timesteps = noise_scheduler.config.num_train_timesteps
    started = time.perf_counter()
    end = min(steps, stop_at or steps)
    bar = progress(range(start_step, end), desc="train ddpm", initial=start_step, total=steps)
    unet.train()
    for step in bar:
        index = torch.randint(0, n, (batch,), generator=generator)
        x0 = images_m11[index]
        condition = None
        if conditions is not None:
            rows = conditions[index]
            if condition_variants:
                variant = torch.randint(0, rows.shape[1], (batch,), generator=generator)
                rows = rows[torch.arange(batch), variant]
            drop = torch.rand(batch, generator=generator) < params.get("condition_dropout", 0.0)
            condition = torch.where(drop.view(-1, *[1] * (rows.dim() - 1)), null_condition, rows)
            condition = condition.to(device)
        if params["hflip"]:
            flip = torch.rand(batch, generator=generator) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, timesteps, (batch,), generator=generator)
        xt = noise_scheduler.add_noise(x0, noise, t)
        target = training_target(noise_scheduler, x0, noise, t)
        error = (output(unet, xt.to(device), t.to(device), x0.to(device), condition) - target.to(device)) ** 2
        loss = (error.mean(dim=(1, 2, 3)) * weights[t].to(device)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), params["grad_clip"])
        optimizer.step()
        lr_schedule.step()
        update_ema(ema, unet, params["ema_decay"])
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % 25 == 0 or step + 1 == end:
            elapsed = elapsed_before + time.perf_counter() - started
            history["loss"].append([step + 1, running])
            history["elapsed_s"].append([step + 1, elapsed])
            bar.set_postfix(loss=f"{running:.4f}")
        if checkpoint is not None and ((step + 1) % params["checkpoint_every"] == 0 or step + 1 == end):
            _save_checkpoint(
                checkpoint,
                {
                    "model": unet.state_dict(),
                    "ema": ema.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "lr_schedule": lr_schedule.state_dict(),
                    "generator": generator.get_state(),
                    "global_rng": _global_rng(),
                    "history": history,
                    "step": step + 1,
                    "running_loss": running,
                    "elapsed_s": elapsed_before + time.perf_counter() - started,
                },
            )
    history["train_time_s"] = elapsed_before + time.perf_counter() - started
    return ema.cpu(), history
