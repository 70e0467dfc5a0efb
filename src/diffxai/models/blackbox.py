"""Black-box access to a classifier: probabilities only, counted, no gradients.

Methods that claim to be black-box (FreeMCG, GCD, TIME) see the classifier only
through :class:`BlackBox`, so a gradient can never leak in by accident and the
number of queries (images classified) is exact.
"""

from __future__ import annotations

import torch
from torch import nn


class GradientRefused(RuntimeError):
    """Raised when a black-box query is made on an input that requires gradients."""


class BlackBox:
    """Wraps a classifier: ``blackbox(images)`` -> probabilities (N, num_classes), no grad."""

    def __init__(self, classifier: nn.Module, batch_size: int = 256) -> None:
        self._classifier = classifier.eval()
        self.batch_size = batch_size
        self.queries = 0

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.requires_grad:
            raise GradientRefused("black-box classifier: inputs must not require gradients")
        device = next(self._classifier.parameters()).device
        probabilities = [
            torch.softmax(self._classifier(chunk.to(device)), dim=1).cpu()
            for chunk in images.split(self.batch_size)
        ]
        self.queries += len(images)
        return torch.cat(probabilities)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted classes (N,), counted as queries."""
        return self(images).argmax(dim=1)
