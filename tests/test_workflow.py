"""The workflow as users run it: the DAG, a real tiny run, and what re-runs after a change."""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from diffxai.data.prepared import PreparedData
from diffxai.jobs import train_t2i
from diffxai.models.io import load_model
from diffxai.store import open_store
from tests.workflow_helpers import REPO, SNAKEMAKE, planned_jobs, snakemake, write_overlay

ELLIPSE_MODELS = [
    "classifier", "regressor_aspect", "regressor_area", "encoder", "ddpm", "diffae", "hit", "vit", "t2i"
]  # fmt: skip
ATTRIBUTE_MODELS = ["classifier", "oracle", "encoder", "ddpm"]
DATASETS = ("ellipses", "attributes")
# name -> runs (tiny preset)
EXPLANATIONS = {"dime": 2, "ace_l1": 1, "freemcg": 1, "gcd": 2, "time": 1, "time_single_token": 1}
DEFAULT_RUNS = {**EXPLANATIONS, "gcd": 5}  # the default config's
ELLIPSES = ("ellipses",)
EXPLANATION_DATASETS = {"dime": DATASETS, "ace_l1": DATASETS} | {
    name: ELLIPSES for name in ("freemcg", "gcd", "time", "time_single_token")
}
SHARDS = 2
BASELINES = (
    "gradient", "integrated_gradients", "input_x_gradient", "occlusion", "kernel_shap", "rise", "gradcam"
)  # fmt: skip
ABLATION_POINTS = {  # (ablation, preset) -> settings
    ("freemcg_table4", "default"): [f"particles={k}" for k in (10, 50, 100, 200)]
    + [f"t_start={t}" for t in (0.3, 0.4, 0.5, 0.6)]
    + [f"beta={b}" for b in (0.0, 0.01, 0.02, 0.03)],
    ("freemcg_table4", "tiny"): ["particles=2", "particles=4", "t_start=0.3", "beta=0.0"],
    ("time_grid", "default"): [f"tau={tau}+w={w}" for tau in (25, 30, 35) for w in (3, 4, 5)],
    ("time_grid", "tiny"): [f"tau={tau}+w={w}" for tau in (2, 3) for w in (1, 2)],
    ("time_tables", "default"): ["guidance=negative", "guidance=cfg", "context=False"],
    ("time_tables", "tiny"): ["guidance=cfg", "context=False"],
}


def explanation_jobs(
    datasets=DATASETS, methods=tuple(EXPLANATIONS), stages=("explain", "metrics"), runs=EXPLANATIONS
):
    """The jobs of counterfactual runs: (GCD's directions,) shards, gather, metrics, diversity
    (and GCD's summary, which reads the metrics, and its globality, which re-runs with the
    CEs). ``stages``: "directions" (GCD), "explain", "metrics"; ``runs``: runs per method."""
    jobs = set()
    for dataset in datasets:
        for method in (m for m in methods if dataset in EXPLANATION_DATASETS[m]):
            names = [f"run{k}" for k in range(runs[method])]
            for run in names:
                keys = f"dataset={dataset}, method={method}, run={run}"
                if method == "gcd" and "directions" in stages:
                    jobs.add(("gcd_directions", keys))
                if "explain" in stages:
                    jobs |= {("explain_shard", f"{keys}, shard={s}") for s in range(SHARDS)}
                    jobs.add(("gather_explanations", keys))
                jobs.add(("cf_metrics", keys))
            if len(names) > 1 and "explain" in stages:
                jobs.add(("diversity", f"dataset={dataset}, method={method}"))
            if method == "gcd":
                jobs.add(("gcd_summary", f"dataset={dataset}, method={method}"))
                if "explain" in stages:
                    jobs.add(("gcd_globality", f"dataset={dataset}, method={method}"))
    return jobs


ALL_STAGES = ("directions", "explain", "metrics")


ALL_JOBS = {
    ("prepare_data", "dataset=ellipses"),
    ("prepare_data", "dataset=attributes"),
    ("train_supervised", "dataset=ellipses, name=classifier"),
    ("train_supervised", "dataset=ellipses, name=regressor_aspect"),
    ("train_supervised", "dataset=ellipses, name=regressor_area"),
    ("train_supervised", "dataset=ellipses, name=hit"),
    ("train_supervised", "dataset=ellipses, name=vit"),
    ("train_supervised", "dataset=attributes, name=classifier"),
    ("train_supervised", "dataset=attributes, name=oracle"),
    ("train_encoder", "dataset=ellipses, name=encoder"),
    ("train_encoder", "dataset=attributes, name=encoder"),
    ("train_ddpm", "dataset=ellipses, name=ddpm"),
    ("evaluate_ddpm", "dataset=ellipses, name=ddpm"),
    ("train_ddpm", "dataset=attributes, name=ddpm"),
    ("evaluate_ddpm", "dataset=attributes, name=ddpm"),
    ("train_diffae", "dataset=ellipses, name=diffae"),
    ("encode_diffae", "dataset=ellipses, name=diffae"),
    ("train_t2i", "dataset=ellipses, name=t2i"),
    ("distill", "dataset=ellipses, tokens=tokens"),
    ("distill", "dataset=ellipses, tokens=tokens_single"),
}


def attribution_jobs(
    baseline_datasets=DATASETS, stages=("maps", "metrics"), datasets=DATASETS, baselines=BASELINES
):
    """Maps and metrics of FreeMCG (every dataset) and the baselines (``baseline_datasets``)."""
    jobs = set()
    for dataset in datasets:
        names = ["freemcg_map"] + (list(baselines) if dataset in baseline_datasets else [])
        for name in names:
            keys = f"dataset={dataset}, attribution={name}"
            if "maps" in stages:
                jobs.add(("attribute", keys))
            jobs.add(("attribution_metrics", keys))
    return jobs


TRANSFORMER_MAPS = ("hit", "hit_gradcam", "hit_rollout", "vit_gradcam", "vit_rollout")  # ellipses only


