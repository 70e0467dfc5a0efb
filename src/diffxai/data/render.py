"""Anti-aliased rasterisation by supersampling: shapes are drawn at ``factor`` times
the resolution as exact inside/outside tests and box-filtered down, so each pixel
holds its covered area fraction in [0, 1]."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Inside = Callable[[np.ndarray, np.ndarray], np.ndarray]


def pixel_grid(size: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel centre coordinates (y, x), each (size*factor, size*factor), in pixel units."""
    centres = (np.arange(size * factor) + 0.5) / factor
    return np.meshgrid(centres, centres, indexing="ij")


def downsample(fine: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter the last two axes by ``factor``: (..., H*f, W*f) -> (..., H, W)."""
    *lead, height, width = fine.shape
    blocks = fine.reshape(*lead, height // factor, factor, width // factor, factor)
    return blocks.mean(axis=(-3, -1))


def coverage(inside: Inside, size: int, factor: int) -> np.ndarray:
    """Area fraction (float32, size x size) of each pixel for which ``inside(y, x)`` holds."""
    yy, xx = pixel_grid(size, factor)
    return downsample(inside(yy, xx).astype(np.float32), factor)
