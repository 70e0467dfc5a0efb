"""Run the Snakemake workflow in a temporary directory and read what it would do."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
SLURM_PROFILE = REPO / "profiles" / "slurm"
SLURM_CLUSTER = REPO / "tests" / "slurm" / "local_cluster.sh"
TINY_CONFIGS = [REPO / "config.yaml", REPO / "presets" / "tiny.yaml"]
JOB_HEADER = re.compile(r"^(?:local)?rule (\w+):$")
WILDCARDS = re.compile(r"^\s+wildcards: (.+)$")


def write_overlay(workdir: Path, overlay: dict, name: str = "overlay.yaml") -> Path:
    path = workdir / name
    path.write_text(yaml.safe_dump(overlay))
    return path


def snakemake_command(
    workdir: Path, *args: str, configfiles: list[Path] = (), preset: str | None = "tiny"
) -> list[str]:
    """The command that runs the workflow with ``config.yaml`` + ``presets/{preset}.yaml`` (if any)
    + ``configfiles`` in ``workdir``."""
    presets = [str(REPO / "presets" / f"{preset}.yaml")] if preset else []
    files = [str(REPO / "config.yaml"), *presets, *map(str, configfiles)]
    command = [
        SNAKEMAKE,
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        "--configfile",
        *files,
        *args,
    ]
    return command


def snakemake(
    workdir: Path,
    *args: str,
    configfiles: list[Path] = (),
    timeout: int = 900,
    preset: str | None = "tiny",
    env: dict[str, str] | None = None,
):
    """Run :func:`snakemake_command` to completion (``env``: the environment, default this one's)."""
    command = snakemake_command(workdir, *args, configfiles=configfiles, preset=preset)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def planned_jobs(dry_run_output: str) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run lists, ``all`` excluded."""
    jobs, rule = set(), None
    for line in dry_run_output.splitlines():
        if header := JOB_HEADER.match(line.strip()):
            rule = header.group(1)
            if rule != "all":
                jobs.add((rule, ""))
        elif (wildcards := WILDCARDS.match(line)) and rule and rule != "all":
            jobs.discard((rule, ""))
            jobs.add((rule, wildcards.group(1)))
    return jobs


def slurm_profile() -> dict:
    return yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text())


def local_slurm_overrides() -> list[str]:
    """The command-line overrides of the SLURM profile for the one-node test cluster: partition
    ``debug``, status through ``squeue`` (no slurmdbd, so no sacct) and ``device: cpu``.

    The profile's ``jobs: 100`` stays: the cluster queues every ready job and starts the next
    one the moment a CPU frees. With at most 2 jobs submitted, each free CPU waited for the
    plugin's next status poll, whose interval grows by 10 s after every poll that finds no job
    finished (the plugin's back-off, not configurable), ≈ 20 s per job."""
    partition = [f"{rule}:slurm_partition=debug" for rule in slurm_profile()["set-resources"]]
    return [
        "--default-resources", "slurm_partition=debug", "mem_mb=2000", "runtime=60",
        "--set-resources", *partition,
        "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "2",
        "--seconds-between-status-checks", "4",
        "--latency-wait", "5",
        "--config", "device=cpu",
    ]  # fmt: skip


def slurm_command(workdir: Path, *args: str, configfiles: list[Path], limit_s: int) -> list[str]:
    """snakemake through the SLURM profile, killed (not terminated) at the limit; run it with
    :func:`slurm_environment`."""
    return [
        "timeout", "-s", "KILL", str(limit_s), SNAKEMAKE,
        "--profile", str(SLURM_PROFILE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--configfile", *map(str, configfiles), *local_slurm_overrides(), "--", *args,
    ]  # fmt: skip


def slurm_environment() -> dict[str, str]:
    """This environment with the venv's ``snakemake`` first on PATH (each SLURM job calls it)."""
    return {**os.environ, "PATH": f"{Path(SNAKEMAKE).parent}:{os.environ['PATH']}"}


def run_on_slurm(workdir: Path, *args: str, configfiles: list[Path], limit_s: int):
    """:func:`slurm_command` run to completion."""
    command = slurm_command(workdir, *args, configfiles=configfiles, limit_s=limit_s)
    return subprocess.run(command, capture_output=True, text=True, env=slurm_environment())