def hit_jobs(stages=("maps", "metrics", "summary")):
    """HiT's maps, the maps of GradCAM and rollout on the HiT and the ViT, and the HiT summary."""
    jobs = set()
    for name in TRANSFORMER_MAPS:
        keys = f"dataset=ellipses, attribution={name}"
        if "maps" in stages:
            jobs.add(("attribute", keys))
        if "metrics" in stages:
            jobs.add(("attribution_metrics", keys))
    if "summary" in stages:
        jobs.add(("hit_summary", "dataset=ellipses, analysis=hit"))
    return jobs


def ablation_jobs(preset, ablations=("freemcg_table4", "time_grid", "time_tables")):
    jobs = set()
    for ablation in ablations:
        keys = f"dataset=ellipses, ablation={ablation}"
        jobs |= {("ablation_point", f"{keys}, setting={s}") for s in ABLATION_POINTS[ablation, preset]}
        jobs.add(("ablation_table", keys))
    return jobs


SAMPLED_FEATURES = ("aspect_ratio", "size", "ellipse", "plain")  # ellipse_features; plain = coverage baseline


def variance_jobs(features=SAMPLED_FEATURES, datasets=DATASETS):
    """Constrained samples of ``features`` and the scores of the variance analyses on ``datasets``."""
    jobs = {
        ("variance_sample", f"dataset=ellipses, variance=ellipse_features, feature={feature}")
        for feature in features
    }
    analyses = {"ellipses": "ellipse_features", "attributes": "attribute_features"}
    return jobs | {("variance_scores", f"dataset={d}, variance={analyses[d]}") for d in datasets}


REPORT_JOBS = {("aggregate", ""), ("report_figures", "")}  # every metric change reaches the report

DEFAULT_JOBS = (
    ALL_JOBS
    | explanation_jobs(stages=ALL_STAGES, runs=DEFAULT_RUNS)
    | attribution_jobs()
    | hit_jobs()
    | ablation_jobs("default")
    | variance_jobs()
    | REPORT_JOBS
)
TINY_JOBS = (
    ALL_JOBS
    | explanation_jobs(stages=ALL_STAGES)
    | attribution_jobs(baseline_datasets=("ellipses",))
    | hit_jobs()
    | ablation_jobs("tiny")
    | variance_jobs()
    | REPORT_JOBS
)


@pytest.mark.parametrize(("preset", "expected"), [(None, DEFAULT_JOBS), ("tiny", TINY_JOBS)])
def test_dry_run_lists_the_whole_dag(tmp_path, preset, expected):
    result = snakemake(tmp_path, "-n", preset=preset)
    assert result.returncode == 0, result.stderr
    assert planned_jobs(result.stdout + result.stderr) == expected


def test_a_config_file_of_ones_own_is_the_whole_config(tmp_path):
    """Named config files replace config.yaml (an overlay names it first): a user's standalone
    config plans its own jobs only, none of the default's datasets or methods."""
    own = {
        "results": str(tmp_path / "results"),
        "datasets": {"shapes": {"kind": "ellipses", "image_size": 16, "n_images": 50}},
        "models": {"classifier": {"kind": "classifier", "arch": "simple_cnn"}},
        "attributions": {"gradient": {"method": "gradient", "n_images": 4}},
    }
    command = [SNAKEMAKE, "-n", "--cores", "1", "--configfile", str(write_overlay(tmp_path, own))]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)  # where config.yaml is
    assert result.returncode == 0, result.stderr
    planned = planned_jobs(result.stdout + result.stderr)
    assert {rule for rule, _ in planned} == {
        "prepare_data", "train_supervised", "attribute", "attribution_metrics", "aggregate", "report_figures"
    }  # fmt: skip
    assert all("ellipses" not in wildcards and "attributes" not in wildcards for _, wildcards in planned)
    assert ("attribute", "dataset=shapes, attribution=gradient") in planned


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
            assert set(metrics["ks"]) == ({"log_aspect_ratio", "area"} if dataset == "ellipses" else set())
            assert metrics["nfe"] == 16 * 5
            assert (directory / "samples.png").stat().st_size > 0
            # hflip: auto flips the mirror-symmetric ellipses, not the one-sided attributes
            assert info["provenance"]["config"]["train"]["hflip"] is (dataset == "ellipses")
        elif info["kind"] == "t2i":
            ids = module.token_ids(["a small round ellipse, left"] * 4)
            assert module(images, torch.tensor([10] * 4), ids).shape == images.shape
            assert set(metrics["prompt_check"]) == set(train_t2i.CHECK_PROMPTS)
        elif info["kind"] == "diffae":
            z_sem = module.encode_semantic(images)
            assert z_sem.shape == (4, 8)  # tiny preset latent_dim
            assert module(images, torch.tensor([10] * 4), z_sem).shape == images.shape
            reconstruction = metrics["reconstruction"]["same_steps"]
            assert reconstruction["decode_steps"] == 5 and np.isfinite(reconstruction["mse"])
        elif info["kind"] == "encoder":
            assert torch.isfinite(module(images)).all()
            assert 0 <= metrics["test"]["feature_spread"] <= 1.5
        else:
            assert torch.isfinite(module(images)).all()
            assert metrics["n_test"] if "n_test" in metrics else metrics["test"]


@pytest.mark.slow
def test_tiny_run_writes_a_log_and_benchmark_per_job(tiny_run):
    logs = sorted((tiny_run / "results/tiny/logs").rglob("*.log"))
    benchmarks = sorted((tiny_run / "results/tiny/benchmarks").rglob("*.tsv"))
    assert len(logs) == len(TINY_JOBS)
    assert len(benchmarks) == len(TINY_JOBS)
    assert all(log.stat().st_size > 0 for log in logs)


