"""Synthetic ellipses with ground truth (seed 002 §4.1, App. B).

White ellipses on black with varying centre, orientation, area and aspect ratio.
The label is whether one factor (by default the log aspect ratio) exceeds a
threshold; with ``threshold: auto`` it is the middle of that factor's sampling
range, which balances the classes because every factor is drawn uniformly on its
range (aspect ratio log-uniformly). Images are drawn at ``supersample`` times the
resolution and box-filtered (anti-aliasing); the stored mask is the set of pixels
at least half covered.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diffxai.data.prepared import PreparedArrays
from diffxai.data.render import coverage

FACTOR_NAMES = [
    "center_x",
    "center_y",
    "angle",
    "area",
    "aspect_ratio",
    "log_aspect_ratio",
    "semi_major",
    "semi_minor",
]
# factors a label can threshold; the schema enum of `ellipses.label.factor` (tests keep them equal)
MARGIN = 1.0  # px between an ellipse's bounding box and the image border
LABEL_FACTORS = ["log_aspect_ratio", "aspect_ratio", "area", "angle", "center_x", "center_y"]


def sample_factors(params: dict[str, Any], size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Factor table (float32, n x len(FACTOR_NAMES)); lengths in pixels, angle in radians.

    ``area`` is in pixels: ``area_fraction`` x size². The centre is drawn so that the
    whole ellipse (its bounding box plus a one-pixel margin) lies inside the image.
    """
    area = rng.uniform(*params["area_fraction"], size=n) * size**2
    log_ar = rng.uniform(*np.log(params["aspect_ratio"]), size=n)
    aspect = np.exp(log_ar)
    angle = rng.uniform(0.0, np.pi, size=n)
    major = np.sqrt(area * aspect / np.pi)
    minor = np.sqrt(area / (aspect * np.pi))
    half_x = np.sqrt((major * np.cos(angle)) ** 2 + (minor * np.sin(angle)) ** 2)
    half_y = np.sqrt((major * np.sin(angle)) ** 2 + (minor * np.cos(angle)) ** 2)
    margin = MARGIN
    if np.any(2 * (np.maximum(half_x, half_y) + margin) > size):
        raise ValueError(
            f"ellipses up to area_fraction={params['area_fraction'][1]} and aspect_ratio="
            f"{params['aspect_ratio'][1]} do not fit in {size}x{size} images"
        )
    center_x = rng.uniform(half_x + margin, size - half_x - margin)
    center_y = rng.uniform(half_y + margin, size - half_y - margin)
    columns = [center_x, center_y, angle, area, aspect, log_ar, major, minor]
    return np.stack(columns, axis=1).astype(np.float32)


def render(factors: np.ndarray, size: int, supersample: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (float32 in [0, 1]) and binary masks (uint8), each (n, size, size)."""
    images = np.empty((len(factors), size, size), dtype=np.float32)
    for i, (cx, cy, angle, _, _, _, major, minor) in enumerate(factors.astype(np.float64)):
        cos, sin = np.cos(angle), np.sin(angle)

        def inside(yy, xx, cx=cx, cy=cy, cos=cos, sin=sin, major=major, minor=minor):
            u = (xx - cx) * cos + (yy - cy) * sin
            v = -(xx - cx) * sin + (yy - cy) * cos
            return (u / major) ** 2 + (v / minor) ** 2 <= 1.0

        images[i] = coverage(inside, size, supersample)
    return images, (images >= 0.5).astype(np.uint8)


def label_range(params: dict[str, Any], size: int) -> tuple[float, float]:
    """The interval (low, high) the label factor is drawn from. A centre stays a half-extent and
    a margin from the border; the smallest half-extent is the smallest semi-minor axis."""
    smallest_minor = np.sqrt(params["area_fraction"][0] * size**2 / (np.pi * params["aspect_ratio"][1]))
    inset = smallest_minor + MARGIN
    ranges = {
        "log_aspect_ratio": np.log(params["aspect_ratio"]),
        "aspect_ratio": params["aspect_ratio"],
        "area": np.asarray(params["area_fraction"]) * size**2,
        "angle": (0.0, np.pi),
        "center_x": (inset, size - inset),
        "center_y": (inset, size - inset),
    }
    low, high = ranges[params["label"]["factor"]]
    return float(low), float(high)


def label_threshold(params: dict[str, Any], size: int) -> float:
    """The label threshold; ``auto`` is the middle of the label factor's sampling range (for the
    log-uniform aspect ratio, its geometric middle)."""
    label = params["label"]
    if label["threshold"] != "auto":
        return float(label["threshold"])
    low, high = label_range(params, size)
    if label["factor"] == "aspect_ratio":
        return float(np.exp(np.log([low, high]).mean()))
    return (low + high) / 2


def generate(params: dict[str, Any], size: int, n: int, rng: np.random.Generator) -> PreparedArrays:
    """The ellipses dataset: 1-channel uint8 images, factors, masks and labels."""
    factors = sample_factors(params, size, n, rng)
    images, masks = render(factors, size, params["supersample"])
    threshold = label_threshold(params, size)
    label_factor = params["label"]["factor"]
    labels = (factors[:, FACTOR_NAMES.index(label_factor)] > threshold).astype(np.int64)
    return PreparedArrays(
        images=np.round(images * 255).astype(np.uint8)[:, None],
        labels=labels,
        class_names=[f"{label_factor}<={threshold:.4g}", f"{label_factor}>{threshold:.4g}"],
        factors=factors,
        factor_names=list(FACTOR_NAMES),
        masks=masks[:, None],
        mask_names=["ellipse"],
        meta={"label_factor": label_factor, "label_threshold": threshold},
    )
