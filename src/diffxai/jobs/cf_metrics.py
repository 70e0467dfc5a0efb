"""Job ``cf_metrics``: the counterfactual metric suite of one run → metrics.json + CSV rows.

Validity (flip rate, BKL), proximity (ℓ1, ℓ2, LPIPS, S³ similarity, COUT), realism
(FID and sFID in the named feature space), oracle metrics (MNAC, Correlation
Difference) where the data has binary attributes, changes of ground-truth factors
measured by regressors, mask coverage of a ground-truth region (methods with masks),
and efficiency (NFE, classifier calls and gradients, seconds per CE). Following the
seeds, BKL, ℓ1/ℓ2, LPIPS, S³, MNAC, CD, FID and factor changes use the successful
CEs only; flip rate, COUT and efficiency use all of them.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diffxai.data.prepared import PreparedData
from diffxai.jobs.common import COUNTS_KEY, sample_count, write_json
from diffxai.jobs.gather_explanations import STORE_KIND
from diffxai.methods.dilation import dilation_size
from diffxai.metrics.counterfactual import bkl, cout, distances, factor_changes, similarity_s3
from diffxai.metrics.oracle import correlation_difference, label_correlations, mnac
from diffxai.metrics.perceptual import Lpips
from diffxai.metrics.realism import FeatureSpace, feature_space, fid, sfid
from diffxai.models.batched import batched_outputs
from diffxai.models.io import load_model
from diffxai.provenance import config_hash, provenance
from diffxai.store import open_store
from diffxai.training.supervised import to_m11

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.cf_metrics"]
# metrics of the successful CEs only (their n is n_successful); the others cover every input
SUCCESSFUL_ONLY = ("bkl", "l1", "l2", "lpips", "s3", "fid", "sfid", "mnac", "correlation_difference",
                   "cd_undefined", "factor_changes")  # fmt: skip
CSV_FIELDS = ["dataset", "classifier", "method", "run", "metric", "value", "n", "provenance"]


def query_attribute(data: PreparedData) -> int | None:
    """The attribute column that is the class label (binary tasks), if any."""
    if not data.attribute_names or data.num_classes != 2:
        return None
    labels = data.array("labels")
    attributes = data.array("attributes")
    matches = [j for j in range(attributes.shape[1]) if np.array_equal(attributes[:, j], labels)]
    return matches[0] if matches else None


def mask_coverage(masks: np.ndarray, region: np.ndarray, dilation: int) -> np.ndarray:
    """Fraction (N,) of each method mask (N, 1, H, W) inside the dilated region (N, H, W)."""
    region_t = torch.from_numpy(region.astype(np.float32))[:, None]
    pad = dilation // 2
    padded = nn.functional.pad(region_t, (pad, dilation - 1 - pad, pad, dilation - 1 - pad))
    dilated = nn.functional.max_pool2d(padded, dilation, 1).numpy() > 0
    inside = (masks.astype(bool) & dilated).reshape(len(masks), -1).sum(1)
    total = masks.astype(bool).reshape(len(masks), -1).sum(1)
    return np.where(total > 0, inside / np.maximum(total, 1), np.nan)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _oracle_metrics(oracle_dir: str, data: PreparedData, x, cf, device) -> dict[str, Any]:
    oracle, _ = load_model(oracle_dir)
    oracle = oracle.to(device).eval()
    before, after = (batched_outputs(oracle, images, device).numpy() > 0 for images in (x, cf))
    query = query_attribute(data)
    exclude = [] if query is None else [query]
    result: dict[str, Any] = {"mnac": mnac(before, after, exclude), "oracle_attributes": data.attribute_names}
    if query is not None and len(x) > 1:
        train_labels = data.array("attributes")[data.indices("train")]
        cd = correlation_difference(before, after, label_correlations(train_labels), query)
        result.update(correlation_difference=cd["cd"], cd_undefined=cd["undefined"])
    return result


def factor_metrics(regressor_dirs: dict[str, str], data: PreparedData, x, cf, device) -> dict[str, Any]:
    """Per regressor target of images x and their CEs cf (N, C, H, W each, [-1, 1]): mean |Δ| in
    the target's units and in units of its std over the test split. ``regressor_dirs``:
    {name: model directory}."""
    changes: dict[str, Any] = {}
    test = data.indices("test")
    for name, directory in regressor_dirs.items():
        regressor, info = load_model(directory)
        regressor = regressor.to(device).eval()
        target = info["target"]
        reference_std = float(np.std(data.factor(target)[test]))
        before, after = (batched_outputs(regressor, images, device).numpy() for images in (x, cf))
        change = factor_changes(before, after, reference_std)
        changes[target] = {"measured_by": name, **change}
    return changes


@dataclass
class MetricInputs:
    """Where one run's metrics read from: its store, the data and the model directories."""

    store: str | Path
    data: str | Path
    classifier: str | Path
    encoder: str | Path
    oracle: str | Path | None = None
    regressors: dict[str, str] = field(default_factory=dict)