@pytest.mark.slow
def test_unchanged_second_run_does_nothing(tiny_run):
    result = snakemake(tiny_run, "-n")
    assert result.returncode == 0
    assert planned_jobs(result.stdout + result.stderr) == set()
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.slow
def test_settings_that_change_no_result_rerun_nothing(tiny_run):
    """How often a diffusion model checkpoints, a default written out (its key now after the
    others in the YAML), and settings that only another method reads (DiME's perceptual
    network on ACE and FreeMCG, FreeMCG's particle cache on RISE) leave every job as it is."""
    unread_perceptual = {"perceptual": {"network": "encoder", "arch": "vgg16"}}
    overlay = {
        "models": {name: {"train": {"checkpoint_every": 3}} for name in ("ddpm", "diffae", "t2i")}
        | {"classifier": {"train": {"weight_decay": 0.0}}},
        "explanations": {"ace_l1": unread_perceptual, "freemcg": unread_perceptual},
        "attributions": {"rise": {"cache_particles": True}},
    }
    result = snakemake(tiny_run, "-n", configfiles=[write_overlay(tiny_run, overlay)])
    assert result.returncode == 0, result.stderr
    assert planned_jobs(result.stdout + result.stderr) == set()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overlay", "expected"),
    [
        pytest.param(
            {"models": {"regressor_area": {"train": {"lr": 0.002}}}},
            {
                ("train_supervised", "dataset=ellipses, name=regressor_area"),
                ("evaluate_ddpm", "dataset=ellipses, name=ddpm"),
            }
            | explanation_jobs(datasets=["ellipses"], stages=("metrics",))
            | {("gcd_globality", "dataset=ellipses, method=gcd")}  # measures with the regressors
            | variance_jobs(features=["size"], datasets=["ellipses"]),
            id="regressor-reruns-itself-ddpm-evaluation-cf-metrics-gcd-summary-and-its-variance-feature",
        ),
        pytest.param(
            {"models": {"ddpm": {"train": {"steps": 21}}}},
            {(rule, f"dataset={d}, name=ddpm") for rule in ("train_ddpm", "evaluate_ddpm") for d in DATASETS}
            | explanation_jobs(methods=("dime", "ace_l1", "freemcg"))
            | attribution_jobs(baseline_datasets=())
            | ablation_jobs("tiny", ["freemcg_table4"])
            | variance_jobs(datasets=["ellipses"]),
            id="ddpm-training-reruns-ddpm-explanations-freemcg-maps-ablation-and-variance-samples",
        ),
        pytest.param(
            {"models": {"ddpm": {"evaluation": {"samples": 8}}}},
            {("evaluate_ddpm", f"dataset={d}, name=ddpm") for d in DATASETS},
            id="ddpm-evaluation-does-not-retrain",
        ),
        pytest.param(
            {"datasets": {"attributes": {"n_images": 310}}},
            {
                ("prepare_data", "dataset=attributes"),
                ("train_supervised", "dataset=attributes, name=classifier"),
                ("train_supervised", "dataset=attributes, name=oracle"),
                ("train_encoder", "dataset=attributes, name=encoder"),
                ("train_ddpm", "dataset=attributes, name=ddpm"),
                ("evaluate_ddpm", "dataset=attributes, name=ddpm"),
            }
            | explanation_jobs(datasets=["attributes"], stages=ALL_STAGES)
            | attribution_jobs(baseline_datasets=(), datasets=["attributes"])
            | variance_jobs(features=(), datasets=["attributes"]),
            id="dataset-change-reruns-its-chain-only",
        ),
        pytest.param(
            {"attributions": {"rise": {"params": {"masks": 40}}}},
            attribution_jobs(baseline_datasets=("ellipses",), baselines=["rise"])
            - attribution_jobs(baseline_datasets=()),
            id="attribution-parameter-reruns-that-attribution-only",
        ),
        pytest.param(
            {"attribution_metrics": {"curve_steps": 5}},
            attribution_jobs(baseline_datasets=("ellipses",), stages=("metrics",))
            | hit_jobs(stages=("metrics", "summary")),
            id="attribution-metric-setting-reruns-attribution-metrics-and-hit-summary-only",
        ),
        pytest.param(
            {"models": {"hit": {"arch_params": {"depth": 3}}}},
            {("train_supervised", "dataset=ellipses, name=hit")}
            | {job for job in hit_jobs() if "vit_" not in job[1]},
            id="hit-architecture-retrains-hit-and-reruns-its-maps-not-the-vits",
        ),
        pytest.param(
            {"interpretable": {"hit": {"n_images": 8}}},
            hit_jobs(stages=("summary",)),
            id="hit-analysis-setting-reruns-the-summary-only",
        ),
        pytest.param(
            {"ablations": {"freemcg_table4": {"n_images": 5}}},
            ablation_jobs("tiny", ["freemcg_table4"]),
            id="ablation-setting-reruns-the-ablation-only",
        ),
        pytest.param(
            {"explanations": {"ace_l1": {"params": {"threshold": 0.2}}}},
            explanation_jobs(methods=["ace_l1"]),
            id="method-parameter-reruns-that-method-only",
        ),
        pytest.param(
            {"explanations": {"dime": {"perceptual": {"arch": "vgg16"}}}},
            explanation_jobs(methods=["dime"]),
            id="dime-perceptual-network-reruns-dime-only",
        ),
        pytest.param(
            {"attributions": {"freemcg_map": {"cache_particles": True}}},
            attribution_jobs(baseline_datasets=()),
            id="freemcg-particle-cache-reruns-the-freemcg-maps-only",
        ),
        pytest.param(
            {"explanations": {"gcd": {"params": {"alpha_max": 6.0}}}},
            explanation_jobs(methods=["gcd"]),
            id="gcd-line-search-reruns-its-ces-not-its-directions",
        ),
        pytest.param(
            {"explanations": {"gcd": {"params": {"radius": 1.5}}}},
            explanation_jobs(methods=["gcd"], stages=ALL_STAGES),
            id="gcd-direction-parameter-reruns-directions-and-ces",
        ),
        pytest.param(
            {"models": {"diffae": {"latents": {"encode_steps": 4}}}},
            {("encode_diffae", "dataset=ellipses, name=diffae")}
            | explanation_jobs(methods=["gcd"], stages=ALL_STAGES),
            id="diffae-latents-reencode-without-retraining",
        ),
        pytest.param(
            {"distill": {"tokens": {"classes": {"steps": 6}}}},
            {("distill", "dataset=ellipses, tokens=tokens")}
            | explanation_jobs(methods=["time"])
            | ablation_jobs("tiny", ["time_grid", "time_tables"]),
            id="distill-setting-redistils-and-reruns-time-not-the-t2i-model",
        ),
        pytest.param(
            {"explanations": {"time": {"params": {"p": 0.9}}}},
            explanation_jobs(methods=["time"]) | ablation_jobs("tiny", ["time_grid", "time_tables"]),
            id="time-parameter-reruns-time-and-its-ablation",
        ),
        pytest.param(
            {"variance": {"ellipse_features": {"sampling": {"rho": 0.3}}}},
            variance_jobs(features=["aspect_ratio", "size"], datasets=["ellipses"]),
            id="variance-guidance-resamples-the-continuous-features-only",
        ),
        pytest.param(
            {"variance": {"ellipse_features": {"bootstrap": 40}}},
            variance_jobs(features=(), datasets=["ellipses"]),
            id="variance-bootstrap-recomputes-the-scores-only",
        ),
        pytest.param(
            {"counterfactual_metrics": {"cout_steps": 12}},
            explanation_jobs(stages=("metrics",)),
            id="metric-setting-reruns-metrics-only",
        ),
    ],
)
def test_a_changed_parameter_reruns_only_its_jobs_and_dependents(tiny_run, overlay, expected):
    result = snakemake(tiny_run, "-n", configfiles=[write_overlay(tiny_run, overlay)])
    assert result.returncode == 0, result.stderr
    assert planned_jobs(result.stdout + result.stderr) == expected | REPORT_JOBS


