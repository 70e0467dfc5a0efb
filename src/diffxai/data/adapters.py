"""Adapters from real datasets on disk to :class:`PreparedArrays`.

- :func:`load_image_folder`: image files listed in a CSV (label, optional split and binary attributes).
- :func:`load_celeba`: the CelebA layout (``img_align_celeba/``, ``list_attr_celeba.txt``,
  optionally ``list_eval_partition.txt``).
- :func:`load_hdf5`: arrays of images, labels, optional split and factors in one HDF5 file.

Every adapter returns uint8 images (N, C, image_size, image_size), 0..255. Paths in the
configs are relative to ``base_dir`` unless absolute.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from diffxai.data.kinds import celeba_file
from diffxai.data.prepared import SPLITS, PreparedArrays, to_uint8
from diffxai.paths import resolve
from diffxai.progress import progress

PIL_MODES = {1: "L", 3: "RGB"}
SPLIT_CODES = {**SPLITS, **{str(code): code for code in SPLITS.values()}}
TRUE_VALUES = {"1", "1.0", "true"}
FALSE_VALUES = {"0", "0.0", "-1", "-1.0", "false"}


# --------------------------------------------------------------------------- shared helpers


def fit_square(image: Image.Image, size: int, crop: str) -> Image.Image:
    """``image`` centre-cropped to a square (``crop="center"``) or not (``"none"``), resized to size²."""
    if crop == "center":
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    elif crop != "none":
        raise ValueError(f"crop must be 'center' or 'none', got {crop!r}")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return image


def to_chw(image: Image.Image) -> np.ndarray:
    """A PIL image (mode L or RGB) as uint8 (C, H, W)."""
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def eight_bit(image: Image.Image, path: Path) -> Image.Image:
    """``image`` with 8 bits per channel. 16-bit greyscale (PIL modes ``I;16*``, and ``I``
    within 0..65535) is scaled linearly, 65535 -> 255 (PIL's own conversion clips it at 255:
    a 16-bit scan would turn white); float greyscale (``F``) must lie in [0, 1]."""
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image
    values = np.asarray(image, dtype=np.float64)
    high = 1.0 if image.mode == "F" else 65535.0
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > high:
        raise ValueError(
            f"image {path} (mode {image.mode}) has values in [{values.min():g}, {values.max():g}]; "
            f"allowed: [0, {high:g}]"
        )
    return Image.fromarray(np.round(values * (255.0 / high)).astype(np.uint8))


def load_image(path: Path, image_size: int, channels: int, crop: str) -> np.ndarray:
    """One image file as uint8 (channels, image_size, image_size), upright as its EXIF
    orientation says (photos from cameras and phones are stored rotated)."""
    with Image.open(path) as image:
        upright = eight_bit(ImageOps.exif_transpose(image), path)
        return to_chw(fit_square(upright.convert(PIL_MODES[channels]), image_size, crop))


def load_images(
    paths: Sequence[Path], origins: Sequence[str], image_size: int, channels: int, crop: str, desc: str
) -> np.ndarray:
    """Image files as uint8 (N, channels, image_size, image_size); ``origins[i]`` names path i's source."""
    require_unique_files(paths, origins)
    images = np.empty((len(paths), channels, image_size, image_size), dtype=np.uint8)
    with progress(paths, desc=desc, unit="img") as bar:
        for i, path in enumerate(bar):
            try:
                images[i] = load_image(path, image_size, channels, crop)
            except FileNotFoundError as err:
                raise FileNotFoundError(f"image file {path} not found (listed in {origins[i]})") from err
            except (OSError, ValueError) as err:  # PIL: unknown format, truncated file, bad values
                raise ValueError(f"cannot read image {path} (listed in {origins[i]}): {err}") from err
    return images


def require_unique_files(paths: Sequence[Path], origins: Sequence[str]) -> None:
    """Raise ValueError if two entries name one file: the random split could put it in train
    and test at once (CelebA's partition file, keyed by filename, would give both one split)."""
    first: dict[str, int] = {}
    for i, path in enumerate(paths):
        j = first.setdefault(os.path.normpath(path), i)
        if j != i:
            raise ValueError(f"image file {path} is listed twice: in {origins[j]} and in {origins[i]}")


