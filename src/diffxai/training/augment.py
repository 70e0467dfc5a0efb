"""Batched, per-sample random augmentations on tensors (for SimSiam views)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_views(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random view of each image (N, C, H, W) in [-1, 1]: crop-and-resize (scale 0.6-1),
    flips, brightness/contrast jitter and Gaussian noise, each drawn per sample."""
    n = len(images)
    scale = 0.6 + 0.4 * torch.rand(n, generator=generator)
    shift = (1 - scale)[:, None] * (2 * torch.rand(n, 2, generator=generator) - 1)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    views = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = 0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=generator)
    brightness = 0.3 * (torch.rand(n, 1, 1, 1, generator=generator) - 0.5)
    noise = 0.05 * torch.randn(views.shape, generator=generator)
    return ((views * contrast + brightness) + noise).clamp(-1, 1)
