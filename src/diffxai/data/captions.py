"""Text captions built from what a prepared dataset knows, for text-to-image models.

Ellipses are described by their ground-truth factors: "a {size} {elongation} ellipse,
{orientation}, {position}", e.g. "a small elongated ellipse, vertical, left". Every caption
names all four, round ellipses' orientation included: were it left out for round ones only,
the presence of an orientation word would tell round from not round, and a model trained on
the captions would learn that shortcut instead of the elongation word.

Datasets with binary attributes get "a picture with {a} and {b}"; any other
dataset gets "a picture" for every image.

:func:`caption_variants` makes the training captions of a from-scratch text-to-image model:
several per image, each in a random phrasing ("{}", "a picture of {}", "an image with {}"), so
that the words of TIME's prompts ("a <context> image with a <class>") are in the vocabulary;
with ``phrase_dropout`` each also leaves out a random subset of the factors (or attributes).
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


def ellipse_words(factors: dict[str, np.ndarray], image_size: int) -> np.ndarray:
    """(N, 4) words per ellipse (size, elongation, orientation, position) from (N,) factor arrays
    (keys :data:`ELLIPSE_FACTORS`; others ignored)."""
    return np.stack(
        [
            size_words(np.asarray(factors["area"], dtype=np.float64)),
            elongation_words(np.asarray(factors["aspect_ratio"], dtype=np.float64)),
            orientation_words(np.asarray(factors["angle"], dtype=np.float64)),
            position_words(np.asarray(factors["center_x"], dtype=np.float64), image_size),
        ],
        axis=1,
    )


def ellipse_description(words: np.ndarray, keep: np.ndarray) -> str:
    """ "a {size} {elongation} ellipse, {orientation}, {position}" with the (4,) words where ``keep``."""
    size, elongation, orientation, position = (
        str(word) if kept else "" for word, kept in zip(words, keep, strict=True)
    )
    noun = " ".join(word for word in ("a", size, elongation, "ellipse") if word)
    return ", ".join(phrase for phrase in (noun, orientation, position) if phrase)


def ellipse_captions(factors: dict[str, np.ndarray], image_size: int) -> list[str]:
    """One complete caption per ellipse from (N,) factor arrays (keys :data:`ELLIPSE_FACTORS`)."""
    words = ellipse_words(factors, image_size)
    return [ellipse_description(row, np.ones(4, dtype=bool)) for row in words]


def attribute_description(present: list[str]) -> str:
    """ "a picture with x and y" for the attribute names ``present``, "a picture" for none."""
    return f"{EMPTY_CAPTION} with {' and '.join(present)}" if present else EMPTY_CAPTION


def attribute_captions(attributes: np.ndarray, names: list[str]) -> list[str]:
    """One caption per row of (N, A) binary ``attributes``: "a picture with x and y" or "a picture"."""
    return [
        attribute_description([name for name, value in zip(names, row, strict=True) if value])
        for row in np.asarray(attributes)
    ]


def describes_ellipses(data: PreparedData) -> bool:
    """Whether ``data``'s captions are ellipse captions (it has every factor they name)."""
    return all(name in data.factor_names for name in ELLIPSE_FACTORS)


def dataset_captions(data: PreparedData) -> list[str]:
    """Captions for every image of ``data``: ellipse factors, else attributes, else "a picture"."""
    if describes_ellipses(data):
        factors = {name: data.factor(name) for name in ELLIPSE_FACTORS}
        return ellipse_captions(factors, data.image_size[1])
    if data.attribute_names:
        return attribute_captions(data.array("attributes"), data.attribute_names)
    return [EMPTY_CAPTION] * len(data.array("labels"))


def caption_variants(
    data: PreparedData,
    count: int,
    phrase_dropout: float,
    templates: tuple[str, ...] | list[str],
    rng: np.random.Generator,
) -> list[list[str]]:
    """``count`` training captions per image of ``data`` (N lists): each drops every factor
    phrase (ellipses) or present attribute with probability ``phrase_dropout`` and is put in a
    template drawn uniformly from ``templates`` (each holds one "{}")."""
    if describes_ellipses(data):
        words = ellipse_words({name: data.factor(name) for name in ELLIPSE_FACTORS}, data.image_size[1])
    elif data.attribute_names:
        words = np.asarray(data.array("attributes")).astype(bool)
    else:
        words = np.zeros((len(data.array("labels")), 0), dtype=bool)
    keep = rng.random((len(words), count, words.shape[1])) >= phrase_dropout
    template = rng.integers(0, len(templates), (len(words), count))
    names = np.asarray(data.attribute_names or [], dtype=object)

    def describe(row: np.ndarray, kept: np.ndarray) -> str:
        if words.dtype != bool:
            return ellipse_description(row, kept)
        return attribute_description(names[row & kept].tolist())

    return [
        [templates[template[i, k]].format(describe(row, keep[i, k])) for k in range(count)]
        for i, row in enumerate(words)
    ]


def caption_words(captions: list[str]) -> list[str]:
    """Sorted unique lowercase words of ``captions`` (split on spaces and commas)."""
    words = {word for caption in captions for word in re.split(r"[\s,]+", caption.lower())}
    return sorted(words - {""})
