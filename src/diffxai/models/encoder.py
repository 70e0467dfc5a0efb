"""SimSiam self-supervised encoder (Chen & He, 2021), sized for small images.

The backbone's pooled features (N, feature_dim) serve as the offline feature space
for FID and for FS/S³-style similarity when no pretrained network is available.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SimSiam(nn.Module):
    """Backbone + projector + predictor; :meth:`features` is the encoder used downstream."""

    def __init__(self, in_channels: int, width: int = 32, feature_dim: int = 128) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            _block(in_channels, width),
            _block(width, 2 * width),
            _block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * width, feature_dim),
        )
        self.projector = nn.Sequential(
            nn.Linear(feature_dim, feature_dim, bias=False),
            nn.BatchNorm1d(feature_dim),
            nn.ReLU(inplace=True),
            nn.Linear(feature_dim, feature_dim, bias=False),
            nn.BatchNorm1d(feature_dim, affine=False),
        )
        bottleneck = max(4, feature_dim // 4)
        self.predictor = nn.Sequential(
            nn.Linear(feature_dim, bottleneck, bias=False),
            nn.BatchNorm1d(bottleneck),
            nn.ReLU(inplace=True),
            nn.Linear(bottleneck, feature_dim),
        )

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, C, H, W) in [-1, 1] -> features (N, feature_dim)."""
        return self.backbone(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)

    def loss(self, view_a: torch.Tensor, view_b: torch.Tensor) -> torch.Tensor:
        """Symmetrised negative cosine similarity with stop-gradient on the targets."""
        z_a, z_b = self.projector(self.backbone(view_a)), self.projector(self.backbone(view_b))
        p_a, p_b = self.predictor(z_a), self.predictor(z_b)
        cos = nn.functional.cosine_similarity
        return -0.5 * (cos(p_a, z_b.detach()).mean() + cos(p_b, z_a.detach()).mean())
