"""Job ``attribution_metrics``: faithfulness, robustness, complexity, sanity and ground truth
of one maps store → metrics.json + long-format CSV rows.

* Faithfulness: insertion and deletion (per substrate; AUC of the mean curve, and nAUC: that
  AUC / the mean curve's maximum) and
  ROAD (MoRF, LeRF; noisy linear imputation) on the probability of the mapped class.
* Robustness: average and max sensitivity (maps recomputed on perturbed inputs with each
  sample's own noise, so only the input changes; for stochastic methods also with a fresh
  seed per recomputation, ``*_fresh_seeds``, which adds their Monte-Carlo noise).
* Complexity: entropy of the normalised |map|.
* Sanity: cascading, top-down parameter randomisation of the classifier (rank and Pearson
  correlation per depth).
* Ground truth: AUROC and pointing game against the data's region mask of the task (the
  ellipse; the task attribute's region), on the images where that region is present.
* Efficiency: NFE, classifier rows and seconds per map.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffxai.data.prepared import PreparedData
from diffxai.jobs.attribute import STORE_KIND, load_attribution_models
from diffxai.jobs.cf_metrics import query_attribute, write_csv
from diffxai.jobs.common import COUNTS_KEY, sample_count, write_json
from diffxai.methods.base import Models
from diffxai.methods.maps import STOCHASTIC, compute_maps, map_function
from diffxai.metrics import attribution as am
from diffxai.provenance import config_hash, provenance
from diffxai.store import open_store
from diffxai.training.supervised import to_m11

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.attribution_metrics"]


def ground_truth_region(data: PreparedData, ids: np.ndarray) -> np.ndarray | None:
    """Bool (N, H, W) region of the task: the mask named after the label attribute, else
    the data's only mask; None when the data has no such mask."""
    names = data.mask_names
    query = query_attribute(data)
    if query is not None and data.attribute_names[query] in names:
        index = names.index(data.attribute_names[query])
    elif len(names) == 1:
        index = 0
    else:
        return None
    return data.array("masks")[ids, index].astype(bool)


def _predictor(models: Models):
    @torch.no_grad()
    def predict(images: torch.Tensor) -> torch.Tensor:
        device = next(models.classifier.parameters()).device
        return torch.softmax(models.classifier(images.to(device)), dim=1).cpu()

    return predict


def faithfulness(predict, x, maps, targets, settings: dict[str, Any], seed: int) -> dict[str, Any]:
    """Insertion/deletion AUC and nAUC per substrate; ROAD curves and their means."""
    absolute = settings["absolute"]
    result: dict[str, Any] = {}
    for kind in settings["substrates"]:
        for mode in am.CURVE_MODES:
            curves = am.insertion_deletion_curves(
                predict, x, maps, targets, mode, kind, settings["curve_steps"], absolute
            )
            result[f"{mode}_auc_{kind}"] = float(am.auc(curves).mean())
            result[f"{mode}_nauc_{kind}"] = am.mean_curve_nauc(curves)
    generator = torch.Generator().manual_seed(seed)
    for order in am.ROAD_ORDERS:
        curves = am.road_curves(
            predict, x, maps, targets, order, settings["road_fractions"], absolute,
            settings["road_noise_std"], generator,
        )  # fmt: skip
        result[f"road_{order}_curve"] = curves.mean(0).tolist()
        result[f"road_{order}_mean"] = float(curves.mean())
    result["road_lerf_minus_morf"] = result["road_lerf_mean"] - result["road_morf_mean"]
    return result


def robustness_and_sanity(
    method: str, models: Models, spec_params: dict[str, Any], x, targets, ids, settings, seed
) -> dict[str, Any]:
    """Sensitivity on the first images and the randomisation check on the first ones."""
    n_sens = min(settings["sensitivity_images"], len(x))
    result: dict[str, Any] = {"sensitivity_n": n_sens}
    for suffix, fresh in (("", False), ("_fresh_seeds", True)):
        if fresh and method not in STOCHASTIC:
            continue
        explain = map_function(method, models, spec_params, seed, ids, fresh_seeds=fresh)
        average, maximum = am.sensitivity(
            explain, x[:n_sens], targets[:n_sens], settings["sensitivity_radius"],
            settings["sensitivity_samples"], torch.Generator().manual_seed(seed),
        )  # fmt: skip
        result[f"avg_sensitivity{suffix}"] = float(average.mean())
        result[f"max_sensitivity{suffix}"] = float(maximum.mean())
    n_rand = min(settings["randomisation_images"], len(x))

    def explain_with(model, images, classes):
        randomised = dataclasses.replace(models, classifier=model)
        return torch.from_numpy(
            compute_maps(method, images, classes, randomised, spec_params, seed, ids[: len(images)]).maps
        )

    check = am.randomisation_check(
        models.classifier, explain_with, x[:n_rand], targets[:n_rand], seed, settings["absolute"]
    )
    spearman, pearson = np.nanmean(check["spearman"], 1), np.nanmean(check["pearson"], 1)
    return {
        "randomisation_defined_n": np.isfinite(check["spearman"]).sum(1).tolist(),  # per depth
        **result,
        "randomisation_layers": check["layers"],
        "randomisation_spearman_curve": spearman.tolist(),
        "randomisation_pearson_curve": pearson.tolist(),
        "randomisation_spearman_top_layer": float(spearman[0]),
        "randomisation_spearman_all_layers": float(spearman[-1]),
        "randomisation_n": n_rand,
    }


