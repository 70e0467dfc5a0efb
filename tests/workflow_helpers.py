"""Run the Snakemake workflow in a temporary directory and read what it would do."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
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
