"""Task wrappers around a network: what its outputs mean.

Every model takes images (N, C, H, W) in [-1, 1]. A :class:`Classifier` returns
logits (N, num_classes); a :class:`Regressor` returns the factor in its own units
(N,), undoing the standardisation it was trained with; an :class:`AttributeOracle`
returns per-attribute logits (N, A).
"""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    def __init__(self, network: nn.Module, class_names: list[str]) -> None:
        super().__init__()
        self.network = network
        self.class_names = list(class_names)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)


class Regressor(nn.Module):
    def __init__(self, network: nn.Module, target: str, mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        self.network = network
        self.target = target
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def standardized(self, images: torch.Tensor) -> torch.Tensor:
        """Prediction in standard units (N,), as trained."""
        return self.network(images)[:, 0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.standardized(images) * self.std + self.mean


class AttributeOracle(nn.Module):
    def __init__(self, network: nn.Module, attribute_names: list[str]) -> None:
        super().__init__()
        self.network = network
        self.attribute_names = list(attribute_names)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)
