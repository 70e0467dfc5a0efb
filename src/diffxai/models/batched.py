"""A network's outputs on many images, computed in batches."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def batched_outputs(
    model: nn.Module, images: torch.Tensor, device: torch.device | str, batch_size: int = 256
) -> torch.Tensor:
    """``model`` on images (N, C, H, W), ``batch_size`` at a time on ``device``: outputs (N, ...)
    as float32 on the CPU."""
    return torch.cat([model(chunk.to(device)).float().cpu() for chunk in images.split(batch_size)])
