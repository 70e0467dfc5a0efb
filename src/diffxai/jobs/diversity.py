"""Job ``diversity``: σ_L of a method over its K runs (DiME §4.2) → diversity.json + CSV rows."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffxai.jobs.cf_metrics import csv_rows, write_csv
from diffxai.jobs.common import write_json
from diffxai.jobs.gather_explanations import STORE_KIND
from diffxai.metrics.perceptual import Lpips, diversity_sigma_l
from diffxai.provenance import config_hash, provenance
from diffxai.store import open_store

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.diversity"]


def run(
    store_paths: list[str | Path],
    lpips_weights: str | None,
    keys: dict[str, str],
    json_path: str | Path,
    csv_path: str | Path,
    device: torch.device,
) -> dict[str, Any]:
    """Mean pairwise LPIPS between the runs' CEs of each sample (all CEs, as the seed)."""
    started = time.perf_counter()
    stores = [open_store(p, kind=STORE_KIND) for p in store_paths]
    ids = [s.read("sample_ids") for s in stores]
    if any(not np.array_equal(ids[0], other) for other in ids[1:]):
        raise ValueError("runs explain different samples; sigma_L needs the same samples in every run")
    lpips = Lpips(lpips_weights, device)
    runs = [torch.from_numpy(s.read("counterfactuals")) for s in stores]
    metrics = {"n": len(ids[0]), "runs": len(runs), "sigma_l": diversity_sigma_l(runs, lpips)}
    metrics["lpips_network"] = lpips.name
    record = provenance({"runs": [str(p) for p in store_paths]}, MODULES, None, str(device), 0.0)
    record["wall_time_s"] = round(time.perf_counter() - started, 3)
    # what the runs explained with: the report's provenance hash of the σ_L row covers it
    record["explanations_config_hash"] = config_hash([s.attrs["provenance"]["config_hash"] for s in stores])
    write_json(json_path, {**keys, **metrics, "provenance": record})
    write_csv(csv_path, csv_rows(metrics, keys, record["explanations_config_hash"]))
    log.info("diversity %s", metrics)
    return metrics
