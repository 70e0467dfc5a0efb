"""ACE (Jeanneret et al. 2023; thesis ch. 4, App. A): adversarial attacks through a
diffusion filter, then a RePaint refinement inside the changed region.

1. Pre-explanation x': minimise L_class(F_τ(x'); y') + λd·d(x', x) with an unbounded
   attack (``pgd``: signed steps; ``gd``: gradient steps of unit RMS; ``cw``: Adam on the
   Carlini–Wagner margin), where F_τ noises to respaced step τ and denoises τ steps,
   gradients flowing through every step (τ forward + τ backward passes per attack step).
2. Mask: channel-summed |x − x'| normalised by its maximum, dilated by a square of
   ``dilation`` pixels (default: 15 px at 128 px, scaled to the image size), thresholded.
3. Refinement (App. A, Algorithm 2): from the noised pre-explanation, each reverse step
   denoises the collage z_i·m + q(x, i)·(1 − m); the CE keeps x outside the mask.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from diffxai.diffusion.respaced import RespacedDiffusion
from diffxai.methods.base import (
    ExplanationError,
    Explanations,
    Models,
    SampleNoise,
    check_logits,
    class_loss,
    classify,
    in_batches,
    prepare,
)
from diffxai.methods.dilation import dilation_size

PARAMS = {
    "steps", "tau", "attack", "attack_steps", "step_size", "distance", "lambda_d", "class_loss",
    "dilation", "threshold", "early_stop", "target", "mask_from",
}  # fmt: skip
ATTACKS = ("pgd", "gd", "cw")
MASK_SOURCES = ("attacked", "filtered")
DISTANCES = {"l1": 0.001, "l2": 0.1}  # seed defaults of λd


def region_mask(images: torch.Tensor, pre: torch.Tensor, dilation: int, threshold: float) -> torch.Tensor:
    """Binary mask (N, 1, H, W) of where the pre-explanation changed the image."""
    diff = (images - pre).abs().sum(1, keepdim=True)
    diff = diff / diff.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    if dilation > 1:
        pad = dilation // 2
        diff = nn.functional.max_pool2d(
            nn.functional.pad(diff, (pad, dilation - 1 - pad, pad, dilation - 1 - pad), value=0.0),
            dilation,
            1,
        )
    return (diff > threshold).float()


def _filter(diffusion: RespacedDiffusion, x: torch.Tensor, tau: int, draw) -> torch.Tensor:
    """F_τ(x): noise to step τ and denoise τ steps (differentiable)."""
    return diffusion.denoise(diffusion.q_sample(x, tau - 1, draw()), tau - 1, [draw() for _ in range(tau)])


def _attack_loss(
    logits: torch.Tensor, targets: torch.Tensor, params: dict[str, Any], kind: str
) -> torch.Tensor:
    if params["attack"] == "cw":  # Carlini–Wagner margin, zero once the target leads
        return class_loss(logits, targets, "margin").clamp_min(0)
    return class_loss(logits, targets, kind)


def attack_distance(delta: torch.Tensor, kind: str) -> torch.Tensor:
    """The attack's distance d(x', x) (N,) of perturbations (N, C, H, W): ``l1`` Σ|δ| or ``l2``
    ‖δ‖₂, the norm, not its square (whose pull grows with δ and, at the published λd = 0.1,
    holds the attack at the input)."""
    flat = delta.flatten(1)
    return flat.abs().sum(1) if kind == "l1" else torch.linalg.vector_norm(flat, dim=1)


def pre_explain(
    diffusion: RespacedDiffusion,
    models: Models,
    images: torch.Tensor,
    targets: torch.Tensor,
    params: dict[str, Any],
    noise: SampleNoise,
    sample_ids: np.ndarray,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Pre-explanations x' (N, C, H, W), the attack step at which F_τ(x') first reached
    the target (−1: never), and the attack steps run per sample."""
    tau, lam = params["tau"], params["lambda_d"]
    if lam is None:
        lam = DISTANCES[params["distance"]]
    n, device = len(images), images.device
    adversarial = images.clone()
    optimiser_state = None
    if params["attack"] == "cw":
        variable = adversarial.clone().requires_grad_(True)
        optimiser_state = torch.optim.Adam([variable], lr=params["step_size"])
    flip_step = np.full(n, -1, np.int64)
    steps_run = np.zeros(n, np.int64)
    active = np.ones(n, bool)
    for k in range(params["attack_steps"]):
        rows = np.flatnonzero(active) if params["early_stop"] else np.arange(n)
        if rows.size == 0:
            break
        current = (variable if optimiser_state else adversarial)[rows]
        x = current if optimiser_state else current.clone().requires_grad_(True)
        logits = models.classifier(_filter(diffusion, x, tau, lambda rows=rows: noise.draw(rows).to(device)))
        check_logits(logits.detach(), sample_ids[rows], f"at ACE attack step {k}")
        delta = x - images[rows]
        loss = _attack_loss(logits, targets[rows], params, params["class_loss"]) + lam * attack_distance(
            delta, params["distance"]
        )
        steps_run[rows] += 1
        reached = (logits.argmax(1) == targets[rows]).cpu().numpy()
        first = rows[reached & (flip_step[rows] < 0)]
        flip_step[first] = k
        if params["early_stop"]:
            active[rows[reached]] = False
            keep = torch.from_numpy(~reached).to(device)
        else:
            keep = torch.ones(len(rows), dtype=torch.bool, device=device)
        if optimiser_state:
            frozen = torch.from_numpy(~active).to(device)
            before = variable.detach().clone()
            optimiser_state.zero_grad()
            (loss * keep).sum().backward()
            optimiser_state.step()
            with torch.no_grad():  # Adam's momentum must not move samples that are done
                variable.copy_(torch.where(frozen.view(-1, 1, 1, 1), before, variable.clamp(-1, 1)))
            continue
        (gradient,) = torch.autograd.grad(loss.sum(), x)
        if params["attack"] == "pgd":
            step = torch.sign(gradient)
        else:  # gd: the gradient scaled to unit root-mean-square per sample (scale-free step size)
            step = gradient / gradient.pow(2).flatten(1).mean(1).sqrt().clamp_min(1e-12).view(-1, 1, 1, 1)
        with torch.no_grad():
            updated = (x - params["step_size"] * step).clamp(-1, 1)
            adversarial[rows] = torch.where(keep.view(-1, 1, 1, 1), updated, x)
    final = variable.detach() if optimiser_state else adversarial
    return final, flip_step, steps_run


