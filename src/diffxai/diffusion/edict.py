"""EDICT: exactly invertible DDIM through two coupled flows (Wallace et al. 2023; TIME, eqs. 5.6–5.8).

Plain DDIM inversion is only approximately invertible because the noise prediction is evaluated at
the wrong point. EDICT carries two flows ``x`` and ``y`` that each take a DDIM step using the
other's noise prediction, then mixes them with weight ``p`` (default 0.93); every operation has a
closed-form inverse, so inverting an image and denoising the result returns it up to float error.

For a step from timestep ``t`` down to the previous timestep ``s`` (ᾱ_s = 1 for the final step to
the clean image) the DDIM update is ``x_s = a_t x_t + b_t ε(x_t, t)`` with
``a_t = sqrt(ᾱ_s / ᾱ_t)`` and ``b_t = sqrt(1 − ᾱ_s) − sqrt(ᾱ_s (1 − ᾱ_t) / ᾱ_t)``.

Cost: every step, in either direction, calls ``eps`` exactly twice (see :func:`edict_nfe`); when
``eps`` is a guided prediction each call may itself cost two network evaluations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise

import torch

Eps = Callable[[torch.Tensor, int], torch.Tensor]
"""eps(x, timestep) -> noise prediction shaped like ``x``."""


def edict_nfe(steps: int) -> int:
    """Number of ``eps`` calls made by ``steps`` EDICT steps (inversion or denoising): two per step."""
    return 2 * steps


def _check_timesteps(alphas_cumprod: torch.Tensor, timesteps: Sequence[int]) -> None:
    """Raise ValueError for timesteps that are empty, not strictly ascending or outside ``alphas_cumprod``."""
    steps = [int(t) for t in timesteps]
    if not steps:
        raise ValueError("timesteps must not be empty")
    if any(b <= a for a, b in pairwise(steps)):
        raise ValueError(f"timesteps must be strictly ascending, got {steps}")
    if steps[0] < 0 or steps[-1] >= len(alphas_cumprod):
        raise ValueError(f"timesteps must lie in [0, {len(alphas_cumprod)}), got {steps}")


def edict_coefficients(
    alphas_cumprod: torch.Tensor, timesteps: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """DDIM coefficients ``(a, b)``, each (S,) float64, for the S steps of the ascending ``timesteps``.

    Step i goes from ``timesteps[i]`` down to ``timesteps[i-1]``, or to the clean image (ᾱ = 1) for
    i = 0. ``alphas_cumprod`` is the (T,) ᾱ of the training schedule.
    """
    _check_timesteps(alphas_cumprod, timesteps)
    alpha_t = alphas_cumprod.detach().to(device="cpu", dtype=torch.float64)[list(timesteps)]
    alpha_s = torch.cat([torch.ones(1, dtype=torch.float64), alpha_t[:-1]])
    a = (alpha_s / alpha_t).sqrt()
    b = (1 - alpha_s).sqrt() - (alpha_s * (1 - alpha_t) / alpha_t).sqrt()
    return a, b


def _coefficients_like(
    image: torch.Tensor, alphas_cumprod: torch.Tensor, timesteps: Sequence[int], p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) of :func:`edict_coefficients` cast to the dtype and device of ``image``, after validating p."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"EDICT mixing weight p must satisfy 0 < p < 1, got p={p}")
    a, b = edict_coefficients(alphas_cumprod, timesteps)
    return a.to(image), b.to(image)


def edict_invert(
    image: torch.Tensor,
    eps: Eps,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int],
    p: float = 0.93,
    *,
    y: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert a clean (N, C, H, W) ``image`` to the noisiest timestep, ``timesteps[-1]`` (eq. 5.8).

    Both flows start at ``image`` unless a second clean flow ``y`` (N, C, H, W) is given, e.g. the
    ``y`` returned by :func:`edict_denoise`. Runs steps i = 0 .. S-1 and returns the coupled latents
    (x, y), each (N, C, H, W). Calls ``eps`` 2·S times.
    """
    a, b = _coefficients_like(image, alphas_cumprod, timesteps, p)
    x, y = image, image if y is None else y
    for i, t in enumerate(timesteps):
        y_inter = (y - (1 - p) * x) / p
        x_inter = (x - (1 - p) * y_inter) / p
        y = (y_inter - b[i] * eps(x_inter, int(t))) / a[i]
        x = (x_inter - b[i] * eps(y, int(t))) / a[i]
    return x, y


def edict_denoise(
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Eps,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int],
    p: float = 0.93,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Denoise coupled (N, C, H, W) latents at ``timesteps[-1]`` to the clean image (eq. 5.7).

    Runs steps i = S-1 .. 0 and returns (x, y), each (N, C, H, W); ``x`` is the output image. Exactly
    undoes :func:`edict_invert` with the same ``eps``, schedule and ``p``. Calls ``eps`` 2·S times.
    """
    a, b = _coefficients_like(x, alphas_cumprod, timesteps, p)
    for i in reversed(range(len(timesteps))):
        t = int(timesteps[i])
        x_inter = a[i] * x + b[i] * eps(y, t)
        y_inter = a[i] * y + b[i] * eps(x_inter, t)
        x = p * x_inter + (1 - p) * y_inter
        y = p * y_inter + (1 - p) * x
    return x, y
