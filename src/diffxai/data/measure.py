"""Measure ellipse factors from images or masks by second moments.

For a filled ellipse with semi-axes a >= b, the covariance of the pixel
coordinates has eigenvalues a²/4 and b²/4, so sqrt(λ1/λ2) is the aspect ratio and
the pixel count is the area. Generated images carry faint background noise, so
images are binarised at 0.5 first; without that, noise dominates the moments.
"""

from __future__ import annotations

import numpy as np


def binarise(images_01: np.ndarray, level: float = 0.5) -> np.ndarray:
    """(N, H, W) or (N, 1, H, W) intensities in [0, 1] -> float (N, H, W) in {0, 1}."""
    images = images_01.reshape(len(images_01), *images_01.shape[-2:])
    return (images >= level).astype(np.float64)


def mask_moments(masks: np.ndarray) -> dict[str, np.ndarray]:
    """Area (pixels), aspect ratio and angle (radians in [0, π)) of binary masks (N, H, W).

    Empty masks give NaN.
    """
    masks = masks.astype(np.float64)
    height, width = masks.shape[-2:]
    yy, xx = np.mgrid[:height, :width] + 0.5
    area = masks.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (masks * xx).sum(axis=(1, 2)) / area
        cy = (masks * yy).sum(axis=(1, 2)) / area
        dx = xx[None] - cx[:, None, None]
        dy = yy[None] - cy[:, None, None]
        sxx = (masks * dx**2).sum(axis=(1, 2)) / area
        syy = (masks * dy**2).sum(axis=(1, 2)) / area
        sxy = (masks * dx * dy).sum(axis=(1, 2)) / area
        half_trace = (sxx + syy) / 2
        root = np.sqrt(np.maximum(half_trace**2 - (sxx * syy - sxy**2), 0.0))
        aspect = np.sqrt((half_trace + root) / (half_trace - root))
    angle = np.mod(0.5 * np.arctan2(2 * sxy, sxx - syy), np.pi)
    return {
        "area": area.astype(np.float64),
        "aspect_ratio": aspect,
        "log_aspect_ratio": np.log(aspect),
        "angle": angle,
        "center_x": cx,
        "center_y": cy,
    }