def compute(
    store_path: str | Path,
    data_path: str | Path,
    classifier_dir: str | Path,
    ddpm_dir: str | Path | None,
    settings: dict[str, Any],
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """Every attribution metric of one maps store."""
    store = open_store(store_path, kind=STORE_KIND)
    data = PreparedData(data_path)
    ids, targets_np = store.read("sample_ids"), store.read("targets")
    maps = store.read("maps")
    x = to_m11(torch.from_numpy(data.rows("images", ids))).to(device)
    targets = torch.from_numpy(targets_np).to(device)
    models = load_attribution_models(classifier_dir, ddpm_dir, device)
    metrics: dict[str, Any] = {"n": len(ids)}
    metrics.update(faithfulness(_predictor(models), x, maps, targets, settings, seed))
    entropies = am.complexity(maps)
    metrics["complexity"] = float(np.nanmean(entropies))
    metrics["complexity_n"] = int(np.isfinite(entropies).sum())  # all-zero maps have none
    method, params = store.attrs["method"], store.attrs["params"]
    metrics.update(robustness_and_sanity(method, models, params, x, targets, ids, settings, seed))
    region = ground_truth_region(data, ids)
    if region is not None:
        scored = am.scorable_masks(region)  # n counts them; both scores average over them
        metrics["ground_truth_n"] = int(scored.sum())
        if scored.any():  # no image with such a region: no ground-truth score, and n says why
            metrics["mask_auroc"] = float(
                am.mask_auroc(maps[scored], region[scored], settings["absolute"]).mean()
            )
            metrics["pointing_game"] = float(
                am.pointing_game(maps[scored], region[scored], settings["absolute"]).mean()
            )
    metrics["nfe_per_map"] = float(store.read("nfe").mean())
    metrics["classifier_calls_per_map"] = float(store.read("classifier_calls").mean())
    metrics["seconds_per_map"] = float(store.read("seconds").mean())
    metrics[COUNTS_KEY] = subset_counts(metrics)
    return metrics


def subset_counts(metrics: dict[str, Any]) -> dict[str, int]:
    """{metric: images} of the metrics measured on a subset: sensitivity on the first images, the
    randomisation check on those of its first images whose correlation is defined (at the top
    layer, after all layers), complexity on the maps that are not all zero, the ground-truth
    scores on the images with a region."""
    defined = metrics["randomisation_defined_n"]
    counts = {"complexity": metrics["complexity_n"], "randomisation_spearman_top_layer": defined[0],
              "randomisation_spearman_all_layers": defined[-1]}  # fmt: skip
    for name in metrics:
        if name.startswith(("avg_sensitivity", "max_sensitivity")):
            counts[name] = metrics["sensitivity_n"]
        elif name in ("mask_auroc", "pointing_game"):
            counts[name] = metrics["ground_truth_n"]
    return counts


def run(
    store_path: str | Path,
    data_path: str | Path,
    classifier_dir: str | Path,
    ddpm_dir: str | Path | None,
    settings: dict[str, Any],
    labels: dict[str, str],
    metrics_path: str | Path,
    csv_path: str | Path,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """Write metrics.json (labels, method params, metrics, provenance) and the CSV rows."""
    started = time.perf_counter()
    metrics = compute(store_path, data_path, classifier_dir, ddpm_dir, settings, seed, device)
    store_attrs = open_store(store_path, kind=STORE_KIND).attrs
    record = provenance(settings, MODULES, seed, str(device), time.perf_counter() - started)
    record["maps_config_hash"] = store_attrs["provenance"]["config_hash"]
    digest = config_hash({"metrics": record["config_hash"], "maps": record["maps_config_hash"]})
    write_json(metrics_path, {**labels, "params": store_attrs["params"], **metrics, "provenance": record})
    scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, bool | int | float)}
    rows = [
        {
            **labels,
            "metric": k,
            "value": v,
            "n": sample_count(k, metrics["n"], metrics[COUNTS_KEY]),
            "provenance": digest,
        }
        for k, v in scalars.items()
    ]
    write_csv(csv_path, rows)
    log.info("attribution metrics of %s: %s", store_path, scalars)
    return metrics
