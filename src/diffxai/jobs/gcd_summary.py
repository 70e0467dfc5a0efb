"""Job ``gcd_summary``: what GCD claims beyond one run's CEs (seed 001 §5) →
``gcd_summary.json`` + long-format CSV rows.

* Sources (Table 3): every CE metric of each run (one source image per run) with its
  mean ± std over the runs, and each run's discovery cost and proxy fit.
* Globality (Fig. 3, Table 4): the record of job ``gcd_globality`` (the first run's g- and
  h-directions applied to the first explained images), its provenance left out.
* Attribution (§5.3): BB-LIG maps of the first run's CEs against BB-IG (black baseline)
  on the same images: AUROC and pointing game against the task's ground-truth region.
* Efficiency: network evaluations to find one source's directions, next to the published
  configuration's (counted with the same formula), and per transferred CE.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffxai.data.prepared import PreparedData
from diffxai.jobs.attribution_metrics import ground_truth_region
from diffxai.jobs.cf_metrics import write_csv
from diffxai.jobs.common import COUNTS_KEY, write_json
from diffxai.jobs.explain import STORE_KIND
from diffxai.jobs.gcd_directions import latent_space, load_blackbox, read_directions
from diffxai.methods import gcd
from diffxai.metrics import attribution as am
from diffxai.models.blackbox import BlackBox
from diffxai.provenance import config_hash, provenance
from diffxai.store import open_store
from diffxai.training.supervised import to_m11

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.gcd_summary"]
PUBLISHED_ENCODE_STEPS = 250  # T_encode of the published configuration
SKIPPED = ("provenance", "params")  # metrics.json sections that are not metrics


def numeric_leaves(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every int/float leaf of a nested dict by its dotted key (bools and sections in
    ``SKIPPED`` left out)."""
    leaves: dict[str, float] = {}
    for key, value in record.items():
        if key in SKIPPED:
            continue
        if isinstance(value, dict):
            leaves.update(numeric_leaves(value, f"{prefix}{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            leaves[f"{prefix}{key}"] = float(value)
    return leaves


def across_runs(per_run: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """{metric: {mean, std (ddof 0), n_runs}} of the metrics every run reports, over the runs
    where it is finite (n_runs of them; mean and std NaN where there is none)."""
    shared = set.intersection(*(set(run) for run in per_run)) if per_run else set()
    table = {}
    for key in sorted(shared):
        values = np.array([run[key] for run in per_run])
        finite = values[np.isfinite(values)]
        mean, std = (float(finite.mean()), float(finite.std())) if finite.size else (math.nan, math.nan)
        table[key] = {"mean": mean, "std": std, "n_runs": int(finite.size)}
    return table


def attribution(
    data: PreparedData, store_path: str | Path, blackbox: BlackBox, params: dict[str, Any]
) -> dict[str, Any]:
    """BB-LIG (from the CE store) vs BB-IG on the same images against the task region."""
    store = open_store(store_path, STORE_KIND)
    ids = store.read("sample_ids")
    maps = {"bb_lig": torch.from_numpy(store.read("bb_lig"))}
    images = to_m11(torch.from_numpy(data.rows("images", ids)))
    sources = torch.from_numpy(store.read("sources"))
    maps["bb_ig"] = gcd.bb_ig(blackbox, images, sources, params["alpha_steps"], params["lig_eps"])
    region = ground_truth_region(data, ids)
    result: dict[str, Any] = {"n_images": len(ids), "path_steps": params["alpha_steps"]}
    if region is None:
        return {**result, "region": None}
    present = region.reshape(len(ids), -1).any(1)
    result["region_present"] = int(present.sum())
    for name, values in maps.items():
        result[name] = {
            "mask_auroc": float(np.nanmean(am.mask_auroc(values[present], region[present]))),
            "pointing_game": float(np.mean(am.pointing_game(values[present], region[present]))),
            "zero_fraction": float((values == 0).float().mean()),
        }
    return result


def run(
    inputs: dict[str, Any],
    params: dict[str, Any],
    labels: dict[str, str],
    json_path: str | Path,
    csv_path: str | Path,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """``inputs``: data, classifier_dir, latents, globality (``gcd_globality``'s record),
    directions / stores / metrics (one per run, in run order)."""
    started = time.perf_counter()
    params = gcd.with_defaults(params)
    data = PreparedData(inputs["data"])
    blackbox = load_blackbox(inputs["classifier_dir"], device)
    per_run = [numeric_leaves(json.loads(Path(p).read_text())) for p in inputs["metrics"]]
    found = [read_directions(p) for p in inputs["directions"]]
    summary: dict[str, Any] = {
        **labels,
        "params": params,
        "sources": {
            "runs": [
                {
                    "source_id": d.source_id,
                    "source_class": d.source_class,
                    "proxy_val_mse": d.fit.val_loss,
                    "proxy_epochs": d.fit.epochs,
                    "discovery_nfe": d.nfe,
                    "discovery_queries": d.queries,
                    "flip_rate": run.get("flip_rate"),
                }
                for d, run in zip(found, per_run, strict=True)
            ],
            "across_runs": across_runs(per_run),
        },
    }
    _, encode_steps = latent_space(inputs["latents"])
    record = json.loads(Path(inputs["globality"]).read_text())
    summary["globality"] = {k: v for k, v in record.items() if k != "provenance"}
    summary["attribution"] = attribution(data, inputs["stores"][0], blackbox, params)
    published = gcd.discovery_nfe({}, PUBLISHED_ENCODE_STEPS)
    discovery = float(np.mean([d.nfe for d in found])) + encode_steps
    summary["efficiency"] = {
        "discovery_nfe": discovery,
        "published_discovery_nfe": published,
        "fraction_of_published": discovery / published,
        "nfe_per_ce": float(np.mean(open_store(inputs["stores"][0], STORE_KIND).read("nfe"))),
    }
    summary[COUNTS_KEY] = record_counts(summary)
    elapsed = time.perf_counter() - started
    summary["provenance"] = provenance(params, MODULES, seed, str(device), elapsed)
    summary["provenance"]["globality_config_hash"] = record["provenance"]["config_hash"]
    write_json(json_path, summary)
    rows = _csv_rows(summary, labels, config_hash(summary["provenance"]))
    write_csv(csv_path, rows)
    log.info("GCD summary in %.1f s: globality %s", elapsed, summary["globality"]["flip_rate"])
    return summary


def record_counts(summary: dict[str, Any]) -> dict[str, int]:
    """{section or metric: count} of the summary: source runs, the globality images (the flipped
    ones for a direction's factor changes), the images with a region for the attributions."""
    runs, n_glob = len(summary["sources"]["runs"]), summary["globality"]["n_images"]
    counts = {"sources": runs, "efficiency": runs, "globality": n_glob}
    for name in summary["globality"].get("factor_changes", {}):
        counts[f"globality.factor_changes.{name}"] = round(summary["globality"]["flip_rate"][name] * n_glob)
    counts["attribution"] = summary["attribution"]["region_present"]
    return counts


def _csv_rows(summary: dict[str, Any], labels: dict[str, str], tag: str) -> list[dict[str, Any]]:
    base = {**labels, "run": "all", "provenance": tag}
    rows = []
    for metric, stats in summary["sources"]["across_runs"].items():
        for statistic in ("mean", "std"):
            row = {
                "metric": f"{metric}_{statistic}_over_sources",
                "value": stats[statistic],
                "n": stats["n_runs"],
            }
            rows.append({**base, **row})
    counts = summary[COUNTS_KEY]
    n_glob = counts["globality"]
    for name, rate in summary["globality"]["flip_rate"].items():
        rows.append({**base, "metric": f"flip_rate_{name}", "value": rate, "n": n_glob})
    for name, changes in summary["globality"].get("factor_changes", {}).items():
        n_flipped = counts[f"globality.factor_changes.{name}"]
        for factor, change in changes.items():
            metric = f"factor_change_{factor}_in_std_{name}"
            rows.append({**base, "metric": metric, "value": change["mean_abs_change_in_std"], "n": n_flipped})
    if "others_combined" in summary["globality"]:
        value = summary["globality"]["others_combined"]["flip_rate"]
        rows.append({**base, "metric": "flip_rate_others_combined", "value": value, "n": n_glob})
    attribution_record = summary["attribution"]
    for name in ("bb_lig", "bb_ig"):
        for metric, value in attribution_record.get(name, {}).items():
            rows.append({**base, "metric": f"{name}_{metric}", "value": value, "n": counts["attribution"]})
    for metric, value in summary["efficiency"].items():
        rows.append({**base, "metric": metric, "value": value, "n": counts["efficiency"]})
    return rows
