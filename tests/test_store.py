"""The artifact store: a zarr group is either complete and consistent, or it is refused."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from diffxai.store import (
    MARKER,
    MAX_SHARD_ROWS,
    STORE_VERSION,
    ArraySpec,
    StoreError,
    StoreWriter,
    open_store,
)

SPECS = {
    "images": ArraySpec((3, 4, 4), "float32"),
    "labels": ArraySpec((), "int64"),
    "masks": ArraySpec((4, 4), "bool"),
}
X_SPEC = {"x": ArraySpec((2,), "float32")}
# Small shards: without rows_hint a per-sample scalar array gets 2**19-row shards, slow to write.


def batches(rng: np.random.Generator, sizes: tuple[int, ...]) -> list[dict[str, np.ndarray]]:
    return [
        {
            "images": rng.normal(size=(n, 3, 4, 4)).astype(np.float32),
            "labels": rng.integers(-5, 5, size=n).astype(np.int64),
            "masks": rng.random((n, 4, 4)) > 0.5,
        }
        for n in sizes
    ]


def write_store(path: Path, n: int = 4, kind: str = "test", **attrs) -> Path:
    with StoreWriter(path, kind, {"x": ArraySpec((2,), "float32")}, attrs=attrs, rows_hint=8) as writer:
        writer.append(x=np.arange(2 * n, dtype=np.float32).reshape(n, 2))
        return writer.finalize()


def temporary_siblings(path: Path) -> list[Path]:
    return list(path.parent.glob(f".{path.name}.tmp-*"))


@pytest.fixture
def round_trip(tmp_path):
    """A store with three per-sample arrays appended in uneven batches, two whole arrays and attrs."""
    rng = np.random.default_rng(0)
    parts = batches(rng, (3, 1, 7, 2))
    direction = rng.normal(size=(3, 4, 4))
    attrs = {"name": "demo", "scale": np.float32(0.5), "count": np.int64(7), "nested": {"ok": np.bool_(True)}}
    path = tmp_path / "demo.zarr"
    with StoreWriter(path, "demo", SPECS, attrs=attrs, rows_hint=5) as writer:
        for part in parts:
            writer.append(**part)
        writer.put("direction", direction)
        writer.put("threshold", np.float64(1.25))
        writer.finalize()
    expected = {name: np.concatenate([p[name] for p in parts]) for name in SPECS}
    return path, expected, direction


def test_round_trip_returns_every_per_sample_array_exactly(round_trip):
    path, expected, _ = round_trip
    store = open_store(path, kind="demo")
    for name, values in expected.items():
        read = store.read(name)
        assert read.dtype == values.dtype
        np.testing.assert_array_equal(read, values)


def test_round_trip_returns_whole_arrays_including_scalars(round_trip):
    path, _, direction = round_trip
    store = open_store(path)
    np.testing.assert_array_equal(store.read("direction"), direction)
    assert store.read("threshold").shape == ()
    assert float(store.read("threshold")) == 1.25


def test_round_trip_reports_number_of_samples(round_trip):
    path, _, _ = round_trip
    assert open_store(path).n_samples == 13


def test_round_trip_keeps_attrs_with_numpy_scalars_as_plain_values(round_trip):
    path, _, _ = round_trip
    attrs = open_store(path).attrs
    assert attrs["name"] == "demo"
    assert attrs["scale"] == 0.5 and isinstance(attrs["scale"], float)
    assert attrs["count"] == 7 and isinstance(attrs["count"], int)
    assert attrs["nested"] == {"ok": True}
    assert attrs[MARKER]["version"] == STORE_VERSION


def test_open_store_refuses_another_kind(round_trip):
    path, _, _ = round_trip
    with pytest.raises(StoreError, match="expected 'particles'"):
        open_store(path, kind="particles")


def test_open_store_refuses_a_missing_path(tmp_path):
    with pytest.raises(StoreError, match="no store"):
        open_store(tmp_path / "absent.zarr")


def test_exception_inside_writer_leaves_neither_store_nor_temporary(tmp_path):
    path = tmp_path / "failed.zarr"
    with pytest.raises(RuntimeError, match="boom"), StoreWriter(path, "test", X_SPEC, rows_hint=8) as w:
        w.append(x=np.zeros((3, 2)))
        raise RuntimeError("boom")
    assert not path.exists()
    assert temporary_siblings(path) == []
    with pytest.raises(StoreError):
        open_store(path)


def test_writer_left_without_finalize_leaves_no_store(tmp_path):
    path = tmp_path / "unfinished.zarr"
    with StoreWriter(path, "test", X_SPEC, rows_hint=8) as writer:
        writer.append(x=np.zeros((3, 2)))
    assert not path.exists()
    assert temporary_siblings(path) == []


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from diffxai.store import ArraySpec, StoreWriter
    writer = StoreWriter(sys.argv[1], "test", {"x": ArraySpec((2,), "float32")}, rows_hint=8)
    while True:
        writer.append(x=np.ones((4, 2)))
        time.sleep(0.05)
    """
)


