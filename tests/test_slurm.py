"""The SLURM profile: it names every rule that can take a GPU, and it runs the tiny DAG on a real
one-node SLURM cluster started on this machine (Debian's slurm-wlm and munge), where a failing
job is reported as failed.

The run uses ``profiles/slurm`` as users do, overriding only what a single node without
accounting needs: the partition (``debug``), status polling through ``squeue`` (no slurmdbd, so
``sacct`` cannot answer) and ``device: cpu`` (no GPU to request).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.workflow_helpers import REPO, SNAKEMAKE

PROFILE = REPO / "profiles" / "slurm"
CLUSTER = REPO / "tests" / "slurm" / "local_cluster.sh"
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+)")


def profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def gpu_rules() -> set[str]:
    """Rules whose ``gpu`` resource follows the config's device (GPU: 0 for device cpu, else 1)."""
    rules = set()
    for path in (REPO / "rules").glob("*.smk"):
        for block in re.split(r"^rule ", path.read_text(), flags=re.M)[1:]:
            if re.search(r"^\s+gpu=GPU,", block, flags=re.M):
                rules.add(block.split(":", 1)[0].strip())
    return rules


def test_profile_sends_every_gpu_rule_to_the_gpu_partition():
    settings = profile()
    assert settings["executor"] == "slurm"
    assert set(settings["set-resources"]) == gpu_rules()
    assert all(entry == {"slurm_partition": "gpu"} for entry in settings["set-resources"].values())


def local_overrides() -> list[str]:
    """The command-line overrides of the profile for the one-node test cluster."""
    partition = [f"{rule}:slurm_partition=debug" for rule in profile()["set-resources"]]
    return [
        "--jobs", "2",
        "--default-resources", "slurm_partition=debug", "mem_mb=2000", "runtime=60",
        "--set-resources", *partition,
        "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "2",
        "--seconds-between-status-checks", "4",
        "--latency-wait", "5",
        "--config", "device=cpu",
    ]  # fmt: skip


def run_on_slurm(workdir: Path, *args: str, configfiles: list[Path], limit_s: int):
    """snakemake through the SLURM profile, killed (not terminated) at the limit."""
    environment = {**os.environ, "PATH": f"{Path(SNAKEMAKE).parent}:{os.environ['PATH']}"}
    command = [
        "timeout", "-s", "KILL", str(limit_s), SNAKEMAKE,
        "--profile", str(PROFILE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--configfile", *map(str, configfiles), *local_overrides(), "--", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=environment)


@pytest.fixture(scope="module")
def local_cluster():
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("starting a local SLURM cluster needs root and apt-get (Debian)")
    subprocess.run(["bash", str(CLUSTER), "start"], check=True, timeout=900)
    yield
    subprocess.run(["bash", str(CLUSTER), "stop"], check=False, timeout=120)


@pytest.mark.slow
def test_tiny_dag_runs_to_completion_as_slurm_jobs(local_cluster, tmp_path):
    configs = [REPO / "config.yaml", REPO / "presets" / "tiny.yaml"]
    result = run_on_slurm(tmp_path, configfiles=configs, limit_s=3600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    dry = subprocess.run(
        [SNAKEMAKE, "-n", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--configfile",
         *map(str, configs), "--config", "device=cpu"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert "Nothing to be done" in dry.stdout + dry.stderr  # every target was made
    submitted = set(SUBMITTED.findall(output))
    assert len(submitted) >= 90  # every job was a SLURM job (the tiny DAG has ~110, a few local)
    assert (tmp_path / "results/tiny/ellipses/variance/ellipse_features/scores.json").exists()


@pytest.mark.slow
def test_a_failing_job_is_reported_as_failed(local_cluster, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"models": {"regressor_area": {"checkpoint": str(bad)}}}))
    configs = [REPO / "config.yaml", REPO / "presets" / "tiny.yaml", overlay]
    target = "results/tiny/ellipses/models/regressor_area/metrics.json"
    result = run_on_slurm(tmp_path, target, configfiles=configs, limit_s=900)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert SUBMITTED.search(output), output[-3000:]  # it ran as a SLURM job ...
    assert "Error in rule train_supervised" in output  # ... and its failure was reported
    assert not (tmp_path / target).exists()
