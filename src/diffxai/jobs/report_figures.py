"""Job ``report_figures``: the report's figures, so methods can be compared image by image, and
the run's configuration.

- One grid per explanation and attribution: a row per test image (the first ``n_images``
  explained, the same images for every method). Counterfactuals: input | counterfactual |
  |difference| (on the images' own [0, 1] scale), then, where the store holds one, ACE's mask
  or GCD's signed BB-LIG map. Attributions: input | |map| (scaled to each image's maximum).
- Per dataset, the efficiency frontier: flip rate against forward network evaluations per CE,
  one point per explanation run and per point of an ablation of that explanation, from the
  tidy metrics.csv, with each explanation's Pareto frontier.
- The variance analyses' local-score curves, copied in.
- The validated config (defaults filled in) as YAML.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml

from diffxai.data.prepared import PreparedData
from diffxai.jobs import store_kinds
from diffxai.store import open_store

log = logging.getLogger(__name__)
# per-CE maps an explanation store may hold, preferred first: {array: column title}
MAP_ARRAYS = {"masks": "mask", "bb_lig": "BB-LIG"}
SIGNED_MAPS = {"bb_lig"}  # drawn on a diverging colormap
DIVERGING = "RdBu_r"  # negative blue, positive red


@dataclass(frozen=True)
class Panel:
    """One column of a grid: an image per row, (n, H, W[, C]); ``signed`` maps are drawn on
    :data:`DIVERGING` symmetric about 0, anything else on [0, 1]."""

    title: str
    images: np.ndarray
    signed: bool = False


def _to_unit(images_m11: np.ndarray) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] → (N, H, W, C) in [0, 1]."""
    return ((images_m11.transpose(0, 2, 3, 1) + 1) / 2).clip(0, 1)


def _normalised(maps: np.ndarray) -> np.ndarray:
    """|maps| (N, H, W) scaled to [0, 1] per image."""
    maps = np.abs(maps)
    peak = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)
    return maps / np.where(peak > 0, peak, 1)


def _inputs(data: PreparedData, ids: np.ndarray) -> np.ndarray:
    """The prepared images of ``ids``, (n, H, W, C) in [0, 1]."""
    return _to_unit(data.rows("images", ids).astype(np.float32) / 127.5 - 1)


def explanation_panels(store_path: str | Path, data: PreparedData, n_images: int) -> list[Panel]:
    """The grid's columns for the first explained images: input, counterfactual, |difference|
    (channel mean, in [0, 1]) and the store's first map of :data:`MAP_ARRAYS`, if any."""
    store = open_store(store_path, store_kinds.EXPLANATIONS)
    inputs = _inputs(data, store.read("sample_ids")[:n_images])
    counterfactuals = _to_unit(store.read("counterfactuals")[:n_images])
    panels = [
        Panel("input", inputs),
        Panel("counterfactual", counterfactuals),
        Panel("|difference|", np.abs(counterfactuals - inputs).mean(axis=-1)),
    ]
    for name, title in MAP_ARRAYS.items():
        if name in store:
            maps = store.read(name)[:n_images].astype(np.float32)
            panels.append(Panel(title, maps.reshape(len(maps), *maps.shape[-2:]), name in SIGNED_MAPS))
            break
    return panels


def attribution_panels(store_path: str | Path, data: PreparedData, n_images: int) -> list[Panel]:
    """Input and |map| (scaled to each image's maximum) of the first mapped images."""
    store = open_store(store_path, store_kinds.ATTRIBUTIONS)
    inputs = _inputs(data, store.read("sample_ids")[:n_images])
    return [Panel("input", inputs), Panel("|map|", _normalised(store.read("maps")[:n_images]))]


def display(image: np.ndarray, signed: bool) -> dict[str, Any]:
    """``imshow`` arguments of one image: a signed map on :data:`DIVERGING` from −max|map| to
    +max|map| (its own), anything else on [0, 1], gray where it has one channel."""
    if signed:
        limit = float(np.abs(image).max()) or 1.0
        return {"X": image, "cmap": DIVERGING, "vmin": -limit, "vmax": limit}
    gray = image.ndim == 2 or image.shape[-1] == 1
    pixels = image.squeeze(-1) if image.ndim == 3 and gray else image
    return {"X": pixels, "cmap": "gray" if gray else None, "vmin": 0, "vmax": 1}


