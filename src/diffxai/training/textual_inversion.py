"""Textual inversion (Gal et al. 2023; TIME eq. 5.5): new token embeddings, everything else frozen.

A concept is a list of new tokens; only their rows of the text encoder's token-embedding matrix
are trained, with the denoising loss of the text-to-image model on images paired with a prompt
that contains the tokens: eq. 5.5's noise-prediction error, or optionally the error in the
model's own prediction type (:func:`inversion_loss`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from diffxai.diffusion.parameterization import eps_and_x0
from diffxai.models.ddpm import build_scheduler
from diffxai.models.t2i import (
    TextToImage,
    add_concept_tokens,
    token_embeddings,
    trainable_token_rows,
    vocabulary_norm,
)
from diffxai.progress import progress
from diffxai.training.diffusion import training_target

log = logging.getLogger(__name__)


@torch.no_grad()
def cap_rows(weight: torch.Tensor, ids: list[int], cap: float) -> None:
    """Scale the rows ``ids`` of ``weight`` (V, D) whose L2 norm exceeds ``cap`` down to ``cap``."""
    rows = weight[ids]
    weight[ids] = rows * (cap / rows.norm(dim=1, keepdim=True)).clamp(max=1.0)


def timestep_range(num_train_timesteps: int, fractions: tuple[float, float]) -> tuple[int, int]:
    """[low, high) integer timesteps for fractions (a, b) of the schedule, at least one step wide."""
    low = min(round(fractions[0] * num_train_timesteps), num_train_timesteps - 1)
    return low, max(round(fractions[1] * num_train_timesteps), low + 1)


def inversion_loss(
    output: torch.Tensor,
    x_t: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    scheduler,
    kind: str,
) -> torch.Tensor:
    """Mean squared error of the model's ``output`` (N, c, h, w) at (x_t, t).

    ``epsilon``: against the noise, the output converted to ε whatever the prediction type
    (eq. 5.5). ``prediction``: against the model's own training target; for a v-prediction model
    that weights timestep t by 1/ᾱ_t relative to eq. 5.5 (the ε error is √ᾱ_t times the v error),
    so almost all of the loss comes from the noisiest steps.
    """
    if kind == "prediction":
        return torch.nn.functional.mse_loss(output, training_target(scheduler, x0, noise, t))
    if kind != "epsilon":
        raise ValueError(f"textual inversion loss {kind!r}; allowed: epsilon, prediction")
    alpha_bar = scheduler.alphas_cumprod.to(x_t.device)[t].to(x_t.dtype)
    eps, _ = eps_and_x0(output, x_t, alpha_bar, scheduler.config.prediction_type)
    return torch.nn.functional.mse_loss(eps, noise)


def learn_concept(
    model: TextToImage,
    images_m11: torch.Tensor,
    prompt: str,
    tokens: list[str],
    params: dict[str, Any],
    generator: torch.Generator,
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Learn the embeddings of ``tokens`` (new to ``model``) from images (N, C, H, W) in [-1, 1]
    paired with ``prompt``; returns {token: embedding (D,)} and the loss history.

    params: steps, batch_size, lr, weight_decay (AdamW), max_norm, timesteps, loss. Timesteps are
    uniform over the fractions ``timesteps`` (a, b) of the training schedule; (0, 1), the whole
    schedule, with ``loss: epsilon`` is eq. 5.5. ``max_norm`` (None: unconstrained) caps each learned row's
    norm after every step at that multiple of the mean norm of the vocabulary's rows.
    """
    norm_cap = vocabulary_norm(model) * params["max_norm"] if params.get("max_norm") is not None else None
    ids = add_concept_tokens(model, tokens)
    weight, restore = trainable_token_rows(model, ids)
    optimizer = torch.optim.AdamW([weight], lr=params["lr"], weight_decay=params.get("weight_decay", 0.0))
    scheduler = build_scheduler(model.scheduler_config)
    t_low, t_high = timestep_range(scheduler.config.num_train_timesteps, params.get("timesteps", (0.0, 1.0)))
    prompt_ids = model.token_ids([prompt]).to(device)
    history: dict[str, Any] = {"loss": [], "n_images": len(images_m11)}
    started, running = time.perf_counter(), None
    bar = progress(range(params["steps"]), desc=f"textual inversion {' '.join(tokens)}")
    for step in bar:
        index = torch.randint(0, len(images_m11), (params["batch_size"],), generator=generator)
        x0 = model.to_latent(images_m11[index].to(device))
        noise = torch.randn(x0.shape, generator=generator).to(device)
        t = torch.randint(t_low, t_high, (len(index),), generator=generator)
        x_t = scheduler.add_noise(x0, noise, t.to(device))
        hidden = model.text_encoder(prompt_ids.expand(len(index), -1)).last_hidden_state
        output = model.eps(x_t, t.to(device), hidden)
        loss = inversion_loss(output, x_t, x0, noise, t.to(device), scheduler, params.get("loss", "epsilon"))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        restore()
        if norm_cap is not None:
            cap_rows(weight, ids, norm_cap)
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if (step + 1) % 25 == 0 or step + 1 == params["steps"]:
            history["loss"].append([step + 1, running])
            bar.set_postfix(loss=f"{running:.4f}")
    history["seconds"] = time.perf_counter() - started
    weight.requires_grad_(False)
    log.info("learned %s from %d images: loss %.4f", tokens, len(images_m11), running)
    return token_embeddings(model, tokens), history
