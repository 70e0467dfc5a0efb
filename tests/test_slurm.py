"""The SLURM profile: every job that takes a GPU goes to the GPU partition and asks the SLURM
plugin for one, and it runs the tiny DAG on a real one-node SLURM cluster started on this
machine (Debian's slurm-wlm and munge), where a failing job is reported as failed.

The run uses ``profiles/slurm`` as users do, overriding only what a single node without
accounting needs: the partition (``debug``), status polling through ``squeue`` (no slurmdbd, so
``sacct`` cannot answer) and ``device: cpu`` (no GPU to request). That run is the session's
second clean tiny run (``conftest.second_tiny_run``), which the determinism test compares with
the local one.
"""

from __future__ import annotations

import re
import subprocess
from types import SimpleNamespace

import pytest
import yaml

from tests.workflow_helpers import (
    REPO,
    SLURM_PROFILE,
    SNAKEMAKE,
    TINY_CONFIGS,
    run_on_slurm,
    slurm_profile,
    snakemake,
)

SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+)")
JOB = re.compile(r"^rule (\w+):$", flags=re.M)
RESOURCES = re.compile(r"^\s+resources: (.+)$", flags=re.M)


class Resources(dict):
    """A job's resources as the SLURM plugin reads them: ``get`` and attribute access."""

    __getattr__ = dict.__getitem__


def planned_jobs(dry_run_output: str) -> list[SimpleNamespace]:
    """Every job a dry run lists: its rule and resources (integers where they are); threads 1, as
    the dry run does not print them (no GPU flag depends on them)."""
    jobs = []
    for block in re.split(r"^\[.+\]$", dry_run_output, flags=re.M)[1:]:
        if (rule := JOB.search(block)) and (resources := RESOURCES.search(block)):
            pairs = (pair.split("=", 1) for pair in resources.group(1).split(", "))
            values = Resources({key: int(v) if v.isdigit() else v for key, v in pairs})
            jobs.append(SimpleNamespace(rule=rule.group(1), threads=1, resources=values))
    return jobs


@pytest.fixture(scope="module")
def slurm_jobs(tmp_path_factory) -> list[SimpleNamespace]:
    """The tiny DAG's jobs as ``profiles/slurm`` plans them with ``device: auto`` (a GPU each
    where a rule can use one, whether or not this machine has one)."""
    result = snakemake(tmp_path_factory.mktemp("slurm-dry"), "-n", "--profile", str(SLURM_PROFILE))
    assert result.returncode == 0, result.stderr[-3000:]
    return planned_jobs(result.stdout + result.stderr)


def test_profile_sends_every_gpu_rule_to_the_gpu_partition(slurm_jobs):
    settings = slurm_profile()
    sources = [REPO / "Snakefile", *(REPO / "rules").glob("*.smk")]
    declared = {name for path in sources for name in re.findall(r"^rule (\w+):", path.read_text(), re.M)}
    assert {job.rule for job in slurm_jobs} == declared  # the tiny DAG has a job of every rule
    gpu = {job.rule for job in slurm_jobs if job.resources.get("gpu", 0) > 0}
    assert settings["executor"] == "slurm"
    assert set(settings["set-resources"]) == gpu  # no GPU rule missing, no CPU rule listed
    assert all(entry == {"slurm_partition": "gpu"} for entry in settings["set-resources"].values())
    for job in slurm_jobs:
        assert job.resources["slurm_partition"] == ("gpu" if job.rule in gpu else "cpu"), job.rule


def sbatch_call(job: SimpleNamespace) -> str:
    """The ``sbatch`` command line the installed SLURM plugin builds for ``job``."""
    plugin = pytest.importorskip("snakemake_executor_plugin_slurm")
    submit = pytest.importorskip("snakemake_executor_plugin_slurm.submit_string")
    utils = pytest.importorskip("snakemake_executor_plugin_slurm.utils")
    no_partition_file = SimpleNamespace(_partitions=None, _fallback_partition=None)  # the executor's state
    params = {
        "run_uuid": "run", "slurm_logfile": "slurm.log", "comment_str": f"rule_{job.rule}", "account": "",
        "partition": plugin.Executor.get_partition_arg(no_partition_file, job), "workdir": str(REPO),
    }  # fmt: skip
    return submit.get_submit_command(job, params) + utils.set_gres_string(job)


def test_the_slurm_plugin_asks_for_one_gpu_on_the_gpu_partition_for_each_gpu_job(slurm_jobs):
    for job in {job.rule: job for job in slurm_jobs}.values():  # a job per rule
        call = sbatch_call(job).split()
        requested = ([flag for flag in call if flag.startswith("--gpus")], call[call.index("-p") + 1])
        assert requested == ((["--gpus=1"], "gpu") if job.resources.get("gpu", 0) > 0 else ([], "cpu")), call
        assert f"--mem {job.resources['mem_mb']}" in " ".join(call)


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