@pytest.mark.slow
@pytest.mark.parametrize("dataset", DATASETS)
def test_tiny_run_writes_explanations_and_their_metrics(tiny_run, dataset):
    root = tiny_run / "results/tiny" / dataset
    data = PreparedData(root / "data.zarr")
    expected_ids = data.indices("test")[:8]
    for method in ("dime", "ace_l1"):  # FreeMCG: its own test below
        store = open_store(root / method / "run0" / "explanations.zarr", kind="explanations")
        assert np.array_equal(store.read("sample_ids"), expected_ids)
        cfs = store.read("counterfactuals")
        assert cfs.shape == (8, data.channels, 16, 16)
        assert np.abs(cfs).max() <= 1
        success = store.read("logits_after").argmax(1) == store.read("targets")
        assert np.array_equal(store.read("success"), success)
        assert np.all(store.read("targets") != store.read("sources"))
        params = store.attrs["params"]
        if method == "dime":  # tiny preset: steps 10, tau 3; NFE per lambda_c attempt tau(tau+1)/2
            attempts = 1 + (
                ~np.isnan(store.read("flip_lambda_c")) & (store.read("flip_lambda_c") > 8)
            ).astype(int)
            failed = np.isnan(store.read("flip_lambda_c"))
            attempts[failed] = len(params["lambda_c"])
            assert np.array_equal(store.read("nfe"), attempts * 6)
        else:  # tiny preset: tau 2, 3 attack steps: 3*2 forward+backward, 2 refinement
            assert np.all(store.read("nfe_backward") == 6)
            assert np.all(store.read("nfe") == 8)
            assert set(np.unique(store.read("masks"))) <= {0, 1}
        assert len(store.attrs["shard_provenance"]) == SHARDS
        metrics = json.loads((root / method / "run0" / "metrics.json").read_text())
        assert metrics["n"] == 8
        assert metrics["flip_rate"] == pytest.approx(success.mean())
        assert metrics["nfe"] == pytest.approx(store.read("nfe").mean())
        assert metrics["feature_space"] == "simsiam-encoder"
        if dataset == "attributes":
            assert "mnac" in metrics
        else:
            assert set(metrics["factor_changes"]) == {"log_aspect_ratio", "area"}
        rows = (root / method / "run0" / "metrics.csv").read_text().splitlines()
        assert rows[0] == "dataset,classifier,method,run,metric,value,n,provenance"
        assert any(row.startswith(f"{dataset},classifier,{method},run0,flip_rate,") for row in rows)
        (l1_row,) = [row for row in rows if row.startswith(f"{dataset},classifier,{method},run0,l1,")]
        assert l1_row.split(",")[6] == str(metrics["n_successful"]) == str(metrics["n_of"]["l1"])
    diversity = json.loads((root / "dime" / "diversity.json").read_text())
    assert diversity["runs"] == 2 and diversity["sigma_l"] > 0
    assert len(diversity["provenance"]["explanations_config_hash"]) == 16  # what the runs explained with


@pytest.mark.slow
@pytest.mark.parametrize("dataset", DATASETS)
def test_tiny_run_writes_attribution_maps_and_their_metrics(tiny_run, dataset):
    root = tiny_run / "results/tiny" / dataset
    expected_ids = PreparedData(root / "data.zarr").indices("test")[:4]
    names = ["freemcg_map", *BASELINES] if dataset == "ellipses" else ["freemcg_map"]
    for name in names:
        store = open_store(root / "attributions" / name / "maps.zarr", kind="attributions")
        assert np.array_equal(store.read("sample_ids"), expected_ids)
        maps = store.read("maps")
        assert maps.shape == (4, 16, 16) and np.isfinite(maps).all()
        assert np.abs(maps).max() > 0
        metrics = json.loads((root / "attributions" / name / "metrics.json").read_text())
        assert metrics["n"] == 4 and metrics["sensitivity_n"] == 2 and metrics["randomisation_n"] == 2
        assert len(metrics["road_morf_curve"]) == 2  # tiny preset: two ROAD fractions
        assert 0 <= metrics["insertion_auc_zero"] <= 1 and metrics["avg_sensitivity"] >= 0
        assert len(metrics["randomisation_spearman_curve"]) == len(metrics["randomisation_layers"]) > 0
        defined = metrics["randomisation_defined_n"]
        assert metrics["n_of"]["randomisation_spearman_all_layers"] == defined[-1] <= 2
        assert metrics["n_of"]["complexity"] == metrics["complexity_n"] == 4  # no all-zero map
        if name == "freemcg_map":  # tiny preset: 2 timesteps x 4 particles
            assert np.all(store.read("nfe") == 8) and np.all(store.read("classifier_calls") == 8)
        else:
            assert np.all(store.read("nfe") == 0) and np.all(store.read("classifier_calls") >= 1)
        if dataset == "ellipses":
            assert 0 <= metrics["mask_auroc"] <= 1 and metrics["ground_truth_n"] == 4
        rows = (root / "attributions" / name / "metrics.csv").read_text().splitlines()
        assert any(row.startswith(f"{dataset},classifier,{name},maps,deletion_auc_blur,") for row in rows)
        (sensitivity,) = [row for row in rows if f",{name},maps,avg_sensitivity," in row]
        assert sensitivity.split(",")[6] == "2"  # the first sensitivity_n images, not n