def require_columns(table: pd.DataFrame, columns: Sequence[str], source: Path) -> None:
    """Raise KeyError naming the first of ``columns`` missing from ``table``."""
    for column in columns:
        if column not in table.columns:
            raise KeyError(f"column {column!r} not in {source}; columns: {list(table.columns)}")


def sorted_classes(values: Sequence[str]) -> list[str]:
    """Unique ``values``, sorted numerically when all are numbers, else as strings. Numbers that
    are not finite, and two spellings of one number ("1" and "1.0"), are refused."""
    unique = sorted(set(values))
    try:
        numbers = {value: float(value) for value in unique}
    except ValueError:
        return unique
    bad = [value for value, number in numbers.items() if not np.isfinite(number)]
    if bad:
        raise ValueError(f"class labels must be finite numbers or names, got {bad}")
    if len(set(numbers.values())) < len(numbers):
        raise ValueError(f"class labels {unique} spell one number in two ways")
    return sorted(unique, key=lambda value: (numbers[value], value))


def parse_split(values: Sequence[str], source: str) -> np.ndarray:
    """Split codes (int8, N) from ``train``/``val``/``test`` or ``0``/``1``/``2``."""
    codes = np.empty(len(values), dtype=np.int8)
    for i, value in enumerate(values):
        key = str(value).strip().lower()
        if key not in SPLIT_CODES:
            raise ValueError(
                f"split value {value!r} in row {i + 1} of {source}; expected one of {list(SPLIT_CODES)}"
            )
        codes[i] = SPLIT_CODES[key]
    return codes


def parse_binary(values: Sequence[str], name: str, source: str) -> np.ndarray:
    """0/1 (uint8, N) from 0/1, -1/1 or true/false values."""
    bits = np.empty(len(values), dtype=np.uint8)
    for i, value in enumerate(values):
        key = str(value).strip().lower()
        if key not in TRUE_VALUES and key not in FALSE_VALUES:
            raise ValueError(
                f"attribute {name!r} has non-binary value {value!r} in row {i + 1} of {source}; "
                "expected 0/1, -1/1 or true/false"
            )
        bits[i] = key in TRUE_VALUES
    return bits


# --------------------------------------------------------------------------- image folder + CSV


def load_image_folder(
    params: dict[str, Any], image_size: int, channels: int, base_dir: Path
) -> PreparedArrays:
    """Images listed in a CSV (one row per image) as uint8 (N, channels, image_size, image_size).

    Labels are indices into the sorted unique label values; the split comes from
    ``split_column`` when given (else None: the caller draws one); ``attribute_columns``
    become binary ``attributes``.
    """
    root = resolve(params["root"], base_dir)
    csv_path = resolve(params["csv"], base_dir)
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    split_column = params.get("split_column")
    attribute_columns = list(params.get("attribute_columns") or [])
    needed = [params["filename_column"], params["label_column"], *attribute_columns]
    require_columns(table, needed + ([split_column] if split_column else []), csv_path)

    filenames = table[params["filename_column"]].str.strip().tolist()
    labels = table[params["label_column"]].str.strip().tolist()
    for i, (filename, label) in enumerate(zip(filenames, labels, strict=True)):
        if not filename or not label:
            raise ValueError(f"row {i + 1} of {csv_path} has an empty filename or label")
    class_names = sorted_classes(labels)
    index = {name: i for i, name in enumerate(class_names)}

    split = parse_split(table[split_column].tolist(), str(csv_path)) if split_column else None
    attributes = [parse_binary(table[name].tolist(), name, str(csv_path)) for name in attribute_columns]

    origins = [f"row {i + 1} of {csv_path}" for i in range(len(table))]
    paths = [resolve(name, root) for name in filenames]
    images = load_images(paths, origins, image_size, channels, params["crop"], "image_folder")
    return PreparedArrays(
        images=images,
        labels=np.array([index[label] for label in labels], dtype=np.int64),
        class_names=class_names,
        split=split,
        attributes=np.stack(attributes, axis=1) if attributes else None,
        attribute_names=attribute_columns,
        meta={"source": "image_folder", "root": str(root), "csv": str(csv_path)},
    )


