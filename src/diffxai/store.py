"""The artifact store: zarr v3 groups that are complete or absent.

Every cached artifact (prepared data, explanations, particles, latents, samples) is
a zarr group of named arrays. Per-sample arrays have one sample per chunk (grouped
into shards so the file count stays small) and grow by :meth:`StoreWriter.append`.
A writer works in a temporary sibling directory and renames it into place only in
:meth:`StoreWriter.finalize`, after writing the completeness marker; readers
(:func:`open_store`) refuse anything without that marker, of another format version,
or whose arrays disagree on the number of samples.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

STORE_VERSION = 1
MARKER = "diffxai_store"
SHARD_BYTES = 4 * 2**20
# A shard's index has 16 bytes per chunk and is rewritten on every write: capping the
# chunks per shard keeps small per-sample arrays (flags, counts) from 64 MB indexes.
MAX_SHARD_ROWS = 1024
COMPRESSORS = (BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),)


class StoreError(RuntimeError):
    """A store that is missing, incomplete, of another version or inconsistent."""


@dataclass(frozen=True)
class ArraySpec:
    """A per-sample array: each sample has ``sample_shape`` and ``dtype``."""

    sample_shape: tuple[int, ...]
    dtype: str


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _shard_rows(spec: ArraySpec, rows_hint: int | None) -> int:
    sample_bytes = max(1, int(np.prod(spec.sample_shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize)
    rows = max(1, min(SHARD_BYTES // sample_bytes, MAX_SHARD_ROWS))
    return int(min(rows, rows_hint)) if rows_hint else int(rows)


def jsonable(value: Any) -> Any:
    """JSON-safe copy of attribute values (numpy scalars/arrays to Python)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


class StoreWriter:
    """Writes one store under a temporary sibling; use as a context manager.

    Leaving the ``with`` block by an exception deletes the temporary directory; a
    killed process leaves only a ``.name.tmp-*`` sibling that no reader opens and
    the next writer of the same path removes.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        kind: str,
        arrays: Mapping[str, ArraySpec],
        attrs: Mapping[str, Any] | None = None,
        rows_hint: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.kind = kind
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.path.parent.glob(f".{self.path.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        self.tmp_path = _tmp_sibling(self.path)
        self.group = zarr.open_group(self.tmp_path, mode="w")
        self.group.attrs.update(jsonable(dict(attrs or {})))
        self.rows: dict[str, int] = {}
        for name, spec in arrays.items():
            self.group.create_array(
                name=name,
                shape=(0, *spec.sample_shape),
                chunks=(1, *spec.sample_shape),
                shards=(_shard_rows(spec, rows_hint), *spec.sample_shape),
                dtype=spec.dtype,
                compressors=COMPRESSORS,
                fill_value=0,
            )
            self.rows[name] = 0
        self._done = False

    def append(self, **batches: np.ndarray) -> None:
        """Append a batch of samples (first axis) to each named per-sample array."""
        for name, batch in batches.items():
            if name not in self.rows:
                raise KeyError(f"store {self.path} has no per-sample array {name!r}")
            array = self.group[name]
            batch = np.asarray(batch, dtype=array.dtype)
            if batch.shape[1:] != array.shape[1:]:
                raise ValueError(f"{name}: sample shape {batch.shape[1:]} != declared {array.shape[1:]}")
            start = self.rows[name]
            array.resize((start + len(batch), *array.shape[1:]))
            array[start:] = batch
            self.rows[name] = start + len(batch)

    def put(self, name: str, value: np.ndarray) -> None:
        """Write a whole non-per-sample array (a direction, a table, a map)."""
        value = np.asarray(value)
        self.group.create_array(
            name=name, data=value, chunks=value.shape if value.ndim else "auto", compressors=COMPRESSORS
        )

    def update_attrs(self, **attrs: Any) -> None:
        self.group.attrs.update(jsonable(attrs))

    def finalize(self) -> Path:
        """Check row counts, write the completeness marker and rename into place."""
        counts = set(self.rows.values())
        if len(counts) > 1:
            raise StoreError(f"per-sample arrays of {self.path} differ in length: {self.rows}")
        n_samples = counts.pop() if counts else 0
        self.group.attrs[MARKER] = {
            "complete": True,
            "version": STORE_VERSION,
            "kind": self.kind,
            "n_samples": n_samples,
            "per_sample": sorted(self.rows),
        }
        old = _tmp_sibling(self.path) if self.path.exists() else None
        if old is not None:  # moved aside first: a kill while deleting it leaves no half store at path
            os.replace(self.path, old)
        os.replace(self.tmp_path, self.path)
        self._done = True
        if old is not None:
            shutil.rmtree(old)
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.tmp_path, ignore_errors=True)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._done:
            self.abort()


class StoreReader:
    """Read-only view of a complete store."""

    def __init__(self, group: zarr.Group, path: Path) -> None:
        self.group = group
        self.path = path
        self.marker: dict[str, Any] = dict(group.attrs[MARKER])

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    @property
    def n_samples(self) -> int:
        return int(self.marker["n_samples"])

    def __contains__(self, name: str) -> bool:
        return name in self.group

    def __getitem__(self, name: str) -> zarr.Array:
        return self.group[name]

    def read(self, name: str, index: Any = Ellipsis) -> np.ndarray:
        """The array ``name`` (or a selection of it) as numpy."""
        if name not in self.group:
            raise KeyError(
                f"store {self.path} has no array {name!r}; it has {sorted(self.group.array_keys())}"
            )
        return np.asarray(self.group[name][index])


def open_store(path: str | os.PathLike, kind: str | None = None) -> StoreReader:
    """Open a complete store read-only, or raise :class:`StoreError` saying why not."""
    path = Path(path)
    if not path.is_dir():
        raise StoreError(f"no store at {path}")
    try:
        group = zarr.open_group(path, mode="r")
    except Exception as error:  # zarr raises several types for unreadable metadata
        raise StoreError(f"{path} is not a readable zarr group: {error}") from error
    marker = group.attrs.get(MARKER)
    if not marker or not marker.get("complete"):
        raise StoreError(f"{path} is incomplete (no completeness marker): it was not finalised")
    if marker.get("version") != STORE_VERSION:
        raise StoreError(f"{path} has store version {marker.get('version')}, this code reads {STORE_VERSION}")
    if kind is not None and marker.get("kind") != kind:
        raise StoreError(f"{path} holds a {marker.get('kind')!r} store, expected {kind!r}")
    for name in marker["per_sample"]:
        if name not in group or group[name].shape[0] != marker["n_samples"]:
            raise StoreError(f"{path}: array {name!r} is missing or has the wrong number of samples")
    return StoreReader(group, path)