def save_grid(panels: list[Panel], title: str, path: str | Path) -> None:
    """A rows = images × columns = panels figure."""
    rows = len(panels[0].images)
    figure, axes = plt.subplots(
        rows, len(panels), figsize=(1.4 * len(panels), 1.4 * rows + 0.4), squeeze=False
    )
    for column, panel in enumerate(panels):
        for row in range(rows):
            axes[row, column].imshow(**display(panel.images[row], panel.signed))
            axes[row, column].set_axis_off()
        axes[0, column].set_title(panel.title, fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def efficiency_points(frame: pd.DataFrame, dataset: str, ablations: dict[str, str]) -> pd.DataFrame:
    """Columns flip_rate and nfe, index (method, setting): each explanation run on ``dataset``
    and each point of an ablation ({ablation: the explanation it varies}) under its
    explanation's name, as setting ``<ablation>:<point>``; rows of other kinds are left out."""
    part = frame[(frame["dataset"] == dataset) & frame["metric"].isin(["flip_rate", "nfe"])]
    runs = part[part["kind"] == "explanation"]
    varied = part[(part["kind"] == "ablation") & part["method"].isin(ablations)]
    varied = varied.assign(
        method=varied["method"].map(ablations), setting=varied["method"] + ":" + varied["setting"]
    )
    points = pd.concat([runs, varied]).pivot_table(
        index=["method", "setting"], columns="metric", values="value"
    )
    return points[["flip_rate", "nfe"]].dropna()


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """The points that no other matches on both fewer NFE and a higher flip rate, by NFE."""
    ordered = points.sort_values(["nfe", "flip_rate"], ascending=[True, False])
    best_before = ordered["flip_rate"].cummax().shift(fill_value=-np.inf)
    return ordered[ordered["flip_rate"] > best_before]


def efficiency_plot(points: pd.DataFrame, dataset: str, path: str | Path) -> None:
    """Flip rate against NFE per CE (:func:`efficiency_points`), each method's Pareto front as
    a step line."""
    figure, axis = plt.subplots(figsize=(5, 3.6))
    for method, group in points.groupby(level="method"):
        front = pareto_front(group)
        (line,) = axis.plot(front["nfe"].clip(lower=1), front["flip_rate"], drawstyle="steps-post", lw=1)
        axis.scatter(
            group["nfe"].clip(lower=1), group["flip_rate"], color=line.get_color(), label=method, s=25
        )
    axis.set(xscale="log", xlabel="forward network evaluations per CE", ylabel="flip rate",
             ylim=(-0.02, 1.02), title=f"Efficiency frontier: {dataset}")  # fmt: skip
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_config(config: dict[str, Any], path: str | Path) -> None:
    """The run's validated config (defaults filled in) as YAML, keys in the config's order."""
    Path(path).write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))


def run(
    entries: list[dict[str, Any]],
    data_paths: dict[str, str],
    metrics_csv: str | Path,
    out_dir: str | Path,
    n_images: int,
    curves: dict[str, str] | None = None,
    ablations: dict[str, str] | None = None,
) -> list[Path]:
    """Write every figure into ``out_dir``; ``entries``: {kind (explanation | attribution), dataset,
    method, path (explanations.zarr or maps.zarr)}; ``curves``: {name: PNG} of figures other jobs
    drew (the variance local-score curves), copied in; ``ablations``: {ablation: the explanation
    it varies}, whose points join the efficiency plots. Returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {dataset: PreparedData(path) for dataset, path in data_paths.items()}
    written = []
    for entry in entries:
        panels = explanation_panels if entry["kind"] == "explanation" else attribution_panels
        grid = panels(entry["path"], data[entry["dataset"]], n_images)
        path = out_dir / f"{entry['dataset']}_{entry['kind']}_{entry['method']}.png"
        save_grid(grid, f"{entry['method']} on {entry['dataset']}", path)
        written.append(path)
    frame = pd.read_csv(metrics_csv)
    for dataset in sorted({entry["dataset"] for entry in entries if entry["kind"] == "explanation"}):
        path = out_dir / f"{dataset}_efficiency.png"
        efficiency_plot(efficiency_points(frame, dataset, ablations or {}), dataset, path)
        written.append(path)
    for name, source in (curves or {}).items():
        shutil.copyfile(source, out_dir / name)
        written.append(out_dir / name)
    log.info("wrote %d figures", len(written))
    return written
