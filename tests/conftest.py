"""Fixtures shared by the workflow test modules: the tiny preset run end to end, a local SLURM
cluster where one can start, and a second clean tiny run (through that cluster when it runs)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.workflow_helpers import SLURM_CLUSTER, TINY_CONFIGS, run_on_slurm, snakemake


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny preset run once, end to end, in a fresh directory (shared by every module)."""
    workdir = tmp_path_factory.mktemp("tiny")
    result = snakemake(workdir, timeout=1800)  # ~120 jobs, each paying seconds of imports
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir


@pytest.fixture(scope="session")
def local_cluster():
    """True while a one-node SLURM cluster (Debian's slurm-wlm and munge) runs on this machine;
    False where none can start (it needs root and apt-get)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        yield False
        return
    subprocess.run(["bash", str(SLURM_CLUSTER), "start"], check=True, timeout=900)
    yield True
    subprocess.run(["bash", str(SLURM_CLUSTER), "stop"], check=False, timeout=120)


@dataclass
class SecondRun:
    workdir: Path
    executor: str  # "slurm" or "local"
    returncode: int
    output: str  # stdout + stderr


@pytest.fixture(scope="session")
def second_tiny_run(tmp_path_factory, local_cluster):
    """A second clean run of the tiny preset, as SLURM jobs through ``profiles/slurm`` where the
    local cluster runs, else with the local executor. The SLURM test checks it ran as SLURM
    jobs; the determinism test compares its arrays with :func:`tiny_run`'s (one run serves both:
    a tiny run costs minutes, most of them per-job imports)."""
    workdir = tmp_path_factory.mktemp("tiny-again")
    if local_cluster:
        result = run_on_slurm(workdir, configfiles=TINY_CONFIGS, limit_s=3600)
    else:
        result = snakemake(workdir, timeout=1800)
    executor = "slurm" if local_cluster else "local"
    return SecondRun(workdir, executor, result.returncode, result.stdout + result.stderr)