@pytest.mark.slow
def test_tiny_run_writes_hit_maps_layer_contributions_and_the_hit_summary(tiny_run):
    root = tiny_run / "results/tiny/ellipses"
    hit, _ = load_model(root / "models" / "hit")
    store = open_store(root / "attributions" / "hit" / "maps.zarr", kind="attributions")
    maps, layers = store.read("maps"), store.read("layer_contributions")
    assert layers.shape == (4, 2)  # tiny preset: depth 2
    np.testing.assert_allclose(layers.sum(1), maps.sum(axis=(1, 2)), atol=1e-4)
    images = torch.from_numpy(PreparedData(root / "data.zarr").array("images")[store.read("sample_ids")])
    with torch.no_grad():
        logits = hit(images.float() / 127.5 - 1)  # the maps sum to the logit of the mapped class
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), logits[np.arange(4), store.read("targets")], atol=1e-4)
    summary = json.loads((root / "interpretable" / "hit" / "summary.json").read_text())
    assert summary["n_images"] == 16 and len(summary["layer_saliency"]) == 2
    assert {"hit", "baseline", "gap_baseline_minus_hit"} <= set(summary["accuracy"])
    for mode in ("decomposition", "forward"):
        assert len(summary["layer_removal"][mode]["cumulative_removed_most_salient_first"]) == 3
    rows = {row["attribution"] for row in summary["faithfulness"]}
    assert rows == {"hit", "hit_gradcam", "hit_rollout", "vit_gradcam", "vit_rollout"}
    assert "hit.insertion_nauc_zero" in summary["hit_vs_posthoc"]
    table = (root / "interpretable" / "hit" / "table.md").read_text()
    assert table.count("\n| ") == 6  # header + five attributions
    for name, absolute in (("hit", False), ("hit_gradcam", True)):  # HiT's signed maps rank signed
        metrics = json.loads((root / "attributions" / name / "metrics.json").read_text())
        assert metrics["provenance"]["config"]["absolute"] is absolute


@pytest.mark.slow
def test_tiny_run_distils_tokens_and_writes_time_counterfactuals(tiny_run):
    root = tiny_run / "results/tiny/ellipses"
    index = json.loads((root / "tokens" / "tokens" / "tokens.json").read_text())
    assert index["context"] == ["<context_0>", "<context_1>"]  # tiny preset: 2 tokens per concept
    assert index["classes"] == {"0": ["<class0_0>", "<class0_1>"], "1": ["<class1_0>", "<class1_1>"]}
    assert index["classifier_queries"] == 64  # max_images, each queried once for its label
    store = open_store(root / "time" / "run0" / "explanations.zarr", kind="explanations")
    attempt, nfe = store.read("attempt"), store.read("nfe")
    # tiny preset attempts (tau, w) = (2, 1), (3, 2): 8 tau UNet rows per attempt tried
    assert np.array_equal(nfe, np.where(attempt == 0, 16, 40))
    assert np.array_equal(store.read("classifier_calls"), np.where(attempt == 0, 2, 3))
    assert np.all(store.read("classifier_gradients") == 0) and np.all(store.read("nfe_backward") == 0)
    table = (root / "ablations" / "time_tables" / "table.md").read_text()
    assert "| guidance | context | flip rate ↑ |" in table
    assert "| cfg | True |" in table and "| negative | False |" in table  # the other at its base value
    grid = (root / "ablations" / "time_grid" / "table.csv").read_text().splitlines()
    assert [row.split(",")[:3] for row in grid[1:]] == [
        ["tau=2+w=1", "2", "1"], ["tau=2+w=2", "2", "2"], ["tau=3+w=1", "3", "1"], ["tau=3+w=2", "3", "2"]
    ]  # fmt: skip
    # one attempt per image: 8 UNet evaluations per EDICT step (4 inverting, 4 denoising) x tau
    assert [float(row.split(",")[6]) for row in grid[1:]] == [16, 16, 24, 24]
    assert (
        "## flip rate ↑\n\n| tau | w=1 | w=2 |" in (root / "ablations" / "time_grid" / "table.md").read_text()
    )


@pytest.mark.slow
def test_tiny_run_writes_freemcg_counterfactuals_and_the_ablation_table(tiny_run):
    root = tiny_run / "results/tiny/ellipses"
    store = open_store(root / "freemcg" / "run0" / "explanations.zarr", kind="explanations")
    # tiny preset: 3 DDIM steps x (4 particles + 1); queries: particles, input, CE, particle mean
    assert np.all(store.read("nfe") == 15) and np.all(store.read("classifier_calls") == 15)
    assert np.all(store.read("classifier_gradients") == 0) and np.all(store.read("nfe_backward") == 0)
    assert store.read("particle_mean").shape == (8, 1, 16, 16)
    metrics = json.loads((root / "freemcg" / "run0" / "metrics.json").read_text())
    assert metrics["particle_mean_flip_rate"] == pytest.approx(store.read("particle_mean_success").mean())
    table = (root / "ablations" / "freemcg_table4" / "table.csv").read_text().splitlines()
    assert table[0] == (
        "setting,particles,t_start,beta,flip_rate,l2,fid,nfe,classifier_calls,seconds_per_ce,n,n_successful"
    )
    for row in csv.DictReader(table):
        assert int(row["n_successful"]) == round(float(row["flip_rate"]) * int(row["n"]))
    assert [row.split(",")[0] for row in table[1:]] == [
        "particles=2",
        "particles=4",
        "t_start=0.3",
        "beta=0.0",
    ]
    assert table[1].split(",")[1] == "2" and table[3].split(",")[2] == "0.3"
    nfe = [float(row.split(",")[7]) for row in table[1:]]
    assert nfe == [3 * 3, 3 * 5, 3 * 5, 3 * 5]  # 3 steps x (particles + 1); the base has 4 particles
    assert (root / "ablations" / "freemcg_table4" / "table.md").read_text().startswith("# freemcg_table4")


