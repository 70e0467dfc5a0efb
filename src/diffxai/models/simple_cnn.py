"""The small CNN of seed 002 (App. B.1, Tables 6-7): four conv blocks, two linear layers.

Each block is 3x3 conv -> ReLU -> 2x2 max pool. At 32 px the last block leaves
(64, 2, 2) = 256 features; other resolutions are pooled adaptively to 2x2 so the
head keeps its size.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SimpleCNN(nn.Module):
    """images (N, C, H, W) in [-1, 1] -> outputs (N, num_outputs) (logits or values)."""

    def __init__(
        self,
        in_channels: int,
        num_outputs: int,
        channels: Sequence[int] = (32, 64, 64, 64),
        hidden: int = 64,
    ) -> None:
        super().__init__()
        widths = [in_channels, *channels]
        self.features = nn.Sequential(*(conv_block(a, b) for a, b in itertools.pairwise(widths)))
        self.pool = nn.AdaptiveMaxPool2d(2)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels[-1] * 4, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_outputs),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(images)))
