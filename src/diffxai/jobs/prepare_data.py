"""Job ``prepare_data``: build a configured dataset into ``results/{dataset}/data.zarr``."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from diffxai.data.prepare import build_dataset
from diffxai.data.prepared import SPLITS, write_prepared
from diffxai.provenance import provenance

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.prepare_data"]


def run(output: str | Path, dataset_cfg: dict[str, Any], base_dir: str | Path = ".") -> Path:
    """Generate or load the dataset and write it atomically with provenance."""
    started = time.perf_counter()
    data = build_dataset(dataset_cfg, Path(base_dir))
    counts = {name: int((data.split == code).sum()) for name, code in SPLITS.items()}
    log.info(
        "%d images %s, splits %s, class balance %.3f",
        len(data.images),
        data.images.shape[1:],
        counts,
        float(np.mean(data.labels == 1)),
    )
    record = provenance(dataset_cfg, MODULES, dataset_cfg["seed"], "cpu", time.perf_counter() - started)
    path = write_prepared(output, data, attrs={"provenance": record})
    log.info("wrote %s in %.1f s", path, time.perf_counter() - started)
    return path
