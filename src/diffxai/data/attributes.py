"""A CelebA-like RGB dataset of binary attributes with configured correlations.

Each image shows a central object (circle or square, red or blue, small or large,
optionally ringed) on a dark background with optional marks elsewhere: a corner
square, stripes in the bottom band, a brightened top band, a dot. Every attribute
changes its own, localised part of the image. One attribute is the task label;
every other attribute a has P(a = 1 | y) = (1 + ρ_a (2y − 1)) / 2 with y ~ Bernoulli(½),
so its correlation (phi coefficient) with the label is exactly ρ_a in expectation.

The region mask of an attribute is the set of pixels that change when that
attribute alone is toggled in the same image, so it is exact by construction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diffxai.data.prepared import PreparedArrays
from diffxai.data.render import downsample, pixel_grid

ATTRIBUTE_NAMES = ["square", "blue", "large", "ring", "corner_mark", "stripes", "bright_top", "dot"]
FACTOR_NAMES = ["center_x", "center_y", "background"]
RED = np.array([0.85, 0.15, 0.1], dtype=np.float32)
BLUE = np.array([0.15, 0.3, 0.9], dtype=np.float32)
WHITE = np.array([0.95, 0.95, 0.95], dtype=np.float32)
YELLOW = np.array([0.95, 0.85, 0.1], dtype=np.float32)
GREEN = np.array([0.2, 0.8, 0.3], dtype=np.float32)


def sample_attributes(params: dict[str, Any], n: int, rng: np.random.Generator) -> np.ndarray:
    """Binary attributes (uint8, n x len(ATTRIBUTE_NAMES)) with the configured correlations."""
    task = ATTRIBUTE_NAMES.index(params["task"])
    labels = rng.random(n) < 0.5
    table = np.empty((n, len(ATTRIBUTE_NAMES)), dtype=np.uint8)
    for j, name in enumerate(ATTRIBUTE_NAMES):
        if j == task:
            table[:, j] = labels
            continue
        rho = params["correlations"].get(name, 0.0)
        p_one = 0.5 + 0.5 * rho * (2 * labels - 1)
        table[:, j] = rng.random(n) < p_one
    return table


def _layers(attrs: np.ndarray, factors: np.ndarray, size: int, factor: int) -> np.ndarray:
    """One RGB image (float32, 3 x size x size, in [0, 1]) for one attribute row."""
    square, blue, large, ring, corner, stripes, bright_top, dot = (bool(a) for a in attrs)
    cx, cy, background = (float(f) for f in factors)
    yy, xx = pixel_grid(size, factor)
    u, v = xx / size, yy / size  # relative coordinates in [0, 1]
    image = np.full((3, *yy.shape), background, dtype=np.float32)

    def paint(inside: np.ndarray, colour: np.ndarray) -> None:
        image[:, inside] = colour[:, None]

    if bright_top:
        paint(v < 0.16, np.full(3, min(1.0, background + 0.35), dtype=np.float32))
    if stripes:
        paint((v > 0.84) & (np.floor(u * 8) % 2 == 0), GREEN)
    radius = 0.22 if large else 0.15
    dx, dy = u - cx, v - cy
    if ring:
        distance = np.sqrt(dx**2 + dy**2)
        paint((distance > 0.25) & (distance < 0.29), WHITE)
    shape = (np.maximum(np.abs(dx), np.abs(dy)) < radius * 0.89) if square else (dx**2 + dy**2 < radius**2)
    paint(shape, BLUE if blue else RED)
    if corner:
        paint((u < 0.14) & (v < 0.14), WHITE)
    if dot:
        paint((u - 0.88) ** 2 + (v - 0.12) ** 2 < 0.06**2, YELLOW)
    return downsample(image, factor)


def render(attributes: np.ndarray, factors: np.ndarray, size: int, supersample: int) -> np.ndarray:
    """Images (float32, n x 3 x size x size, in [0, 1])."""
    return np.stack([_layers(a, f, size, supersample) for a, f in zip(attributes, factors, strict=True)])


def region_masks(attributes: np.ndarray, factors: np.ndarray, size: int, supersample: int) -> np.ndarray:
    """Per-attribute masks (uint8, n x A x size x size): pixels that change when toggled."""
    base = render(attributes, factors, size, supersample)
    masks = np.empty((len(attributes), len(ATTRIBUTE_NAMES), size, size), dtype=np.uint8)
    for j in range(len(ATTRIBUTE_NAMES)):
        toggled = attributes.copy()
        toggled[:, j] = 1 - toggled[:, j]
        changed = np.abs(render(toggled, factors, size, supersample) - base).sum(axis=1)
        masks[:, j] = changed > 1e-6
    return masks


def generate(params: dict[str, Any], size: int, n: int, rng: np.random.Generator) -> PreparedArrays:
    """The attributes dataset: RGB uint8 images, attributes, factors, region masks, labels."""
    attributes = sample_attributes(params, n, rng)
    factors = np.stack(
        [rng.uniform(0.42, 0.58, n), rng.uniform(0.42, 0.58, n), rng.uniform(0.05, 0.25, n)], axis=1
    ).astype(np.float32)
    images = render(attributes, factors, size, params["supersample"])
    task = params["task"]
    return PreparedArrays(
        images=np.round(images * 255).astype(np.uint8),
        labels=attributes[:, ATTRIBUTE_NAMES.index(task)].astype(np.int64),
        class_names=[f"not_{task}", task],
        factors=factors,
        factor_names=list(FACTOR_NAMES),
        attributes=attributes,
        attribute_names=list(ATTRIBUTE_NAMES),
        masks=region_masks(attributes, factors, size, params["supersample"]),
        mask_names=list(ATTRIBUTE_NAMES),
        meta={"task": task, "correlations": dict(params["correlations"])},
    )