# --------------------------------------------------------------------------- CelebA


def read_celeba_attributes(path: Path, max_images: int | None) -> tuple[list[str], list[str], np.ndarray]:
    """Filenames, attribute names and 0/1 attributes (uint8, N x A) of ``list_attr_celeba.txt``.

    Format: the number of images, the attribute names, then ``filename v1 v2 ...`` with
    values -1/1 separated by any whitespace. Only the first ``max_images`` rows when given.
    """
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise ValueError(f"{path} is not a CelebA attribute file (count line, names line, rows)")
    declared, names, rows = int(lines[0]), lines[1].split(), lines[2:]
    if len(rows) != declared:
        raise ValueError(f"{path} declares {declared} images but lists {len(rows)}")
    rows = rows[:max_images] if max_images is not None else rows
    filenames: list[str] = []
    values = np.empty((len(rows), len(names)), dtype=np.uint8)
    for i, row in enumerate(rows):
        fields = row.split()
        if len(fields) != len(names) + 1:
            raise ValueError(f"line {i + 3} of {path} has {len(fields) - 1} values, expected {len(names)}")
        filenames.append(fields[0])
        values[i] = np.array(fields[1:], dtype=np.int64) > 0
    return filenames, names, values


def read_celeba_partition(path: Path, filenames: Sequence[str]) -> np.ndarray:
    """Split codes (int8, N) of ``filenames`` from ``list_eval_partition.txt`` (``name code`` lines)."""
    partition: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if fields and len(fields) != 2:
            raise ValueError(f"line {number} of {path} should be 'filename code', got {line!r}")
        if fields:
            partition[fields[0]] = fields[1]
    missing = [name for name in filenames if name not in partition]
    if missing:
        raise ValueError(f"{len(missing)} images are not in {path}, e.g. {missing[0]!r}")
    return parse_split([partition[name] for name in filenames], str(path))


def load_celeba(params: dict[str, Any], image_size: int, channels: int, base_dir: Path) -> PreparedArrays:
    """CelebA as uint8 (N, channels, image_size, image_size); label = (``task`` attribute == 1).

    All 40 attributes are kept as 0/1 ``attributes``; the split comes from the
    partition file when given (else None).
    """
    root = resolve(params["root"], base_dir)
    attr_path = celeba_file(params, "attr_file", base_dir)
    filenames, names, attributes = read_celeba_attributes(attr_path, params.get("max_images"))
    task = params["task"]
    if task not in names:
        raise ValueError(f"unknown CelebA task {task!r}; attributes in {attr_path}: {names}")
    split = None
    if params.get("partition_file"):
        split = read_celeba_partition(celeba_file(params, "partition_file", base_dir), filenames)

    origins = [f"line {i + 3} of {attr_path}" for i in range(len(filenames))]
    images = load_images(
        [root / name for name in filenames], origins, image_size, channels, params["crop"], "celeba"
    )
    return PreparedArrays(
        images=images,
        labels=attributes[:, names.index(task)].astype(np.int64),
        class_names=[f"not_{task}", task],
        split=split,
        attributes=attributes,
        attribute_names=names,
        meta={"source": "celeba", "root": str(root), "attr_file": str(attr_path), "task": task},
    )


# --------------------------------------------------------------------------- HDF5


def hdf5_dataset(file: h5py.File, name: str) -> h5py.Dataset:
    """Dataset ``name`` of ``file``; KeyError listing the file's datasets if absent."""
    item = file.get(name)
    if not isinstance(item, h5py.Dataset):
        datasets: list[str] = []
        file.visititems(lambda key, obj: datasets.append(key) if isinstance(obj, h5py.Dataset) else None)
        raise KeyError(f"no dataset {name!r} in {file.filename}; datasets: {datasets}")
    return item