@pytest.mark.slow
def test_tiny_run_writes_gcd_latents_directions_counterfactuals_and_summary(tiny_run):
    root = tiny_run / "results/tiny/ellipses"
    data = PreparedData(root / "data.zarr")
    latents = open_store(root / "models" / "diffae" / "latents.zarr", kind="latents")
    assert np.array_equal(latents.read("sample_ids"), data.indices("test")[:8])
    assert latents.read("z_sem").shape == (8, 8) and latents.read("z_t").shape == (8, 1, 16, 16)
    assert latents.read("z_std").shape == (8,) and np.all(latents.read("z_std") > 0)
    sources = set()
    for run in ("run0", "run1"):
        directions = open_store(root / "gcd" / run / "directions.zarr", kind="gcd_directions")
        assert directions.read("proxy_u").shape == (32, 8) and directions.read("proxy_f").shape == (32,)
        # the default score, log-odds, is unbounded; discovery keeps the samples that decoded finitely only
        assert directions.attrs["params"]["score"] == "log_odds"
        assert np.all(np.isfinite(directions.read("proxy_f")))
        g, h = directions.read("g"), directions.read("h")
        assert np.linalg.norm(g) == pytest.approx(1, abs=1e-5)
        assert h.shape == (4, 8) and np.allclose(h @ h.T, np.eye(4), atol=1e-5)
        # tiny preset: 32 proxy samples x 3 decode steps
        assert directions.attrs["nfe"] == 96 and directions.attrs["queries"] == 33
        sources.add(directions.attrs["source_id"])
        assert directions.attrs["source_id"] in set(data.indices("val").tolist())
        store = open_store(root / "gcd" / run / "explanations.zarr", kind="explanations")
        # encode 5 + 2 sides x (4 alphas + the start) x 3 decode steps; queries: input + 2 x 5 points
        assert np.all(store.read("nfe") == 35) and np.all(store.read("classifier_calls") == 11)
        assert np.all(store.read("classifier_gradients") == 0) and np.all(store.read("nfe_backward") == 0)
        assert store.read("bb_lig").shape == (8, 16, 16)
        assert np.all(np.isin(np.abs(store.read("alpha")), np.linspace(0, 4, 5)[1:]))
    assert len(sources) == 2  # one source image per run
    summary = json.loads((root / "gcd" / "gcd_summary.json").read_text())
    assert [run["source_id"] for run in summary["sources"]["runs"]] == [
        open_store(root / "gcd" / r / "directions.zarr").attrs["source_id"] for r in ("run0", "run1")
    ]
    assert summary["sources"]["across_runs"]["flip_rate"]["n_runs"] == 2
    globality = json.loads((root / "gcd" / "gcd_globality.json").read_text())  # its own job's record
    assert summary["globality"] == {k: v for k, v in globality.items() if k != "provenance"}
    assert summary["provenance"]["globality_config_hash"] == globality["provenance"]["config_hash"]
    assert list(summary["globality"]["flip_rate"]) == ["g", "h1", "h2", "h3", "h4"]
    top, others = summary["globality"]["top3_h"], summary["globality"]["others_combined"]["directions"]
    assert len(top) == 3 and sorted(top + others) == ["h1", "h2", "h3", "h4"]
    changes = summary["globality"]["factor_changes"]  # what each direction's flipped CEs change
    assert set(changes) == set(summary["globality"]["flip_rate"])
    for name, rate in summary["globality"]["flip_rate"].items():
        assert set(changes[name]) == ({"log_aspect_ratio", "area"} if rate > 0 else set())
        assert all(change["mean_abs_change_in_std"] >= 0 for change in changes[name].values())
    assert 0 <= summary["attribution"]["bb_lig"]["mask_auroc"] <= 1
    assert summary["n_of"]["globality"] == summary["globality"]["n_images"]
    assert (
        summary["n_of"]["sources"] == 2
        and summary["n_of"]["attribution"] == summary["attribution"]["region_present"]
    )
    assert summary["efficiency"]["published_discovery_nfe"] == 250 + 25600 * 100
    rows = (root / "gcd" / "gcd_summary.csv").read_text().splitlines()
    assert any(row.startswith("ellipses,classifier,gcd,all,flip_rate_mean_over_sources,") for row in rows)


