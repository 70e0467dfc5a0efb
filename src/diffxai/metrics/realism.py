"""Realism of CEs: FID and Jeanneret et al.'s split FID (sFID) in a chosen feature space.

The feature space is either a local TorchScript Inception in clean-fid's format or, when none is
available, our self-supervised SimSiam encoder. Images are float tensors (N, C, H, W) in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffxai.metrics.frechet import fid_from_features
from diffxai.models.encoder import SimSiam
from diffxai.training.simsiam import encode

INCEPTION_SIZE = 299


def _accepts_return_features(module: torch.jit.ScriptModule) -> bool:
    """Whether ``forward`` has StyleGAN's ``return_features`` switch (inception-2015-12-05.pt has it)."""
    return any(argument.name == "return_features" for argument in module.forward.schema.arguments)


@torch.no_grad()
def _inception_features(
    module: torch.jit.ScriptModule, images_m11: torch.Tensor, device: torch.device, batch_size: int
) -> torch.Tensor:
    """Features (N, D) of images (N, C, H, W) in [-1, 1]: grey -> RGB, [0, 255], bilinear resize to 299."""
    call = partial(module, return_features=True) if _accepts_return_features(module) else module
    outputs = []
    for chunk in images_m11.split(batch_size):
        chunk = chunk.to(device).float()
        chunk = chunk.expand(-1, 3, -1, -1) if chunk.shape[1] == 1 else chunk
        pixels = ((chunk + 1) * 127.5).clamp(0, 255)
        if pixels.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            pixels = nn.functional.interpolate(
                pixels, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False
            )
        outputs.append(call(pixels).reshape(len(chunk), -1).cpu())
    return torch.cat(outputs)


class FeatureSpace:
    """A named image -> feature map used for FID / sFID; build with a ``from_*`` constructor."""

    def __init__(self, name: str, extract: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.name = name
        self._extract = extract

    @classmethod
    def from_encoder(cls, encoder: SimSiam, device: torch.device) -> FeatureSpace:
        """Our self-supervised encoder's features (moves the encoder to ``device``)."""
        return cls("simsiam-encoder", partial(encode, encoder.to(device), device=device))

    @classmethod
    def from_inception(cls, path: str | Path, device: torch.device, batch_size: int = 64) -> FeatureSpace:
        """A TorchScript Inception (clean-fid / StyleGAN format) loaded from a local file.

        The module gets float images (N, 3, 299, 299) in [0, 255]; it is called with
        ``return_features=True`` when its ``forward`` takes that argument, and returns (N, 2048).
        """
        module = torch.jit.load(str(path), map_location=device).eval()
        extract = partial(_inception_features, module, device=device, batch_size=batch_size)
        return cls(f"inception-torchscript:{Path(path).name}", extract)

    def features(self, images_m11: torch.Tensor) -> np.ndarray:
        """Features (N, D) float64 of images (N, C, H, W) in [-1, 1]."""
        with torch.no_grad():
            return self._extract(images_m11).double().numpy()


def feature_space(encoder: SimSiam, inception_path: str | None, device: torch.device) -> FeatureSpace:
    """Inception when ``inception_path`` is given (it must exist), else the SimSiam encoder."""
    if inception_path is None:
        return FeatureSpace.from_encoder(encoder, device)
    if not Path(inception_path).is_file():
        raise FileNotFoundError(f"Inception TorchScript file not found: {inception_path}")
    return FeatureSpace.from_inception(inception_path, device)


def fid(real_features: np.ndarray, cf_features: np.ndarray) -> float:
    """FID between real features (N_r, D) and CE features (N_c, D)."""
    return fid_from_features(real_features, cf_features)


def sfid(
    real_features: np.ndarray, cf_features: np.ndarray, valid: np.ndarray, n_splits: int = 10, seed: int = 0
) -> dict[str, float]:
    """Split FID: FID without the bias of comparing each CE to its own source image.

    ``cf_features[i]`` (N, D) is the CE of the image with ``real_features[i]`` (N, D); ``valid`` (N,)
    marks the CEs to include. Each split cuts a random permutation of 0..N−1 into halves A and B and
    averages FID(CEs of A, originals of B) and FID(CEs of B, originals of A). Returns the mean and
    std over ``n_splits`` splits (numpy Generator seeded with ``seed``); both NaN if any split has a
    half with fewer than 2 valid CEs.
    """
    real_features, cf_features = np.asarray(real_features), np.asarray(cf_features)
    valid = np.asarray(valid, dtype=bool)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_splits):
        order = rng.permutation(len(real_features))
        half_a, half_b = order[: len(order) // 2], order[len(order) // 2 :]
        ces_a, ces_b = half_a[valid[half_a]], half_b[valid[half_b]]
        if min(len(ces_a), len(ces_b)) < 2:
            return {"mean": float("nan"), "std": float("nan"), "n_splits": n_splits}
        a_to_b = fid(real_features[half_b], cf_features[ces_a])
        values.append((a_to_b + fid(real_features[half_a], cf_features[ces_b])) / 2)
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n_splits": n_splits}