def image_layout(shape: tuple[int, ...]) -> str:
    """``NHW``, ``NHWC`` or ``NCHW`` for an image array ``shape`` (channels 1 or 3)."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4 and shape[3] in (1, 3):
        return "NHWC"
    if len(shape) == 4 and shape[1] in (1, 3):
        return "NCHW"
    raise ValueError(f"images must be (N,H,W), (N,H,W,C) or (N,C,H,W) with C in 1, 3; got shape {shape}")


def to_nchw(batch: np.ndarray, layout: str) -> np.ndarray:
    """An image batch of ``layout`` as (N, C, H, W)."""
    if layout == "NHW":
        return batch[:, None]
    return batch.transpose(0, 3, 1, 2) if layout == "NHWC" else batch


def resize_chw(image: np.ndarray, size: int) -> np.ndarray:
    """One uint8 (C, H, W) image resized (no crop) to (C, size, size)."""
    pil = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
    return to_chw(fit_square(pil, size, "none"))


def read_hdf5_images(
    dataset: h5py.Dataset, image_size: int, chunk_bytes: int = 256 * 2**20
) -> tuple[np.ndarray, str]:
    """All images of ``dataset`` as uint8 (N, C, image_size, image_size), and the source layout;
    read in chunks of about ``chunk_bytes`` of the source (a float32 3 × 512² image is 3 MB)."""
    layout = image_layout(dataset.shape)
    n = dataset.shape[0]
    batch = max(1, chunk_bytes // max(1, dataset.dtype.itemsize * int(np.prod(dataset.shape[1:]))))
    channels = 1 if layout == "NHW" else dataset.shape[3 if layout == "NHWC" else 1]
    images = np.empty((n, channels, image_size, image_size), dtype=np.uint8)
    with progress(total=n, desc="hdf5", unit="img") as bar:
        for start in range(0, n, batch):
            chunk = to_nchw(to_uint8(dataset[start : start + batch]), layout)
            if chunk.shape[2:] != (image_size, image_size):
                chunk = np.stack([resize_chw(image, image_size) for image in chunk])
            images[start : start + len(chunk)] = chunk
            bar.update(len(chunk))
    return images, layout


def read_column(file: h5py.File, name: str, n: int) -> np.ndarray:
    """Dataset ``name`` as a 1-D array of ``n`` values."""
    values = hdf5_dataset(file, name)[()]
    if values.shape != (n,):
        raise ValueError(f"dataset {name!r} has shape {values.shape}, expected ({n},)")
    return values


def as_integers(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as int64, if they are finite, integral and non-negative (or booleans)."""
    if values.dtype == np.bool_:
        return values.astype(np.int64)
    if (
        not np.issubdtype(values.dtype, np.number)
        or not np.all(np.isfinite(values))
        or np.any(values != np.round(values))
        or np.any(values < 0)
    ):
        raise ValueError(f"dataset {name!r} must hold finite non-negative integers")
    return values.astype(np.int64)


def class_indices(labels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Labels (N,) as 0..K−1 in the order of their sorted values, and those values as the class
    names: labels 1/2 are two classes, not three with an empty class 0."""
    values, indices = np.unique(labels, return_inverse=True)
    return indices.astype(np.int64), [str(value) for value in values]


def load_hdf5(params: dict[str, Any], image_size: int, base_dir: Path) -> PreparedArrays:
    """Images, labels, optional split and factors of one HDF5 file; images as uint8 (N, C, size, size)."""
    path = resolve(params["path"], base_dir)
    with h5py.File(path, "r") as file:
        images, layout = read_hdf5_images(hdf5_dataset(file, params["images"]), image_size)
        n = len(images)
        labels, class_names = class_indices(
            as_integers(read_column(file, params["labels"], n), params["labels"])
        )
        split = None
        if params.get("split"):
            split = as_integers(read_column(file, params["split"], n), params["split"])
            if np.any(split > max(SPLITS.values())):
                raise ValueError(f"dataset {params['split']!r} must hold split codes {SPLITS}")
        factor_names = list(params.get("factors") or [])
        factors = [read_column(file, name, n).astype(np.float32) for name in factor_names]
    return PreparedArrays(
        images=images,
        labels=labels,
        class_names=class_names,
        split=None if split is None else split.astype(np.int8),
        factors=np.stack(factors, axis=1) if factors else None,
        factor_names=factor_names,
        meta={"source": "hdf5", "path": str(path), "images": params["images"], "layout": layout},
    )
