"""Job ``report_figures``: the report's figures, so methods can be compared image by image.

- One grid per explanation and attribution: a row per test image (the first ``n_images``
  explained, the same images for every method), columns input | counterfactual | |difference| |
  mask or map (counterfactuals: ACE's mask, GCD's BB-LIG map, else the difference itself;
  attributions: input | |map|).
- Per dataset, the efficiency frontier: flip rate against UNet evaluations per CE, one point per
  explanation run, from the tidy metrics.csv.
- The variance analyses' local-score curves, copied in.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from diffxai.data.prepared import PreparedData
from diffxai.jobs import store_kinds
from diffxai.store import open_store

log = logging.getLogger(__name__)
MAP_ARRAYS = ("masks", "bb_lig")  # per-CE maps an explanation store may hold, in order of preference


def _to_unit(images_m11: np.ndarray) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] → (N, H, W, C) in [0, 1]."""
    return ((images_m11.transpose(0, 2, 3, 1) + 1) / 2).clip(0, 1)


def _normalised(maps: np.ndarray) -> np.ndarray:
    """|maps| (N, H, W) scaled to [0, 1] per image."""
    maps = np.abs(maps)
    peak = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)
    return maps / np.where(peak > 0, peak, 1)


def explanation_panels(store_path: str | Path, data: PreparedData, n_images: int) -> tuple[list, list[str]]:
    """Columns (each (n, H, W[, C]) in [0, 1]) and their titles for the first explained images."""
    store = open_store(store_path, store_kinds.EXPLANATIONS)
    ids = store.read("sample_ids")[:n_images]
    inputs = _to_unit(data.rows("images", ids).astype(np.float32) / 127.5 - 1)
    counterfactuals = _to_unit(store.read("counterfactuals")[:n_images])
    difference = np.abs(counterfactuals - inputs).mean(axis=-1)
    columns, titles = (
        [inputs, counterfactuals, _normalised(difference)],
        ["input", "counterfactual", "|difference|"],
    )
    for name in MAP_ARRAYS:
        if name in store:
            maps = store.read(name)[:n_images]
            columns.append(_normalised(maps.reshape(len(maps), *maps.shape[-2:])))
            titles.append("mask" if name == "masks" else "BB-LIG")
            break
    return columns, titles


def attribution_panels(store_path: str | Path, data: PreparedData, n_images: int) -> tuple[list, list[str]]:
    """Input and |map| of the first mapped images."""
    store = open_store(store_path, store_kinds.ATTRIBUTIONS)
    ids = store.read("sample_ids")[:n_images]
    inputs = _to_unit(data.rows("images", ids).astype(np.float32) / 127.5 - 1)
    return [inputs, _normalised(store.read("maps")[:n_images])], ["input", "|map|"]


def save_grid(columns: list[np.ndarray], titles: list[str], title: str, path: str | Path) -> None:
    """A rows = images × columns = panels figure."""
    rows = len(columns[0])
    figure, axes = plt.subplots(
        rows, len(columns), figsize=(1.4 * len(columns), 1.4 * rows + 0.4), squeeze=False
    )
    for column, (panel, name) in enumerate(zip(columns, titles, strict=True)):
        for row in range(rows):
            image = panel[row]
            gray = image.ndim == 2 or image.shape[-1] == 1
            axes[row, column].imshow(image.squeeze(-1) if image.ndim == 3 and gray else image,
                                     cmap="gray" if gray else None, vmin=0, vmax=1)  # fmt: skip
            axes[row, column].set_axis_off()
        axes[0, column].set_title(name, fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def efficiency_plot(frame: pd.DataFrame, dataset: str, methods: list[str], path: str | Path) -> None:
    """Flip rate against NFE per CE, one point per (explanation, run)."""
    part = frame[(frame["dataset"] == dataset) & frame["method"].isin(methods)]
    points = part[part["metric"].isin(["flip_rate", "nfe"])].pivot_table(
        index=["method", "setting"], columns="metric", values="value"
    )
    figure, axis = plt.subplots(figsize=(5, 3.6))
    for method, group in points.groupby(level="method"):
        axis.scatter(group["nfe"].clip(lower=1), group["flip_rate"], label=method, s=25)
    axis.set(xscale="log", xlabel="UNet evaluations per CE", ylabel="flip rate", ylim=(-0.02, 1.02),
             title=f"Efficiency frontier: {dataset}")  # fmt: skip
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run(
    entries: list[dict[str, Any]],
    data_paths: dict[str, str],
    metrics_csv: str | Path,
    out_dir: str | Path,
    n_images: int,
    curves: dict[str, str] | None = None,
) -> list[Path]:
    """Write every figure into ``out_dir``; ``entries``: {kind (explanation | attribution), dataset,
    method, path (explanations.zarr or maps.zarr)}; ``curves``: {name: PNG} of figures other jobs
    drew (the variance local-score curves), copied in. Returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {dataset: PreparedData(path) for dataset, path in data_paths.items()}
    written = []
    for entry in entries:
        panels = explanation_panels if entry["kind"] == "explanation" else attribution_panels
        columns, titles = panels(entry["path"], data[entry["dataset"]], n_images)
        path = out_dir / f"{entry['dataset']}_{entry['kind']}_{entry['method']}.png"
        save_grid(columns, titles, f"{entry['method']} on {entry['dataset']}", path)
        written.append(path)
    frame = pd.read_csv(metrics_csv)
    for dataset in sorted({entry["dataset"] for entry in entries if entry["kind"] == "explanation"}):
        methods = sorted(
            {e["method"] for e in entries if e["kind"] == "explanation" and e["dataset"] == dataset}
        )
        path = out_dir / f"{dataset}_efficiency.png"
        efficiency_plot(frame, dataset, methods, path)
        written.append(path)
    for name, source in (curves or {}).items():
        shutil.copyfile(source, out_dir / name)
        written.append(out_dir / name)
    log.info("wrote %d figures", len(written))
    return written
