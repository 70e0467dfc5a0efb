"""Build any configured dataset into the prepared format (rule ``prepare_data``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from diffxai.data.kinds import dataset_module
from diffxai.data.prepared import SPLITS, PreparedArrays, random_split

Builder = Callable[[ModuleType, dict[str, Any], np.random.Generator, Path], PreparedArrays]


def _generated(
    module: ModuleType, cfg: dict[str, Any], rng: np.random.Generator, base_dir: Path
) -> PreparedArrays:
    """A synthetic dataset: ``module.generate`` with the kind's own settings."""
    return module.generate(cfg[cfg["kind"]], cfg["image_size"], cfg["n_images"], rng)


def _image_folder(
    module: ModuleType, cfg: dict[str, Any], rng: np.random.Generator, base_dir: Path
) -> PreparedArrays:
    return module.load_image_folder(cfg["image_folder"], cfg["image_size"], cfg["channels"], base_dir)


def _celeba(
    module: ModuleType, cfg: dict[str, Any], rng: np.random.Generator, base_dir: Path
) -> PreparedArrays:
    return module.load_celeba(cfg["celeba"], cfg["image_size"], cfg["channels"], base_dir)


def _hdf5(
    module: ModuleType, cfg: dict[str, Any], rng: np.random.Generator, base_dir: Path
) -> PreparedArrays:
    return module.load_hdf5(cfg["hdf5"], cfg["image_size"], base_dir)


BUILDERS: dict[str, Builder] = {
    "ellipses": _generated,
    "attributes": _generated,
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
    module = importlib.import_module(dataset_module(cfg["kind"]))
    data = BUILDERS[cfg["kind"]](module, cfg, np.random.default_rng(data_seed), base_dir)
    if data.split is None:
        data.split = random_split(len(data.images), cfg["split"], np.random.default_rng(split_seed))
    else:
        check_source_split(data.split, cfg["kind"])
    return data


def check_source_split(split: np.ndarray, kind: str) -> None:
    """A split the data brought (partition file, split column or dataset) must give every split an
    image: early stopping needs validation images and the metrics test ones. CelebA's partition is
    contiguous, so its first ``max_images`` rows are all train."""
    counts = {name: int(np.sum(split == code)) for name, code in SPLITS.items()}
    empty = [name for name, count in counts.items() if count == 0]
    if empty:
        raise ValueError(
            f"the {kind} data's own split has no {' and no '.join(empty)} image ({counts}); "
            "give more images (max_images) or a split with every part"
        )