@pytest.mark.slow
def test_tiny_run_writes_constrained_samples_and_variance_scores(tiny_run):
    root = tiny_run / "results/tiny/ellipses"
    folder = root / "variance" / "ellipse_features"
    data = PreparedData(root / "data.zarr")
    regressor, _ = load_model(root / "models" / "regressor_aspect")
    store = open_store(folder / "aspect_ratio" / "samples.zarr", kind="variance_samples")
    assert np.array_equal(store.read("value_index"), np.repeat(np.arange(3), 4))  # tiny: 3 values x 4
    sources = store.read("source_index")
    assert set(sources.tolist()) <= set(data.indices("test").tolist())
    with torch.no_grad():  # targets are the regressor's values of the drawn test images ...
        source_values = regressor(torch.from_numpy(data.array("images")[sources]).float() / 127.5 - 1)
        measured = regressor(torch.from_numpy(store.read("images")).float() / 127.5 - 1)
    np.testing.assert_allclose(store.read("target"), source_values.numpy(), atol=1e-5)
    np.testing.assert_allclose(
        store.read("measured"), measured.numpy(), atol=1e-5
    )  # ... measured on the stored images
    std = store.attrs["summary"]["feature_std"]
    tolerance = store.attrs["sampling"]["tolerance"] * std
    tolerance = np.abs(store.read("measured") - store.read("target")) <= tolerance
    assert np.array_equal(store.read("accepted").astype(bool), tolerance)
    region = open_store(folder / "ellipse" / "samples.zarr", kind="variance_samples")
    masks = torch.from_numpy(data.array("masks")[region.read("source_index"), :1]).float()
    kept = torch.nn.functional.max_pool2d(masks, 5, stride=1, padding=2).bool().numpy()  # dilation 2
    assert np.array_equal(
        region.read("images")[kept], data.array("images")[region.read("source_index")][kept]
    )
    assert region.attrs["summary"]["nfe"] == 12 * 3 and np.all(region.read("accepted") == 1)
    scores = json.loads((folder / "scores.json").read_text())["features"]
    assert set(scores) == {"aspect_ratio", "size", "ellipse"}
    for result in scores.values():
        assert result["values_drawn"] == 3 and sum(result["accepted_per_value"]) <= 12
        if sum(result["accepted_per_value"]):
            assert set(result["coverage"]["samples"]) == {"1", "2"}
        else:  # the constraint failed for every sample: undefined, with the reason
            assert "tolerance" in result["scores"]["class"]["undefined"]
    assert sum(scores["ellipse"]["accepted_per_value"]) == 12
    value_index = store.read("value_index")
    counts = np.bincount(value_index[store.read("accepted") == 1], minlength=3)
    scored = (store.read("accepted") == 1) & (counts >= 2)[value_index]  # tiny: min_accepted 2
    assert scores["aspect_ratio"]["accepted_per_value"] == counts[counts >= 2].tolist()
    assert scores["aspect_ratio"]["values_dropped"] == int(np.sum(counts == 1))
    predictions = open_store(folder / "predictions.zarr", kind="variance_predictions")
    rows = predictions.read("aspect_ratio_rows")
    assert np.array_equal(rows, np.flatnonzero(scored))
    assert np.array_equal(predictions.read("aspect_ratio_value_index"), store.read("value_index")[rows])
    classifier, _ = load_model(root / "models" / "classifier")
    if len(rows):
        with torch.no_grad():
            logits = classifier(torch.from_numpy(store.read("images")[rows]).float() / 127.5 - 1)
        np.testing.assert_allclose(
            predictions.read("aspect_ratio_probabilities"), logits.softmax(1).numpy(), atol=1e-5
        )
    table = (folder / "table.md").read_text()
    assert table.count("\n| ") == 4  # header + three features
    for figure in ("local_scores.png", "constraint.png", "samples.png"):
        assert (folder / figure).stat().st_size > 1000
    attributes = json.loads(
        (tiny_run / "results/tiny/attributes/variance/attribute_features/scores.json").read_text()
    )
    for result in attributes["features"].values():
        counts = np.array(result["counts"])
        assert counts.sum() == attributes["n_test"]
        class_scores = result["scores"]["class"]
        if class_scores["global_score"] is not None:  # the mass-weighted local scores average to the global
            average = (counts / counts.sum()) @ np.array(class_scores["local_scores"])
            assert average == pytest.approx(class_scores["global_score"], abs=1e-9)
        assert set(result["cace"]) == {"0", "1"}
        assert result["cace"]["0"] == pytest.approx(-result["cace"]["1"], abs=1e-9)  # probabilities sum to 1


