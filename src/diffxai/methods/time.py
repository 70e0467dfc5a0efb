"""TIME (thesis ch. 5): black-box counterfactuals with a text-to-image diffusion model.

The classifier is only queried, for probabilities (never weights or gradients), through
:class:`~diffxai.models.blackbox.BlackBox`; the edit uses only the predicted class. Its
knowledge reaches the generator as learned text tokens (textual inversion on the images it
predicts as each class; ``training.textual_inversion``).
For an image predicted as class i with target j:

1. EDICT inversion (eqs. 5.6–5.8, mixing weight ``p``) of the image from clean to step τ of a
   ``steps``-step DDIM schedule, with the source prompt C_i;
2. EDICT denoising from τ back to clean with the target prompt C_j;
3. guidance at every noise prediction: ``negative`` (eq. 5.11) ε = (1+w)·ε(C_pos) − w·ε(C_neg),
   with (C_pos, C_neg) = (C_i, C_j) while inverting and (C_j, C_i) while denoising; or ``cfg``
   (eq. 5.4) ε = (1+w)·ε(C_pos) − w·ε(∅);
4. the (τ, w) ``attempts`` are tried in order, each only on the samples that have not flipped yet
   (``tau`` and ``w`` together replace them by one attempt, as in the seed's ablations).

Prompts (``context: true``): "a <context> image with a <class_i>"; without the context token
"an image with a <class_i>". ``<context>`` and ``<class_i>`` stand for the token sets the
distillation learned (one or several tokens each).

Cost per attempt and sample: τ inversion + τ denoising EDICT steps, 2 noise predictions each,
2 UNet rows per guided prediction: 8·τ UNet evaluations; 1 classifier query per attempt plus
1 on the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diffxai.diffusion.edict import edict_denoise, edict_invert
from diffxai.diffusion.parameterization import eps_and_x0
from diffxai.diffusion.respaced import space_timesteps
from diffxai.methods.base import (
    ExplanationError,
    Explanations,
    Models,
    check_images,
    check_params,
    choose_targets,
    in_batches,
)
from diffxai.models.blackbox import BlackBox
from diffxai.models.ddpm import alphas_cumprod
from diffxai.models.t2i import set_token_embeddings

GUIDANCE = ("negative", "cfg")
PARAMS = {"steps", "attempts", "tau", "w", "p", "guidance", "context", "target", "unet_batch"}


@dataclass
class Concepts:
    """Token strings of the distilled concepts: the context and one token set per class."""

    context: list[str]
    classes: dict[int, list[str]]

    def prompt(self, cls: int, with_context: bool) -> str:
        """The class prompt C_cls (see the module docstring)."""
        tokens = " ".join(self.classes[cls])
        if with_context:
            return f"a {' '.join(self.context)} image with a {tokens}"
        return f"an image with a {tokens}"


class GuidedNoise:
    """Guided noise predictions of a text-to-image model, counting UNet rows.

    ``t2i`` is a :class:`~diffxai.models.t2i.TextToImage`; ``positive``/``negative`` are text
    embeddings (N, L, D). Model outputs of any prediction type are converted to ε.
    """

    def __init__(self, t2i, unet_batch: int) -> None:
        self.t2i = t2i
        self.unet_batch = unet_batch
        self.alphas_cumprod = alphas_cumprod(t2i.scheduler_config)
        self.prediction_type = t2i.scheduler_config.get("prediction_type", "epsilon")
        self.rows = 0

    def predict(self, latents: torch.Tensor, timestep: int, hidden: torch.Tensor) -> torch.Tensor:
        """ε (N, C, h, w) at ``timestep`` for conditions ``hidden`` (N, L, D), in chunks of unet_batch."""
        outputs = [
            self.t2i.eps(chunk, timestep, cond)
            for chunk, cond in zip(latents.split(self.unet_batch), hidden.split(self.unet_batch), strict=True)
        ]
        self.rows += len(latents)
        output = torch.cat(outputs).to(latents.dtype)
        alpha_bar = self.alphas_cumprod[timestep].to(latents)
        return eps_and_x0(output, latents, alpha_bar, self.prediction_type)[0]

    def guided(self, positive: torch.Tensor, negative: torch.Tensor, w: torch.Tensor):
        """eps(x, t) = (1 + w)·ε(x, t, positive) − w·ε(x, t, negative), w (N,) per sample."""
        scale = w.view(-1, 1, 1, 1)

        def eps(latents: torch.Tensor, timestep: int) -> torch.Tensor:
            both = self.predict(torch.cat([latents, latents]), timestep, torch.cat([positive, negative]))
            conditional, other = both.chunk(2)
            return (1 + scale.to(latents)) * conditional - scale.to(latents) * other

        return eps


def edit(
    noise: GuidedNoise,
    latents: torch.Tensor,
    source: torch.Tensor,
    target: torch.Tensor,
    empty: torch.Tensor,
    tau: int,
    w: torch.Tensor,
    params: dict[str, Any],
) -> torch.Tensor:
    """One TIME attempt on latents (N, C, h, w): invert with C_source to step τ, denoise with C_target.

    ``source``/``target``/``empty`` are text embeddings (N, L, D); ``w`` (N,) guidance scales.
    """
    train_steps = len(noise.alphas_cumprod)
    timesteps = space_timesteps(train_steps, params["steps"])[1 : tau + 1]
    if params["guidance"] == "negative":
        invert_eps = noise.guided(source, target, w)
        denoise_eps = noise.guided(target, source, w)
    else:
        invert_eps = noise.guided(source, empty, w)
        denoise_eps = noise.guided(target, empty, w)
    x, y = edict_invert(latents, invert_eps, noise.alphas_cumprod, timesteps, params["p"])
    x, _ = edict_denoise(x, y, denoise_eps, noise.alphas_cumprod, timesteps, params["p"])
    return x


def attempts_of(params: dict[str, Any]) -> list[list[float]]:
    """The (τ, w) attempts: the single (tau, w) when both are set, else ``attempts``."""
    single = (params.get("tau"), params.get("w"))
    if single == (None, None):
        return [list(attempt) for attempt in params["attempts"]]
    if None in single:
        raise ExplanationError(f"params.tau={single[0]} and params.w={single[1]}: set both or neither")
    return [list(single)]


def _check(params: dict[str, Any]) -> None:
    check_params(params, PARAMS, "time")
    if params["guidance"] not in GUIDANCE:
        raise ExplanationError(f"params.guidance={params['guidance']!r}: allowed {', '.join(GUIDANCE)}")
    for tau, _ in attempts_of(params):
        if not 1 <= tau < params["steps"]:
            raise ExplanationError(f"params.attempts: tau={tau} must be in 1..steps-1={params['steps'] - 1}")


@in_batches("TIME batches")
def explain(
    images: torch.Tensor,
    sample_ids: np.ndarray,
    models: Models,
    params: dict[str, Any],
    seed: int,
) -> Explanations:
    """TIME counterfactuals of ``images`` (N, C, H, W) in [-1, 1], in batches of ``batch_size``.

    ``models.ddpm`` is the text-to-image model (:class:`~diffxai.models.t2i.TextToImage`);
    ``models.context`` holds the distilled token ``embeddings`` ({token: (D,)}, set into the
    model here) and the ``concepts`` (:class:`Concepts`). Deterministic: EDICT needs no noise,
    so ``seed`` is unused.
    """
    _check(params)
    t2i, concepts = models.ddpm, models.context["concepts"]
    if models.context.get("embeddings"):
        set_token_embeddings(t2i, models.context["embeddings"])
    check_images(images, t2i.image_shape, sample_ids)
    blackbox = BlackBox(models.classifier)
    probabilities = blackbox(images)
    logits_before = probabilities.clamp_min(1e-12).log()
    sources = logits_before.argmax(1)
    targets = choose_targets(logits_before, params.get("target"))
    counterfactuals, attempt, nfe, logits_after, queries = run_attempts(
        t2i, blackbox, images, logits_before, targets, concepts, params
    )
    n = len(images)
    attempts = np.array(attempts_of(params), dtype=np.float32)
    chosen = np.where(attempt[:, None] >= 0, attempts[np.maximum(attempt, 0)], np.nan)
    return Explanations(
        counterfactuals=counterfactuals.cpu().numpy(),
        sources=sources.numpy(),
        targets=targets.numpy(),
        logits_before=logits_before.numpy(),
        logits_after=logits_after.numpy(),
        nfe=nfe,
        nfe_backward=np.zeros(n, np.int64),
        classifier_calls=1 + queries,  # the input's query, then one per attempt it ran
        classifier_gradients=np.zeros(n, np.int64),
        seconds=np.zeros(n, np.float32),
        extras={
            "attempt": attempt.astype(np.int64),
            "tau": chosen[:, 0].astype(np.float32),
            "guidance_scale": chosen[:, 1].astype(np.float32),
        },
    )


@torch.no_grad()
def run_attempts(
    t2i,
    blackbox: BlackBox,
    images: torch.Tensor,
    logits_before: torch.Tensor,
    targets: torch.Tensor,
    concepts: Concepts,
    params: dict[str, Any],
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, torch.Tensor, np.ndarray]:
    """Counterfactuals (N, C, H, W), the index of the attempt that flipped each (−1: none), UNet
    evaluations per sample (N,), the log-probabilities on the counterfactuals (N, K) and the
    black-box queries per sample (N,), from the input's log-probabilities ``logits_before`` (N, K).

    A sample that never flips keeps the last attempt's image. Each attempt queries the black box
    once per sample it ran on: a sample flipped by attempt i was queried i + 1 times.
    """
    n = len(images)
    sources = logits_before.argmax(1)
    prompts = lambda classes: [concepts.prompt(int(c), params["context"]) for c in classes]  # noqa: E731
    source_text = t2i.encode_prompts(prompts(sources)).to(images.device)
    target_text = t2i.encode_prompts(prompts(targets)).to(images.device)
    empty_text = t2i.encode_prompts([""] * n).to(images.device)
    latents = t2i.to_latent(images)
    noise = GuidedNoise(t2i, params["unet_batch"])
    counterfactuals = images.clone()
    attempt = np.full(n, -1, np.int64)
    nfe = np.zeros(n, np.int64)
    queries = np.zeros(n, np.int64)
    pending = torch.arange(n)
    log_probabilities = logits_before.clone()
    for index, (tau, w) in enumerate(attempts_of(params)):
        if len(pending) == 0:
            break
        rows_before = noise.rows
        scale = torch.full((len(pending),), float(w), dtype=latents.dtype, device=latents.device)
        edited = edit(
            noise, latents[pending], source_text[pending], target_text[pending], empty_text[pending],
            int(tau), scale, params,
        )  # fmt: skip
        candidate = t2i.from_latent(edited).clamp(-1, 1)
        nfe[pending.numpy()] += (noise.rows - rows_before) // len(pending)
        probabilities = blackbox(candidate)
        queries[pending.numpy()] += 1
        counterfactuals[pending] = candidate
        log_probabilities[pending] = probabilities.clamp_min(1e-12).log()
        flipped = probabilities.argmax(1) == targets[pending]
        attempt[pending[flipped].numpy()] = index
        pending = pending[~flipped]
    return counterfactuals, attempt, nfe, log_probabilities, queries


def attempt_nfe(attempts: Sequence[Sequence[int]]) -> list[int]:
    """UNet evaluations per sample after each attempt (cumulative): 8·τ per attempt."""
    return [int(total) for total in np.cumsum([8 * int(tau) for tau, _ in attempts])]
