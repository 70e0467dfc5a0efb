"""DiME (Jeanneret et al. 2022; thesis ch. 3): guided diffusion with clean-image gradients.

The input is noised to respaced step τ; at each reverse step i the clean image x_i is
estimated from z_i by unguided denoising (``clean_estimate: chain``, i + 1 network
evaluations, as published; or ``tweedie``: the one-step estimate x̂0(z_i), 1
evaluation), the gradient of λc·L_class + λp·L_perc at x_i is scaled by
1/sqrt(ᾱ_i) (eq. 8) and, with η·sign(z_i − x) of the ℓ1 term, shifts the mean of the
reverse step (eq. 4). The classifier only ever sees clean images. Samples that have
not flipped are re-run with the next λc of the escalation list.
NFE per λc attempt: τ(τ + 1)/2 with the chain (1,830 for τ = 60), τ with Tweedie.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from diffxai.diffusion.respaced import RespacedDiffusion
from diffxai.methods.base import (
    ExplanationError,
    Explanations,
    Models,
    batches,
    check_logits,
    class_loss,
    classify,
    prepare,
)
from diffxai.methods.perceptual_features import perceptual_distance
from diffxai.progress import progress

PARAMS = {"steps", "tau", "lambda_c", "lambda_p", "eta_l1", "class_loss", "clean_estimate", "target"}
CLEAN_ESTIMATES = ("chain", "tweedie")


def _clean_estimate(
    diffusion: RespacedDiffusion, z: torch.Tensor, x0_hat: torch.Tensor, i: int, how: str, noise
) -> tuple[torch.Tensor, int]:
    """x_i from z_i (no gradient) and the extra network evaluations it took."""
    if how == "tweedie" or i == 0:
        return x0_hat, 0
    z_prev = diffusion.step(z, i, noise(), x0=x0_hat)
    return diffusion.denoise(z_prev, i - 1, [noise() for _ in range(i)]), i


def _guided_pass(
    diffusion: RespacedDiffusion,
    models: Models,
    images: torch.Tensor,
    targets: torch.Tensor,
    scale: float,
    params: dict[str, Any],
    draw,
    sample_ids: np.ndarray,
) -> tuple[torch.Tensor, int]:
    """One DiME run at classifier scale ``scale``: CEs (N, C, H, W) and NFE per sample."""
    tau, eta = params["tau"], params["eta_l1"]
    reference = models.perceptual(images) if params["lambda_p"] else None
    z = diffusion.q_sample(images, tau - 1, draw())
    nfe = 0
    for i in range(tau - 1, -1, -1):
        with torch.no_grad():
            x0_hat = diffusion.predict_x0(z, i)
            x_i, extra = _clean_estimate(diffusion, z, x0_hat, i, params["clean_estimate"], draw)
        nfe += 1 + extra
        x_i = x_i.detach().requires_grad_(True)
        logits = models.classifier(x_i)
        check_logits(logits.detach(), sample_ids, f"at DiME step {i} (lambda_c={scale})")
        loss = scale * class_loss(logits, targets, params["class_loss"])
        if reference is not None:
            loss = loss + params["lambda_p"] * perceptual_distance(models.perceptual(x_i), reference)
        (gradient,) = torch.autograd.grad(loss.sum(), x_i)
        shift = gradient / diffusion.alpha_bar[i].sqrt() + eta * torch.sign(z - images)
        with torch.no_grad():
            z = diffusion.step(z, i, draw(), shift=shift, x0=x0_hat)
    return z.clamp(-1, 1).detach(), nfe


def explain(
    images: torch.Tensor,
    sample_ids: np.ndarray,
    models: Models,
    params: dict[str, Any],
    seed: int,
    batch_size: int | None = None,
) -> Explanations:
    """DiME counterfactuals of ``images`` (N, C, H, W) in [-1, 1] on the DDPM's device.

    Each λc attempt runs the samples not yet flipped in batches of ``batch_size`` (all at
    once when None), so re-runs at a higher λc fill whole batches."""
    setup = prepare(images, sample_ids, models, params, PARAMS, "dime", seed)
    if params["clean_estimate"] not in CLEAN_ESTIMATES:
        raise ExplanationError(
            f"params.clean_estimate={params['clean_estimate']!r}: allowed {CLEAN_ESTIMATES}"
        )
    diffusion, noise, targets = setup.diffusion, setup.noise, setup.targets
    logits_before = setup.logits_before
    device = images.device
    n = len(images)
    counterfactuals = images.clone()
    logits_after = logits_before.clone()
    done = np.zeros(n, bool)
    flip_scale = np.full(n, np.nan, np.float32)
    nfe = np.zeros(n, np.int64)
    gradients = np.zeros(n, np.int64)
    calls = np.ones(n, np.int64)
    for scale in params["lambda_c"]:
        for rows in progress(batches(np.flatnonzero(~done), batch_size), desc=f"DiME lambda_c={scale}"):
            cfs, pass_nfe = _guided_pass(
                diffusion,
                models,
                images[rows],
                targets[rows],
                float(scale),
                params,
                lambda rows=rows: noise.draw(rows).to(device),
                sample_ids[rows],
            )
            logits = classify(models.classifier, cfs, sample_ids[rows], f"on the CE (lambda_c={scale})")
            counterfactuals[rows] = cfs
            logits_after[rows] = logits
            nfe[rows] += pass_nfe
            gradients[rows] += params["tau"]
            calls[rows] += params["tau"] + 1
            flipped = (logits.argmax(1) == targets[rows].cpu()).numpy()
            done[rows[flipped]] = True
            flip_scale[rows[flipped]] = scale
    return setup.result(
        counterfactuals,
        logits_after,
        {"flip_lambda_c": flip_scale},
        nfe=nfe,
        nfe_backward=np.zeros(n),
        classifier_calls=calls,
        classifier_gradients=gradients,
    )