@pytest.fixture
def killed_writer_path(tmp_path):
    """The path of a store whose writer process was SIGKILLed mid-write."""
    path = tmp_path / "killed.zarr"
    process = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)])
    try:
        deadline = time.monotonic() + 30
        while not temporary_siblings(path):
            assert process.poll() is None, "writer exited before it started writing"
            assert time.monotonic() < deadline, "writer never created its temporary directory"
            time.sleep(0.05)
        time.sleep(0.2)  # let it append a few batches
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    return path


def test_killed_writer_leaves_no_final_store(killed_writer_path):
    assert not killed_writer_path.exists()
    assert len(temporary_siblings(killed_writer_path)) == 1
    with pytest.raises(StoreError):
        open_store(killed_writer_path)


def test_next_writer_removes_stale_temporary_of_killed_writer(killed_writer_path):
    stale = temporary_siblings(killed_writer_path)
    write_store(killed_writer_path, n=5)
    assert not any(p.exists() for p in stale)
    assert temporary_siblings(killed_writer_path) == []
    assert open_store(killed_writer_path).n_samples == 5


def test_a_writer_killed_while_removing_the_old_store_leaves_the_new_one(tmp_path, monkeypatch):
    """Replacing a store deletes the old one; a kill half-way through that deletion must not
    leave an old store at the path whose lost chunks zarr would read as zeros."""
    path = write_store(tmp_path / "s.zarr", n=6)
    real_rmtree = shutil.rmtree

    def killed_half_way(target, *args, **kwargs):
        chunks = sorted(p for p in Path(target).rglob("*") if p.is_file() and p.name != "zarr.json")
        if not chunks:  # zarr clearing a fresh directory
            return real_rmtree(target, *args, **kwargs)
        chunks[0].unlink()
        raise KeyboardInterrupt  # the kill

    monkeypatch.setattr(shutil, "rmtree", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        write_store(path, n=3)
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    store = open_store(path)
    assert store.n_samples == 3
    np.testing.assert_array_equal(store.read("x"), np.arange(6, dtype=np.float32).reshape(3, 2))
    write_store(path, n=2)  # the next writer clears the half-deleted old store
    assert temporary_siblings(path) == []


def test_store_without_completeness_marker_is_refused(tmp_path):
    path = write_store(tmp_path / "s.zarr")
    del zarr.open_group(path, mode="r+").attrs[MARKER]
    with pytest.raises(StoreError, match="incomplete"):
        open_store(path)


def test_store_of_another_version_is_refused(tmp_path):
    path = write_store(tmp_path / "s.zarr")
    group = zarr.open_group(path, mode="r+")
    group.attrs[MARKER] = {**group.attrs[MARKER], "version": STORE_VERSION + 1}
    with pytest.raises(StoreError, match="version"):
        open_store(path)


def test_store_with_truncated_per_sample_array_is_refused(tmp_path):
    path = write_store(tmp_path / "s.zarr", n=4)
    zarr.open_group(path, mode="r+")["x"].resize((3, 2))
    with pytest.raises(StoreError, match="wrong number of samples"):
        open_store(path)


def test_append_with_wrong_sample_shape_raises_value_error(tmp_path):
    writer = StoreWriter(tmp_path / "s.zarr", "test", X_SPEC, rows_hint=8)
    with writer, pytest.raises(ValueError, match="sample shape"):
        writer.append(x=np.zeros((4, 3)))


def test_finalize_refuses_per_sample_arrays_of_unequal_length(tmp_path):
    path = tmp_path / "s.zarr"
    specs = {"x": ArraySpec((2,), "float32"), "y": ArraySpec((), "int64")}
    with StoreWriter(path, "test", specs, rows_hint=8) as writer:
        writer.append(x=np.zeros((4, 2)), y=np.zeros(3))
        with pytest.raises(StoreError, match="differ in length"):
            writer.finalize()
    assert not path.exists()


def test_rewriting_a_store_replaces_it_completely(tmp_path):
    path = tmp_path / "s.zarr"
    old_specs = {"old_array": ArraySpec((), "int64")}
    with StoreWriter(path, "old", old_specs, attrs={"old_attr": 1}, rows_hint=8) as writer:
        writer.append(old_array=np.arange(6))
        writer.put("old_table", np.ones(3))
        writer.finalize()
    write_store(path, n=2, kind="new", new_attr=2)
    store = open_store(path, kind="new")
    assert sorted(store.group.array_keys()) == ["x"]
    assert "old_attr" not in store.attrs and store.attrs["new_attr"] == 2
    assert store.n_samples == 2


def test_small_per_sample_arrays_get_small_shards(tmp_path):
    """A shard index holds 16 bytes per chunk and is rewritten on each write: a flag per sample
    (1 byte) must not get a shard of millions of chunks (that made a 13-array gather take 20 s)."""
    specs = {"flag": ArraySpec((), "|b1"), "image": ArraySpec((1, 32, 32), "<f4")}
    with StoreWriter(tmp_path / "s.zarr", "test", specs) as writer:
        writer.append(flag=np.ones(3, bool), image=np.zeros((3, 1, 32, 32), np.float32))
        writer.finalize()
    group = zarr.open_group(tmp_path / "s.zarr", mode="r")
    assert group["flag"].shards[0] == MAX_SHARD_ROWS
    assert group["image"].shards[0] == MAX_SHARD_ROWS  # 4 KiB per sample: the byte budget allows 1024
    assert group["flag"].chunks[0] == 1
