"""Promises users rely on across runs: a source edit re-runs its own jobs, a killed job leaves no
store the next run trusts, and two clean runs of the tiny preset (the second through SLURM where
a local cluster can start) write identical arrays."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import zarr

from diffxai.data.prepared import PreparedData
from diffxai.store import StoreError, open_store
from tests.test_workflow import ALL_STAGES, REPORT_JOBS, explanation_jobs
from tests.workflow_helpers import REPO, planned_jobs, snakemake, snakemake_command, write_overlay


@pytest.mark.slow
def test_editing_a_source_module_reruns_exactly_the_jobs_that_import_it(tiny_run, tmp_path):
    """In a copy of the package that the workflow imports instead of the checkout, each module
    is edited in turn (and restored): DiME's re-runs DiME's jobs, ACE's ACE's; the real-data
    adapters are in no job of the tiny preset's generated datasets (data.kinds), so their edit
    re-runs nothing."""
    source = tmp_path / "src"
    shutil.copytree(
        REPO / "src" / "diffxai", source / "diffxai", ignore=shutil.ignore_patterns("__pycache__")
    )
    env = {**os.environ, "PYTHONPATH": str(source)}

    def planned() -> set[tuple[str, str]]:
        result = snakemake(tiny_run, "-n", env=env)
        assert result.returncode == 0, result.stderr
        return planned_jobs(result.stdout + result.stderr)

    assert planned() == set()
    edits = {
        "methods/dime.py": explanation_jobs(methods=("dime",), stages=ALL_STAGES) | REPORT_JOBS,
        "methods/ace.py": explanation_jobs(methods=("ace_l1",), stages=ALL_STAGES) | REPORT_JOBS,
        "data/adapters.py": set(),
    }
    for module, expected in edits.items():
        edited = source / "diffxai" / module
        original = edited.read_text()
        edited.write_text(original + "\n# a comment: not code, re-runs nothing\n")
        assert planned() == set(), module
        edited.write_text(
            original + "\nEDITED = True  # code (the hash cannot tell what it changes): re-runs\n"
        )
        assert planned() == expected, module
        edited.write_text(original)


@pytest.mark.slow
def test_deleting_one_shard_reruns_that_shard_and_the_jobs_that_read_it(tiny_run, tmp_path):
    keys = "dataset=ellipses, method=dime, run=run0"
    shard = tiny_run / "results/tiny/ellipses/dime/run0/shards/1.zarr"
    shard.rename(tmp_path / "1.zarr")
    try:
        result = snakemake(tiny_run, "-n")
    finally:
        (tmp_path / "1.zarr").rename(shard)
    assert result.returncode == 0, result.stderr
    assert (
        planned_jobs(result.stdout + result.stderr)
        == {
            ("explain_shard", f"{keys}, shard=1"),
            ("gather_explanations", keys),
            ("cf_metrics", keys),
            ("diversity", "dataset=ellipses, method=dime"),
        }
        | REPORT_JOBS
    )


def _kill_job_when(process: subprocess.Popen, written: Path, pattern: str, timeout: float = 300) -> None:
    """SIGKILL every process Snakemake started (not Snakemake) once ``written`` holds ``pattern``."""
    deadline = time.monotonic() + timeout
    while not list(written.glob(pattern)):
        assert process.poll() is None, "the run ended before the job started writing"
        assert time.monotonic() < deadline, f"no {pattern} in {written} after {timeout} s"
        time.sleep(0.02)
    for child in psutil.Process(process.pid).children(recursive=True):
        child.send_signal(signal.SIGKILL)


@pytest.mark.slow
def test_a_job_killed_mid_write_leaves_no_trusted_store_and_the_next_run_completes(tmp_path):
    # enough images that the store is being written for seconds
    overlay = write_overlay(tmp_path, {"datasets": {"ellipses": {"n_images": 3000}}})
    target = "results/tiny/ellipses/data.zarr"
    folder = tmp_path / "results/tiny/ellipses"
    command = snakemake_command(tmp_path, "--", target, configfiles=[overlay])
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _kill_job_when(process, folder, ".data.zarr.tmp-*")
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0 and "Error in rule prepare_data" in output
    assert not (folder / "data.zarr").exists()  # nothing at the output path for the next run to trust
    for partial in folder.glob(".data.zarr.tmp-*"):
        with pytest.raises(StoreError):
            open_store(partial)
    rerun = snakemake(tmp_path, "--", target, configfiles=[overlay])
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert PreparedData(folder / "data.zarr").store.n_samples == 3000
    assert not list(folder.glob(".data.zarr.tmp-*"))  # the next writer removed the killed one's


def _stores(root: Path) -> list[Path]:
    """Every zarr store under ``root`` (relative paths), nested stores excluded."""
    stores = sorted(
        path.parent.relative_to(root) for path in root.rglob("zarr.json") if path.parent.suffix == ".zarr"
    )
    return [store for store in stores if not any(parent.suffix == ".zarr" for parent in store.parents)]


TIMINGS = {"seconds"}  # measured wall time per sample: the one array a rerun may not reproduce


def _arrays(group: zarr.Group, prefix: str = "") -> dict[str, np.ndarray]:
    """Every array of a store by path, the timings left out."""
    arrays = {f"{prefix}{name}": array[...] for name, array in group.arrays() if name not in TIMINGS}
    for name, child in group.groups():
        arrays |= _arrays(child, f"{prefix}{name}/")
    return arrays


@pytest.mark.slow
def test_two_clean_tiny_runs_write_bit_identical_arrays(tiny_run, second_tiny_run):
    """The second run is the SLURM one where a local cluster runs: same machine, other executor."""
    assert second_tiny_run.returncode == 0, second_tiny_run.output[-6000:]
    first, second = tiny_run / "results", second_tiny_run.workdir / "results"
    stores = _stores(first)
    assert len(stores) > 50 and stores == _stores(second)
    for store in stores:
        mine, theirs = (
            _arrays(zarr.open_group(first / store, mode="r")),
            _arrays(zarr.open_group(second / store, mode="r")),
        )
        assert sorted(mine) == sorted(theirs), store
        for name, array in mine.items():
            assert array.dtype == theirs[name].dtype and array.shape == theirs[name].shape, (store, name)
            assert array.tobytes() == theirs[name].tobytes(), f"{store}/{name} differs between two clean runs"
    weights = sorted(path.relative_to(first) for path in first.rglob("*.safetensors"))
    assert weights and weights == sorted(path.relative_to(second) for path in second.rglob("*.safetensors"))
    for path in weights:  # the trained models too
        assert (first / path).read_bytes() == (second / path).read_bytes(), f"{path} differs"
