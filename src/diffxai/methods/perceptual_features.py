"""Feature networks for DiME's perceptual loss, available offline.

By default the self-supervised SimSiam encoder trained on the dataset (its three
convolutional blocks); VGG (torchvision layout) when the user has its weights on disk.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from torch import nn

from diffxai.models.encoder import SimSiam

# indices in ``vgg.features`` after which the ReLU outputs are taken (relu1_2 … relu4_x)
VGG_LAYERS = {"vgg16": (3, 8, 15, 22), "vgg19": (3, 8, 17, 26)}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureLayers(nn.Module):
    """Maps images (N, C, H, W) in [-1, 1] to a list of feature maps, frozen."""

    def __init__(self, stages: list[nn.Module], name: str, imagenet_input: bool = False) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.name = name
        self.imagenet_input = imagenet_input
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = images
        if self.imagenet_input:
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            x = ((x + 1) / 2 - self.mean) / self.std
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def train(self, mode: bool = True) -> FeatureLayers:
        return super().train(False)  # batch-norm statistics stay frozen


def encoder_layers(encoder: SimSiam) -> FeatureLayers:
    """The outputs of the encoder's three convolutional blocks."""
    return FeatureLayers(list(encoder.backbone[:3]), "simsiam-encoder")


def vgg_layers(weights_path: str | Path, arch: str = "vgg19") -> FeatureLayers:
    """VGG feature slices from a local torchvision state dict (no download)."""
    if arch not in VGG_LAYERS:
        raise ValueError(f"perceptual.arch={arch!r}: allowed {sorted(VGG_LAYERS)}")
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"perceptual.weights: no VGG weights file at {path}")
    import torchvision  # here, not at the top: it costs every explain job ≈ 4 s of start-up (torch._dynamo)

    vgg = getattr(torchvision.models, arch)(weights=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    features_state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    vgg.features.load_state_dict(features_state or state)
    bounds = (0, *(end + 1 for end in VGG_LAYERS[arch]))
    stages = [vgg.features[a:b] for a, b in itertools.pairwise(bounds)]
    return FeatureLayers(stages, f"{arch}:{path.name}", imagenet_input=True)


def perceptual_distance(features_a: list[torch.Tensor], features_b: list[torch.Tensor]) -> torch.Tensor:
    """Σ over layers of the mean squared feature difference, per sample (N,)."""
    return sum((a - b).pow(2).flatten(1).mean(1) for a, b in zip(features_a, features_b, strict=True))
