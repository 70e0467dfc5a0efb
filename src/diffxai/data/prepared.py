"""The prepared-data format shared by every dataset kind, and its reader.

A ``data.zarr`` store (kind ``prepared_data``) holds per sample:

- ``images``: uint8 (N, C, H, W), 0..255
- ``labels``: int64 (N,), the task label (class index)
- ``split``: int8 (N,), see :data:`SPLITS`
- ``factors``: float32 (N, F), continuous ground-truth factors (optional)
- ``attributes``: uint8 (N, A), binary attributes (optional)
- ``masks``: uint8 (N, M, H, W), ground-truth region masks (optional)

and in its attributes the names of classes, factors, attributes and masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffxai.store import ArraySpec, StoreWriter, open_store

SPLITS = {"train": 0, "val": 1, "test": 2}
STORE_KIND = "prepared_data"


@dataclass
class PreparedArrays:
    """In-memory prepared dataset, as every dataset kind produces it."""

    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)
    class_names: list[str]
    split: np.ndarray | None = None  # int8 (N,); None -> random split at write time
    factors: np.ndarray | None = None  # float32 (N, F)
    factor_names: list[str] = field(default_factory=list)
    attributes: np.ndarray | None = None  # uint8 (N, A)
    attribute_names: list[str] = field(default_factory=list)
    masks: np.ndarray | None = None  # uint8 (N, M, H, W)
    mask_names: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} {self.images.shape}"
            )
        checks = {
            "labels": (self.labels, None),
            "split": (self.split, None),
            "factors": (self.factors, self.factor_names),
            "attributes": (self.attributes, self.attribute_names),
            "masks": (self.masks, self.mask_names),
        }
        for name, (array, names) in checks.items():
            if array is None:
                continue
            if len(array) != n:
                raise ValueError(f"{name} has {len(array)} rows, images have {n}")
            if names is not None and array.shape[1] != len(names):
                raise ValueError(f"{name} has {array.shape[1]} columns but {len(names)} names")


def to_uint8(array: np.ndarray) -> np.ndarray:
    """uint8 0..255 from uint8 / integers in 0..255, or from floats in [0, 1] as round(x * 255)."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if np.isnan(array).any():
            raise ValueError("float images hold NaN pixels")
        if array.size and (array.min() < 0 or array.max() > 1):
            raise ValueError(f"float images must lie in [0, 1], got {array.min()}..{array.max()}")
        return np.round(array * 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer) and (not array.size or 0 <= array.min() <= array.max() <= 255):
        return array.astype(np.uint8)
    raise ValueError(f"images must be uint8 0..255 or float 0..1, got {array.dtype}")


def random_split(n: int, fractions: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Split codes (int8, N) with ``round(n * fraction)`` val and test samples, rest train."""
    order = rng.permutation(n)
    n_val = round(n * fractions["val"])
    n_test = round(n * fractions["test"])
    if min(n_val, n_test) < 1:
        raise ValueError(
            f"split {fractions} of {n} images leaves no val or no test image: raise the fractions"
        )
    if n_val + n_test >= n:
        raise ValueError(f"split {fractions} of {n} images leaves no training image: lower the fractions")
    split = np.full(n, SPLITS["train"], dtype=np.int8)
    split[order[:n_val]] = SPLITS["val"]
    split[order[n_val : n_val + n_test]] = SPLITS["test"]
    return split


def write_prepared(path: str | Path, data: PreparedArrays, attrs: dict[str, Any], batch: int = 1024) -> Path:
    """Write ``data`` as a complete ``data.zarr`` store (atomically)."""
    if data.split is None:
        raise ValueError("split must be assigned before writing")
    n, channels, height, width = data.images.shape
    columns = {
        "images": data.images,
        "labels": data.labels.astype(np.int64),
        "split": data.split.astype(np.int8),
        "factors": None if data.factors is None else data.factors.astype(np.float32),
        "attributes": None if data.attributes is None else data.attributes.astype(np.uint8),
        "masks": None if data.masks is None else data.masks.astype(np.uint8),
    }
    columns = {k: v for k, v in columns.items() if v is not None}
    specs = {k: ArraySpec(tuple(v.shape[1:]), str(v.dtype)) for k, v in columns.items()}
    info = {
        "class_names": list(data.class_names),
        "num_classes": len(data.class_names),
        "factor_names": list(data.factor_names),
        "attribute_names": list(data.attribute_names),
        "mask_names": list(data.mask_names),
        "channels": channels,
        "image_size": [height, width],
        "splits": SPLITS,
        "meta": data.meta,
    }
    with StoreWriter(path, STORE_KIND, specs, attrs={**attrs, "dataset": info}, rows_hint=n) as writer:
        for start in range(0, n, batch):
            writer.append(**{k: v[start : start + batch] for k, v in columns.items()})
        return writer.finalize()


class PreparedData:
    """Reader for a ``data.zarr`` store; arrays are loaded lazily and cached."""

    def __init__(self, path: str | Path) -> None:
        self.store = open_store(path, kind=STORE_KIND)
        self.info: dict[str, Any] = self.store.attrs["dataset"]
        self._cache: dict[str, np.ndarray] = {}

    @property
    def class_names(self) -> list[str]:
        return list(self.info["class_names"])

    @property
    def num_classes(self) -> int:
        return int(self.info["num_classes"])

    @property
    def channels(self) -> int:
        return int(self.info["channels"])

    @property
    def image_size(self) -> tuple[int, int]:
        height, width = self.info["image_size"]
        return int(height), int(width)

    @property
    def factor_names(self) -> list[str]:
        return list(self.info["factor_names"])

    @property
    def attribute_names(self) -> list[str]:
        return list(self.info["attribute_names"])

    @property
    def mask_names(self) -> list[str]:
        return list(self.info["mask_names"])

    def array(self, name: str) -> np.ndarray:
        """The whole array ``name``, read once and cached."""
        if name not in self._cache:
            self._cache[name] = self.store.read(name)
        return self._cache[name]

    def rows(self, name: str, index: np.ndarray | list[int]) -> np.ndarray:
        """Rows ``index`` (M,) of the per-sample array ``name``, in that order, read from the
        store alone: a job that explains 100 images of a large dataset does not load all of it."""
        index = np.asarray(index, dtype=np.int64)
        if name in self._cache:
            return self._cache[name][index]
        array = self.store[name]
        if index.size == 0:
            return np.zeros((0, *array.shape[1:]), array.dtype)
        return np.asarray(array.oindex[index])

    def indices(self, split: str) -> np.ndarray:
        """Sample indices (int64) of ``split`` in store order."""
        return np.flatnonzero(self.array("split") == SPLITS[split])

    def subset(self, split: str, limit: int | None, seed: int) -> np.ndarray:
        """``limit`` indices of ``split`` drawn at random by ``seed`` (in store order; all when
        None or when the split is smaller): a prefix would take a real dataset's first rows,
        which may all be one class."""
        indices = self.indices(split)
        if limit is None or limit >= len(indices):
            return indices
        return np.sort(np.random.default_rng(seed).choice(indices, size=limit, replace=False))

    def factor(self, name: str) -> np.ndarray:
        """One factor column (float32, N)."""
        if name not in self.factor_names:
            raise KeyError(f"dataset has no factor {name!r}; factors: {self.factor_names}")
        return self.array("factors")[:, self.factor_names.index(name)]
