"""Fixtures shared by the test modules: the tiny preset's config and its ellipses store (per module);
the tiny preset run end to end, a local SLURM cluster where one can start, and a second clean tiny
run (through that cluster when it runs), started in the background so that it overlaps the first."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from diffxai.config.load import load_config
from diffxai.data.prepare import build_dataset
from diffxai.data.prepared import write_prepared
from tests.workflow_helpers import (
    REPO,
    SLURM_CLUSTER,
    TINY_CONFIGS,
    slurm_command,
    slurm_environment,
    snakemake,
    snakemake_command,
)


@pytest.fixture(scope="module")
def tiny_config():
    return load_config([REPO / "config.yaml", REPO / "presets" / "tiny.yaml"], base_dir=REPO)


@pytest.fixture(scope="module")
def ellipses_store(tmp_path_factory, tiny_config):
    path = tmp_path_factory.mktemp("data") / "data.zarr"
    write_prepared(path, build_dataset(tiny_config["datasets"]["ellipses"]), attrs={})
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, request):
    """The tiny preset run once, end to end, in a fresh directory (shared by every module).

    Where the session also wants :func:`second_tiny_run`, that run starts first, in the
    background, so the two overlap (on 7 December: 938 s for both, against 352 s + 657 s one
    after the other)."""
    if any("second_tiny_run" in getattr(item, "fixturenames", ()) for item in request.session.items):
        request.getfixturevalue("started_second_run")
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


@dataclass
class StartedRun:
    workdir: Path
    executor: str  # "slurm" or "local"
    process: subprocess.Popen
    output: Path  # where its stdout + stderr go (a pipe would fill and stall it)
    limit_s: int  # how long it may take


@pytest.fixture(scope="session")
def started_second_run(tmp_path_factory, local_cluster):
    """A second clean run of the tiny preset, started in the background: as SLURM jobs through
    ``profiles/slurm`` where the local cluster runs, else with the local executor."""
    workdir = tmp_path_factory.mktemp("tiny-again")
    output = tmp_path_factory.mktemp("tiny-again-output") / "snakemake.txt"
    if local_cluster:
        limit_s = 3600
        command = slurm_command(workdir, configfiles=TINY_CONFIGS, limit_s=limit_s)
        environment = slurm_environment()
    else:
        limit_s, command, environment = 1800, snakemake_command(workdir), None
    with output.open("w") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=environment, start_new_session=True
        )
    yield StartedRun(workdir, "slurm" if local_cluster else "local", process, output, limit_s)
    if process.poll() is None:  # the session ended before anything waited for it
        os.killpg(process.pid, signal.SIGKILL)  # snakemake too, not only its timeout wrapper
        process.wait()


@pytest.fixture(scope="session")
def second_tiny_run(started_second_run):
    """The second clean tiny run, waited for. The SLURM test checks it ran as SLURM jobs; the
    determinism test compares its arrays with :func:`tiny_run`'s (one run serves both: a tiny run
    costs minutes, most of them per-job imports)."""
    run = started_second_run
    returncode = run.process.wait(timeout=run.limit_s)
    return SecondRun(run.workdir, run.executor, returncode, run.output.read_text())