@torch.no_grad()
def repaint(
    diffusion: RespacedDiffusion, images: torch.Tensor, pre: torch.Tensor, mask: torch.Tensor, tau: int, draw
) -> torch.Tensor:
    """Algorithm 2: denoise the collage of the noised pre-explanation (inside ``mask``) and
    the noised input (outside) from step τ; the result equals ``images`` outside the mask."""
    z = diffusion.q_sample(pre, tau - 1, draw())
    for i in range(tau - 1, -1, -1):
        known = diffusion.q_sample(images, i, draw())
        z = diffusion.step(mask * z + (1 - mask) * known, i, draw())
    return (mask * z + (1 - mask) * images).clamp(-1, 1)  # the input is in range: only z is clipped


@in_batches("ACE batches")
def explain(
    images: torch.Tensor,
    sample_ids: np.ndarray,
    models: Models,
    params: dict[str, Any],
    seed: int,
) -> Explanations:
    """ACE counterfactuals of ``images`` (N, C, H, W) in [-1, 1] on the DDPM's device, in
    batches of ``batch_size`` (all at once when None)."""
    setup = prepare(images, sample_ids, models, params, PARAMS, "ace", seed)
    for key, allowed in (("attack", ATTACKS), ("mask_from", MASK_SOURCES), ("distance", tuple(DISTANCES))):
        if params[key] not in allowed:
            raise ExplanationError(f"params.{key}={params[key]!r}: allowed {allowed}")
    diffusion, noise, targets = setup.diffusion, setup.noise, setup.targets
    device, n, tau = images.device, len(images), params["tau"]
    pre, flip_step, steps_run = pre_explain(diffusion, models, images, targets, params, noise, sample_ids)
    all_rows = np.arange(n)
    draw = lambda: noise.draw(all_rows).to(device)  # noqa: E731
    changed, extra_nfe = pre, 0
    if params["mask_from"] == "filtered":  # a fresh draw of F_τ(x'), the kind of image the classifier judged
        with torch.no_grad():
            changed = _filter(diffusion, pre, tau, draw).clamp(-1, 1)
        extra_nfe = tau
    mask = region_mask(images, changed, dilation_size(params, images.shape[-1]), params["threshold"])
    counterfactuals = repaint(diffusion, images, pre, mask, tau, draw)
    logits_after = classify(models.classifier, counterfactuals, sample_ids, "on the CE")
    extras = {
        "pre_explanations": pre.detach().cpu().numpy(),
        "masks": mask.cpu().numpy().astype(np.uint8),
        "flip_attack_step": flip_step,
    }
    return setup.result(
        counterfactuals,
        logits_after,
        extras,
        nfe=steps_run * tau + tau + extra_nfe,
        nfe_backward=steps_run * tau,
        classifier_calls=steps_run + 2,
        classifier_gradients=steps_run,
    )