def chromium() -> str:
    """A headless Chromium: on PATH, or installed from Debian when this is a root Debian machine."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("no Chromium, and installing one needs root and apt-get")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, env=environment)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"],
        check=True, capture_output=True, env=environment,
    )  # fmt: skip
    return shutil.which("chromium")


@pytest.mark.slow
def test_tiny_run_writes_the_report_and_its_html_renders(tiny_run):
    report = tiny_run / "results/tiny/report"
    frame = pd.read_csv(report / "metrics.csv")
    assert list(frame.columns) == [
        "dataset",
        "classifier",
        "kind",
        "method",
        "setting",
        "metric",
        "value",
        "n",
        "provenance",
    ]
    methods = set(frame["method"])
    assert set(EXPLANATIONS) | set(TRANSFORMER_MAPS) | {"ellipse_features", "attribute_features"} <= methods
    assert frame["provenance"].str.fullmatch(r"[0-9a-f]{12}").all()
    tables = json.loads((report / "tables" / "index.json").read_text())["tables"]
    for dataset in DATASETS:
        assert f"counterfactuals_{dataset}_classifier" in tables
    markdown = (report / "tables.md").read_text()
    assert "## Counterfactuals: ellipses, classifier classifier" in markdown and "**" in markdown
    assert "| Δ log_aspect_ratio (std) ↑ | Δ area (std) ↓ |" in markdown  # the label's factor first
    figures = {path.name for path in (report / "figures").glob("*.png")}
    assert {f"ellipses_explanation_{name}.png" for name in EXPLANATIONS} <= figures
    assert {"ellipses_efficiency.png", "ellipses_variance_ellipse_features_local_scores.png"} <= figures
    html = tiny_run / "report.html"
    result = snakemake(tiny_run, "--report", str(html))
    assert result.returncode == 0, result.stderr[-3000:]
    text = html.read_text()
    for name in tables:  # every method table is in the self-contained report
        assert f"{name}.csv" in text
    assert '"Configuration": {' in text  # the category of report/config.yaml
    embedded = re.search(r"filename=config\.yaml;base64,([A-Za-z0-9+/=]+)", text)  # report() embeds base64
    config = yaml.safe_load(base64.b64decode(embedded[1]))
    assert config == yaml.safe_load((report / "config.yaml").read_text())
    assert config["results"] == "results/tiny" and config["report"] == {"n_images": 6}  # a default filled in
    header = pd.read_csv(report / "tables" / "counterfactuals_ellipses_classifier.csv", nrows=0).columns
    assert list(header[:2]) == ["counterfactual", "flip rate ↑"]
    screenshot = tiny_run / "report.png"
    subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={screenshot}", "--window-size=1280,900", "--virtual-time-budget=5000", html.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float32)
    assert pixels.std() > 10 and len(np.unique(pixels)) > 20  # rendered content, not a blank page


@pytest.mark.slow
def test_shard_count_does_not_change_results(tiny_run, tmp_path):
    from diffxai.jobs import explain
    from diffxai.jobs.gather_explanations import run as gather

    torch.set_num_threads(1)  # as the jobs ran: a different thread count changes float sums
    root = tiny_run / "results/tiny/ellipses"
    gathered = open_store(root / "dime" / "run0" / "explanations.zarr")
    spec = {**gathered.attrs["spec"], "shards": 1}
    spec["perceptual"] = {**spec["perceptual"], "encoder_dir": str(root / "models" / "encoder")}
    seed = gathered.attrs["shard_provenance"][0]["seed"]
    models = root / "models"
    one = explain.run(
        root / "data.zarr", models / "classifier", models / "ddpm", tmp_path / "0.zarr", spec, 0, seed, "cpu"
    )
    gather([one], tmp_path / "all.zarr", {"spec": spec})
    single = open_store(tmp_path / "all.zarr")
    for name in ("sample_ids", "counterfactuals", "nfe", "logits_after"):
        np.testing.assert_array_equal(single.read(name), gathered.read(name))


@pytest.mark.slow
def test_a_failing_shard_leaves_no_store_and_spares_the_others(tiny_run, tmp_path, monkeypatch):
    from diffxai.jobs import explain
    from diffxai.methods import registry
    from diffxai.methods.base import ExplanationError

    root = tiny_run / "results/tiny/ellipses"
    spec = {**open_store(root / "ace_l1" / "run0" / "explanations.zarr").attrs["spec"]}
    models = root / "models"

    def run_shard(shard):
        out = tmp_path / f"{shard}.zarr"
        explain.run(root / "data.zarr", models / "classifier", models / "ddpm", out, spec, shard, 0, "cpu")
        return out

    good = run_shard(0)
    bad_id = int(PreparedData(root / "data.zarr").indices("test")[6])  # in shard 1 (batches of 4)
    original = registry.explainer("ace")

    def failing(images, sample_ids, *args, **kwargs):
        if bad_id in sample_ids:
            raise ExplanationError(f"sample {bad_id}: classifier returned non-finite logits on the input")
        return original(images, sample_ids, *args, **kwargs)

    monkeypatch.setattr(explain, "explainer", lambda name: failing)
    with pytest.raises(ExplanationError, match=str(bad_id)):
        run_shard(1)
    assert not (tmp_path / "1.zarr").exists()
    assert not list(tmp_path.glob(".1.zarr.tmp-*"))
    assert open_store(good).n_samples == 4


def _job_inputs(dry_run_output: str) -> list[tuple[str, str, list[str]]]:
    """(rule, wildcards, inputs) of every job a dry run lists."""
    jobs: list[tuple[str, str, list[str]]] = []
    for line in dry_run_output.splitlines():
        stripped = line.strip()
        if stripped.startswith(("rule ", "localrule ")) and stripped.endswith(":"):
            jobs.append((stripped.split()[1].rstrip(":"), "", []))
        elif jobs and stripped.startswith("input: "):
            jobs[-1][2].extend(stripped.removeprefix("input: ").split(", "))
        elif jobs and stripped.startswith("wildcards: "):
            jobs[-1] = (jobs[-1][0], stripped.removeprefix("wildcards: "), jobs[-1][2])
    return jobs


def test_local_weights_and_checkpoints_named_in_the_config_are_inputs_of_the_jobs_that_read_them(tmp_path):
    """Replacing a checkpoint or a weights file must re-run what read it: each is an input."""
    files = {name: tmp_path / name for name in ("lpips.pth", "inception.pt", "vgg.pth")}
    for path in files.values():
        path.write_bytes(b"")
    (tmp_path / "area_model").mkdir()
    overlay = {
        "counterfactual_metrics": {
            "lpips_weights": str(files["lpips.pth"]),
            "inception_weights": str(files["inception.pt"]),
        },
        "explanations": {"dime": {"perceptual": {"network": "vgg", "weights": str(files["vgg.pth"])}}},
        "models": {"regressor_area": {"checkpoint": str(tmp_path / "area_model")}},
    }
    result = snakemake(tmp_path, "-n", configfiles=[write_overlay(tmp_path, overlay)])
    assert result.returncode == 0, result.stderr
    jobs = _job_inputs(result.stdout + result.stderr)
    lpips, inception, vgg = (str(files[name]) for name in ("lpips.pth", "inception.pt", "vgg.pth"))
    readers = {
        lpips: {"cf_metrics", "encode_diffae", "gcd_directions", "gcd_globality", "explain_shard:gcd"},
        inception: {"cf_metrics"},
        vgg: {"explain_shard:dime"},
        str(tmp_path / "area_model"): {"train_supervised:regressor_area"},
    }
    for path, expected in readers.items():
        found = set()
        for rule, wildcards, inputs in jobs:
            if path in inputs:
                method = next(
                    (p.split("=")[1] for p in wildcards.split(", ") if p.startswith(("method=", "name="))), ""
                )
                found.add(f"{rule}:{method}" if f"{rule}:{method}" in expected else rule)
        assert found == expected, path


def test_the_rules_that_only_merge_small_files_run_on_the_submitting_host():
    """Gathering shards, tables and figures: a cluster job each would wait in the queue for
    seconds of work (SNAKEMAKE.md: aggregation and plot rules are local)."""
    text = "\n".join(path.read_text() for path in sorted((REPO / "rules").glob("*.smk")))
    blocks = dict(re.findall(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", text, flags=re.S | re.M))
    local = {name for name, body in blocks.items() if re.search(r"^    localrule: True", body, flags=re.M)}
    assert {"gather_explanations", "ablation_table", "aggregate", "report_figures"} <= local
    assert not local & {"train_ddpm", "explain_shard", "cf_metrics", "attribute"}
