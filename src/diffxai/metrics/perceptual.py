"""LPIPS (AlexNet) without downloads, and DiME's diversity σ_L of repeated CEs.

The ``lpips`` wheel ships the calibrated linear layers (``lpips/weights/v0.1/alex.pth``); the AlexNet
backbone is either loaded from a local torchvision state-dict file or, as a documented fallback,
randomly initialised with a fixed seed. Images are float tensors (N, C, H, W) in [-1, 1].
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import lpips as lpips_package
import torch
from torch import nn

MIN_SIZE = 64
FALLBACK_SEED = 0


def _build_lpips() -> lpips_package.LPIPS:
    """LPIPS-Alex with the wheel's linear layers and an (untrained) backbone; never downloads."""
    with warnings.catch_warnings():
        # lpips calls torchvision's deprecated ``alexnet(pretrained=False)``.
        warnings.simplefilter("ignore", UserWarning)
        return lpips_package.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)


def _load_alexnet_backbone(model: lpips_package.LPIPS, weights_path: str | Path) -> None:
    """Copy ``features.<i>.*`` of a torchvision AlexNet state dict into lpips' ``net.slice<j>.<i>.*``."""
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    backbone = {}
    for name in model.net.state_dict():
        _, index, parameter = name.split(".")
        backbone[name] = state[f"features.{index}.{parameter}"]
    model.net.load_state_dict(backbone)


def _prepare(images: torch.Tensor) -> torch.Tensor:
    """Grey -> RGB and bilinear upsampling so that the short side is at least 64 px.

    AlexNet's stem (11×11 conv, stride 4, then max-pools) leaves feature maps of 1–3 px for 32-px
    images, so small images are enlarged before LPIPS.
    """
    images = images.float()
    images = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
    height, width = images.shape[-2:]
    if min(height, width) < MIN_SIZE:
        scale = MIN_SIZE / min(height, width)
        size = (max(MIN_SIZE, round(height * scale)), max(MIN_SIZE, round(width * scale)))
        images = nn.functional.interpolate(images, size=size, mode="bilinear", align_corners=False)
    return images


class Lpips:
    """LPIPS-Alex distance; ``name`` says whether the backbone is real or the seeded random fallback.

    With ``weights_path`` (a torchvision ``alexnet`` state dict file) the backbone is that AlexNet
    (``name`` = "lpips-alex"). Without it the backbone keeps the random initialisation drawn after
    ``torch.manual_seed(0)`` in a forked RNG (``name`` = "lpips-alex-random-backbone(seed=0)"): a
    deterministic, untrained perceptual distance, not comparable with published LPIPS values.
    """

    def __init__(self, weights_path: str | Path | None, device: torch.device, batch_size: int = 64) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(FALLBACK_SEED)
            model = _build_lpips()
        if weights_path is None:
            self.name = f"lpips-alex-random-backbone(seed={FALLBACK_SEED})"
        else:
            _load_alexnet_backbone(model, weights_path)
            self.name = "lpips-alex"
        self.model = model.to(device).eval()
        self.device = device
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-sample LPIPS (N,) on CPU between image batches a and b, both (N, C, H, W) in [-1, 1]."""
        distances = [
            self.model(_prepare(chunk_a.to(self.device)), _prepare(chunk_b.to(self.device))).flatten().cpu()
            for chunk_a, chunk_b in zip(a.split(self.batch_size), b.split(self.batch_size), strict=True)
        ]
        return torch.cat(distances)


def diversity_sigma_l(cf_runs: list[torch.Tensor], lpips: Lpips) -> float:
    """DiME's σ_L: mean over samples of the mean pairwise LPIPS between the K ≥ 2 runs' CEs (N, C, H, W).

    All CEs count, successful or not.
    """
    if len(cf_runs) < 2:
        raise ValueError(f"σ_L needs at least 2 runs of CEs, got {len(cf_runs)}")
    pairwise = torch.stack([lpips(a, b) for a, b in itertools.combinations(cf_runs, 2)])
    return float(pairwise.double().mean(dim=0).mean())
