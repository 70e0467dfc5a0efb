"""The workflow as users run it: the DAG, a real tiny run, and what re-runs after a change."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from diffxai.data.prepared import PreparedData
from diffxai.models.io import load_model
from diffxai.store import open_store
from tests.workflow_helpers import REPO, SNAKEMAKE, planned_jobs, snakemake, write_overlay

ELLIPSE_MODELS = ["classifier", "regressor_aspect", "regressor_area", "encoder", "ddpm"]
ATTRIBUTE_MODELS = ["classifier", "oracle", "encoder"]
ALL_JOBS = {
    ("prepare_data", "dataset=ellipses"),
    ("prepare_data", "dataset=attributes"),
    ("train_supervised", "dataset=ellipses, name=classifier"),
    ("train_supervised", "dataset=ellipses, name=regressor_aspect"),
    ("train_supervised", "dataset=ellipses, name=regressor_area"),
    ("train_supervised", "dataset=attributes, name=classifier"),
    ("train_supervised", "dataset=attributes, name=oracle"),
    ("train_encoder", "dataset=ellipses, name=encoder"),
    ("train_encoder", "dataset=attributes, name=encoder"),
    ("train_ddpm", "dataset=ellipses, name=ddpm"),
    ("evaluate_ddpm", "dataset=ellipses, name=ddpm"),
}


def test_default_config_dry_run_lists_the_whole_dag(tmp_path):
    result = snakemake(tmp_path, "-n", configfiles=[])
    assert result.returncode == 0, result.stderr
    assert planned_jobs(result.stdout + result.stderr) == ALL_JOBS


def test_snakefmt_leaves_the_workflow_unchanged():
    snakefmt = str(Path(SNAKEMAKE).with_name("snakefmt"))
    result = subprocess.run(
        [snakefmt, "--check", "Snakefile", "rules"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_lint_has_no_findings():
    result = subprocess.run(
        [SNAKEMAKE, "--lint", "-s", str(REPO / "Snakefile")], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "Congratulations" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny preset run once, end to end, in a fresh directory."""
    workdir = tmp_path_factory.mktemp("tiny")
    result = snakemake(workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir


@pytest.mark.slow
def test_tiny_run_writes_complete_datasets_with_provenance(tiny_run):
    for name, n_images in (("ellipses", 400), ("attributes", 300)):
        data = PreparedData(tiny_run / "results/tiny" / name / "data.zarr")
        assert data.store.n_samples == n_images
        assert data.array("images").shape[-2:] == (16, 16)
        assert sorted(np.unique(data.array("split"))) == [0, 1, 2]
        provenance = open_store(tiny_run / "results/tiny" / name / "data.zarr").attrs["provenance"]
        assert provenance["config"]["n_images"] == n_images
        assert {"source_hash", "versions", "seed", "wall_time_s", "device"} <= set(provenance)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dataset", "models"), [("ellipses", ELLIPSE_MODELS), ("attributes", ATTRIBUTE_MODELS)]
)
def test_tiny_run_writes_loadable_models_with_metrics(tiny_run, dataset, models):
    data = PreparedData(tiny_run / "results/tiny" / dataset / "data.zarr")
    images = torch.from_numpy(data.array("images")[:4]).float() / 127.5 - 1
    for name in models:
        directory = tiny_run / "results/tiny" / dataset / "models" / name
        module, info = load_model(directory)
        metrics = json.loads((directory / "metrics.json").read_text())
        assert info["provenance"]["dataset"] == dataset
        if info["kind"] == "ddpm":
            output = module(images, torch.tensor(10)).sample
            assert output.shape == images.shape
            assert np.isfinite(metrics["fid_encoder"])
            assert set(metrics["ks"]) == {"log_aspect_ratio", "area"}
            assert metrics["nfe"] == 16 * 5
            assert (directory / "samples.png").stat().st_size > 0
        else:
            assert torch.isfinite(module(images)).all()
            assert metrics["n_test"] if "n_test" in metrics else metrics["test"]


@pytest.mark.slow
def test_tiny_run_writes_a_log_and_benchmark_per_job(tiny_run):
    logs = sorted((tiny_run / "results/tiny/logs").rglob("*.log"))
    benchmarks = sorted((tiny_run / "results/tiny/benchmarks").rglob("*.tsv"))
    assert len(logs) == len(ALL_JOBS)
    assert len(benchmarks) == len(ALL_JOBS)
    assert all(log.stat().st_size > 0 for log in logs)


@pytest.mark.slow
def test_unchanged_second_run_does_nothing(tiny_run):
    result = snakemake(tiny_run, "-n")
    assert result.returncode == 0
    assert planned_jobs(result.stdout + result.stderr) == set()
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overlay", "expected"),
    [
        pytest.param(
            {"models": {"regressor_area": {"train": {"lr": 0.002}}}},
            {
                ("train_supervised", "dataset=ellipses, name=regressor_area"),
                ("evaluate_ddpm", "dataset=ellipses, name=ddpm"),
            },
            id="regressor-reruns-itself-and-ddpm-evaluation",
        ),
        pytest.param(
            {"models": {"ddpm": {"train": {"steps": 21}}}},
            {("train_ddpm", "dataset=ellipses, name=ddpm"), ("evaluate_ddpm", "dataset=ellipses, name=ddpm")},
            id="ddpm-training-reruns-ddpm-only",
        ),
        pytest.param(
            {"models": {"ddpm": {"evaluation": {"samples": 8}}}},
            {("evaluate_ddpm", "dataset=ellipses, name=ddpm")},
            id="ddpm-evaluation-does-not-retrain",
        ),
        pytest.param(
            {"datasets": {"attributes": {"n_images": 310}}},
            {
                ("prepare_data", "dataset=attributes"),
                ("train_supervised", "dataset=attributes, name=classifier"),
                ("train_supervised", "dataset=attributes, name=oracle"),
                ("train_encoder", "dataset=attributes, name=encoder"),
            },
            id="dataset-change-reruns-its-chain-only",
        ),
    ],
)
def test_a_changed_parameter_reruns_only_its_jobs_and_dependents(tiny_run, overlay, expected):
    result = snakemake(tiny_run, "-n", configfiles=[write_overlay(tiny_run, overlay)])
    assert result.returncode == 0, result.stderr
    assert planned_jobs(result.stdout + result.stderr) == expected
