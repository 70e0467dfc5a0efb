"""Build any configured dataset into the prepared format (rule ``prepare_data``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from diffxai.data import adapters, attributes, ellipses
from diffxai.data.prepared import PreparedArrays, random_split


def _ellipses(cfg: dict[str, Any], rng: np.random.Generator, base_dir: Path) -> PreparedArrays:
    return ellipses.generate(cfg["ellipses"], cfg["image_size"], cfg["n_images"], rng)


def _attributes(cfg: dict[str, Any], rng: np.random.Generator, base_dir: Path) -> PreparedArrays:
    return attributes.generate(cfg["attributes"], cfg["image_size"], cfg["n_images"], rng)


def _image_folder(cfg: dict[str, Any], rng: np.random.Generator, base_dir: Path) -> PreparedArrays:
    return adapters.load_image_folder(cfg["image_folder"], cfg["image_size"], cfg["channels"], base_dir)


def _celeba(cfg: dict[str, Any], rng: np.random.Generator, base_dir: Path) -> PreparedArrays:
    return adapters.load_celeba(cfg["celeba"], cfg["image_size"], cfg["channels"], base_dir)


def _hdf5(cfg: dict[str, Any], rng: np.random.Generator, base_dir: Path) -> PreparedArrays:
    return adapters.load_hdf5(cfg["hdf5"], cfg["image_size"], base_dir)


DATASET_KINDS: dict[str, Callable[[dict[str, Any], np.random.Generator, Path], PreparedArrays]] = {
    "ellipses": _ellipses,
    "attributes": _attributes,
    "image_folder": _image_folder,
    "celeba": _celeba,
    "hdf5": _hdf5,
}


def build_dataset(cfg: dict[str, Any], base_dir: Path = Path(".")) -> PreparedArrays:
    """The dataset of a validated ``datasets.<name>`` config, with its split assigned.

    Deterministic given ``cfg['seed']``: generation and the split use separate
    streams of one seed sequence.
    """
    data_seed, split_seed = np.random.SeedSequence(cfg["seed"]).spawn(2)
    data = DATASET_KINDS[cfg["kind"]](cfg, np.random.default_rng(data_seed), base_dir)
    if data.split is None:
        data.split = random_split(len(data.images), cfg["split"], np.random.default_rng(split_seed))
    return data