def compute(
    inputs: MetricInputs, settings: dict[str, Any], seed: int, device: torch.device
) -> dict[str, Any]:
    """Every metric of one explanations store, as a flat-ish dict."""
    store = open_store(inputs.store, kind=STORE_KIND)
    data = PreparedData(inputs.data)
    ids = store.read("sample_ids")
    x = to_m11(torch.from_numpy(data.rows("images", ids)))
    cf_all = torch.from_numpy(store.read("counterfactuals"))
    success = store.read("success").astype(bool)
    targets, sources = store.read("targets"), store.read("sources")
    x_ok, cf_ok = x[success], cf_all[success]
    classifier, _ = load_model(inputs.classifier)
    classifier = classifier.to(device).eval()
    probs = torch.softmax(torch.from_numpy(store.read("logits_after")), 1).numpy()
    pixel = distances(x_ok, cf_ok)
    encoder, _ = load_model(inputs.encoder)
    encoder = encoder.to(device).eval()
    space = feature_space(encoder, settings["inception_weights"], device)
    real_features, cf_features = space.features(x), space.features(cf_all)
    simsiam = FeatureSpace.from_encoder(encoder, device)  # S³ is a SimSiam similarity, whatever FID uses
    real_simsiam, cf_simsiam = (
        (real_features, cf_features)
        if space.name == simsiam.name
        else (simsiam.features(x), simsiam.features(cf_all))
    )
    lpips = Lpips(settings["lpips_weights"], device)
    metrics: dict[str, Any] = {
        "n": len(ids),
        "n_successful": int(success.sum()),
        "flip_rate": float(success.mean()),
        "bkl": _mean(bkl(probs, targets)[success]),
        "l1": _mean(pixel["l1"]),
        "l2": _mean(pixel["l2"]),
        "lpips": _mean(lpips(x_ok, cf_ok).numpy()) if success.any() else float("nan"),
        "s3": _mean(similarity_s3(real_simsiam[success], cf_simsiam[success])),
        "cout": _mean(cout(classifier, x, cf_all, sources, targets, steps=settings["cout_steps"])),
        "fid": fid(real_features, cf_features[success]) if success.sum() > 1 else float("nan"),
        "sfid": sfid(real_features, cf_features, success, settings["sfid_splits"], seed)["mean"],
        "feature_space": space.name,
        "lpips_network": lpips.name,
        "nfe": _mean(store.read("nfe")),
        "nfe_backward": _mean(store.read("nfe_backward")),
        "classifier_calls": _mean(store.read("classifier_calls")),
        "classifier_gradients": _mean(store.read("classifier_gradients")),
        "seconds_per_ce": _mean(store.read("seconds")),
    }
    if inputs.oracle is not None and data.attribute_names:
        metrics.update(_oracle_metrics(inputs.oracle, data, x_ok, cf_ok, device))
    if inputs.regressors:
        metrics["factor_changes"] = factor_metrics(inputs.regressors, data, x_ok, cf_ok, device)
    measured_on_ces = [name for name in SUCCESSFUL_ONLY if name in metrics]
    metrics[COUNTS_KEY] = {name: metrics["n_successful"] for name in measured_on_ces}
    if "particle_mean_success" in store:  # FreeMCG: the reference code's output, for comparison
        metrics["particle_mean_flip_rate"] = float(store.read("particle_mean_success").mean())
    if "masks" in store and "ellipse" in data.mask_names:
        region = data.array("masks")[ids, data.mask_names.index("ellipse")]
        dilation = dilation_size(store.attrs["params"], data.image_size[0])
        coverage = mask_coverage(store.read("masks"), region, dilation)
        metrics["mask_coverage"] = float(np.nanmean(coverage))
        metrics["mask_area"] = float(store.read("masks").mean())
    return metrics


def csv_rows(metrics: dict[str, Any], keys: dict[str, str], provenance_hash: str) -> list[dict[str, Any]]:
    """Long-format rows: one per numeric metric (nested factor changes flattened)."""
    flat: dict[str, tuple[float, int | None]] = {}
    counts = metrics.get(COUNTS_KEY, {})
    for name, value in metrics.items():
        if isinstance(value, bool | int | float):
            flat[name] = (float(value), sample_count(name, metrics["n"], counts))
        elif name == "factor_changes":
            for target, change in value.items():
                n = sample_count(f"factor_changes.{target}", metrics["n"], counts)
                flat[f"abs_change_in_std_{target}"] = (change["mean_abs_change_in_std"], n)
    return [
        {**keys, "metric": k, "value": v, "n": n, "provenance": provenance_hash} for k, (v, n) in flat.items()
    ]


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def run(
    inputs: MetricInputs,
    settings: dict[str, Any],
    labels: dict[str, str],
    metrics_path: str | Path,
    csv_path: str | Path,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """Write metrics.json (labels, method params, metrics, provenance) and the CSV rows."""
    started = time.perf_counter()
    metrics = compute(inputs, settings, seed, device)
    store_attrs = open_store(inputs.store, kind=STORE_KIND).attrs
    record = provenance(settings, MODULES, seed, str(device), time.perf_counter() - started)
    record["explanations_config_hash"] = store_attrs["provenance"]["config_hash"]
    digest = config_hash(
        {"metrics": record["config_hash"], "explanations": record["explanations_config_hash"]}
    )
    write_json(metrics_path, {**labels, "params": store_attrs["params"], **metrics, "provenance": record})
    write_csv(csv_path, csv_rows(metrics, labels, digest))
    log.info("metrics of %s: %s", inputs.store, metrics)
    return metrics
