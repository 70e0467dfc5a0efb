"""Text captions built from what a prepared dataset knows, for text-to-image models.

Ellipses are described by their ground-truth factors: "a {size} {elongation} ellipse,
{orientation}, {position}", e.g. "a small elongated ellipse, vertical, left". Every caption
names all four, round ellipses' orientation included: were it left out for round ones only,
the presence of an orientation word would tell round from not round, and a model trained on
the captions would learn that shortcut instead of the elongation word.

Datasets with binary attributes get "a picture with {a} and {b}"; any other
dataset gets "a picture" for every image.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from diffxai.data.prepared import PreparedData

ELLIPSE_FACTORS = ("area", "aspect_ratio", "angle", "center_x")
SIZES = ("small", "medium", "large")
# aspect ratio < ROUND_BELOW: "round"; < OVAL_BELOW: "oval"; otherwise "elongated"
ROUND_BELOW = 1.4
OVAL_BELOW = 2.0
ELONGATIONS = ("round", "oval", "elongated")
# bins of width π/4 centred on 0, π/4, π/2, 3π/4 (angle of the major axis, modulo π)
ORIENTATIONS = ("horizontal", "diagonal", "vertical", "antidiagonal")
POSITIONS = ("left", "center", "right")
EMPTY_CAPTION = "a picture"


def size_words(area: np.ndarray) -> np.ndarray:
    """(N,) size word per area: tertiles of ``area`` over the given set (``np.quantile`` at 1/3, 2/3).

    The edges are relative to the set, so the same ellipse may be "small" in one set and
    "medium" in another; pass the whole dataset to get stable words.
    """
    edges = np.quantile(area, [1 / 3, 2 / 3])
    return np.asarray(SIZES)[np.digitize(area, edges)]


def elongation_words(aspect_ratio: np.ndarray) -> np.ndarray:
    """(N,) elongation word per aspect ratio (≥ 1), see :data:`ROUND_BELOW`, :data:`OVAL_BELOW`."""
    return np.asarray(ELONGATIONS)[np.digitize(aspect_ratio, [ROUND_BELOW, OVAL_BELOW])]


def orientation_words(angle: np.ndarray) -> np.ndarray:
    """(N,) orientation word per major-axis angle (radians, taken modulo π)."""
    bins = np.floor((np.mod(angle, np.pi) + np.pi / 8) / (np.pi / 4)).astype(np.int64) % 4
    return np.asarray(ORIENTATIONS)[bins]


def position_words(center_x: np.ndarray, image_size: int) -> np.ndarray:
    """(N,) horizontal position word per centre x (pixels): thirds of the image width."""
    return np.asarray(POSITIONS)[np.digitize(center_x, [image_size / 3, 2 * image_size / 3])]


def ellipse_captions(factors: dict[str, np.ndarray], image_size: int) -> list[str]:
    """One caption per ellipse from (N,) factor arrays (keys :data:`ELLIPSE_FACTORS`; others ignored)."""
    sizes = size_words(np.asarray(factors["area"], dtype=np.float64))
    elongations = elongation_words(np.asarray(factors["aspect_ratio"], dtype=np.float64))
    orientations = orientation_words(np.asarray(factors["angle"], dtype=np.float64))
    positions = position_words(np.asarray(factors["center_x"], dtype=np.float64), image_size)
    captions = []
    for size, elongation, orientation, position in zip(
        sizes, elongations, orientations, positions, strict=True
    ):
        captions.append(f"a {size} {elongation} ellipse, {orientation}, {position}")
    return captions


def attribute_captions(attributes: np.ndarray, names: list[str]) -> list[str]:
    """One caption per row of (N, A) binary ``attributes``: "a picture with x and y" or "a picture"."""
    captions = []
    for row in np.asarray(attributes):
        present = [name for name, value in zip(names, row, strict=True) if value]
        captions.append(f"{EMPTY_CAPTION} with {' and '.join(present)}" if present else EMPTY_CAPTION)
    return captions


def dataset_captions(data: PreparedData) -> list[str]:
    """Captions for every image of ``data``: ellipse factors, else attributes, else "a picture"."""
    if all(name in data.factor_names for name in ELLIPSE_FACTORS):
        factors = {name: data.factor(name) for name in ELLIPSE_FACTORS}
        return ellipse_captions(factors, data.image_size[1])
    if data.attribute_names:
        return attribute_captions(data.array("attributes"), data.attribute_names)
    return [EMPTY_CAPTION] * len(data.array("labels"))


def caption_words(captions: list[str]) -> list[str]:
    """Sorted unique lowercase words of ``captions`` (split on spaces and commas)."""
    words = {word for caption in captions for word in re.split(r"[\s,]+", caption.lower())}
    return sorted(words - {""})
