"""The SLURM profile: it names every rule that can take a GPU, and it runs the tiny DAG on a real
one-node SLURM cluster started on this machine (Debian's slurm-wlm and munge), where a failing
job is reported as failed.

The run uses ``profiles/slurm`` as users do, overriding only what a single node without
accounting needs: the partition (``debug``), status polling through ``squeue`` (no slurmdbd, so
``sacct`` cannot answer) and ``device: cpu`` (no GPU to request). That run is the session's
second clean tiny run (``conftest.second_tiny_run``), which the determinism test compares with
the local one.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.workflow_helpers import REPO, SNAKEMAKE, TINY_CONFIGS, run_on_slurm, slurm_profile

SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+)")


def gpu_rules() -> set[str]:
    """Rules whose ``gpu`` resource follows the config's device (GPU: 0 for device cpu, else 1)."""
    rules = set()
    for path in (REPO / "rules").glob("*.smk"):
        for block in re.split(r"^rule ", path.read_text(), flags=re.M)[1:]:
            if re.search(r"^\s+gpu=GPU,", block, flags=re.M):
                rules.add(block.split(":", 1)[0].strip())
    return rules


def test_profile_sends_every_gpu_rule_to_the_gpu_partition():
    settings = slurm_profile()
    assert settings["executor"] == "slurm"
    assert set(settings["set-resources"]) == gpu_rules()
    assert all(entry == {"slurm_partition": "gpu"} for entry in settings["set-resources"].values())


@pytest.mark.slow
def test_tiny_dag_runs_to_completion_as_slurm_jobs(second_tiny_run):
    if second_tiny_run.executor != "slurm":
        pytest.skip("starting a local SLURM cluster needs root and apt-get (Debian)")
    workdir, output = second_tiny_run.workdir, second_tiny_run.output
    assert second_tiny_run.returncode == 0, output[-4000:]
    dry = subprocess.run(
        [SNAKEMAKE, "-n", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile",
         *map(str, TINY_CONFIGS), "--config", "device=cpu"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert "Nothing to be done" in dry.stdout + dry.stderr  # every target was made
    submitted = set(SUBMITTED.findall(output))
    assert len(submitted) >= 90  # every job was a SLURM job (the tiny DAG has ~120, a few local)
    assert (workdir / "results/tiny/ellipses/variance/ellipse_features/scores.json").exists()


@pytest.mark.slow
def test_a_failing_job_is_reported_as_failed(local_cluster, tmp_path):
    if not local_cluster:
        pytest.skip("starting a local SLURM cluster needs root and apt-get (Debian)")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"models": {"regressor_area": {"checkpoint": str(bad)}}}))
    configs = [*TINY_CONFIGS, overlay]
    target = "results/tiny/ellipses/models/regressor_area/metrics.json"
    result = run_on_slurm(tmp_path, target, configfiles=configs, limit_s=900)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert SUBMITTED.search(output), output[-3000:]  # it ran as a SLURM job ...
    assert "Error in rule train_supervised" in output  # ... and its failure was reported
    assert not (tmp_path / target).exists()
