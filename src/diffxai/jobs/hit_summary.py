"""Job ``hit_summary``: what HiT's interpretability buys and costs (thesis §6.4.3–6.4.5).

* Accuracy of the HiT and of its baseline (a ViT of the same size trained the same way), and
  the gap, from their metrics.json.
* Layer saliency (Fig. 6.5a): per layer, the mean over test images of Σ_patches of the layer's
  own contributions to the predicted class (logit units; the initial CLS token and the head's
  constants belong to no layer and are left out).
* Layer removal (Fig. 6.5b): accuracy after cumulatively removing layers in order of saliency,
  most salient first and least salient first, plus each layer removed alone ("excluding") and
  kept alone ("exclusive"), two ways: ``decomposition`` drops the removed layers' terms from
  the logit sum, keeping the constant (the direct effect that saliency measures); ``forward``
  re-runs the HiT with those layers not updating the CLS, which also changes the attention
  queries of every later layer (direct and indirect effects).
* Faithfulness table (Table 6.2): insertion/deletion nAUC (zero and blur), mask AUROC, pointing
  game and the randomisation check of every attribution on the HiT and on the baseline, from
  the attribution_metrics outputs; HiT's own maps against each post-hoc map on the HiT.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffxai.data.prepared import PreparedData
from diffxai.jobs.aggregate import ARROWS, ATTRIBUTION_COLUMNS, best_value, is_better
from diffxai.jobs.common import write_json
from diffxai.jobs.explain import explained_samples
from diffxai.jobs.markdown import table_lines
from diffxai.models.hit import HiT, find_hit
from diffxai.models.io import load_model
from diffxai.progress import progress
from diffxai.provenance import provenance
from diffxai.training.supervised import to_m11

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.hit_summary", "diffxai.models.hit"]

# Table 6.2's columns: the report's attribution columns but ROAD and the time per map
TABLE_COLUMNS = tuple(
    column for column in ATTRIBUTION_COLUMNS if column[0] not in ("road_lerf_minus_morf", "seconds_per_map")
)


@torch.no_grad()
def layer_logits(
    hit: HiT, images: torch.Tensor, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each layer's own contributions to every class (N, L, K), the part of the logits no layer
    adds (N, K: the initial CLS token and the head's constants) and the logits (N, K), their sum."""
    layers, constants, logits = [], [], []
    for chunk in progress(images.split(batch_size), desc="HiT contributions", leave=False):
        split = hit.layer_terms(chunk)
        layers.append(split.terms.sum(dim=2).cpu().numpy())
        constants.append(split.constant.cpu().numpy())
        logits.append(split.logits.cpu().numpy())
    as_array = lambda parts: np.concatenate(parts).astype(np.float64)  # noqa: E731
    return as_array(layers), as_array(constants), as_array(logits)


@torch.no_grad()
def forward_accuracy(
    hit: HiT, images: torch.Tensor, labels: np.ndarray, removed: Sequence[int], batch_size: int
) -> float:
    """Accuracy of the forward pass in which the layers in ``removed`` do not update the CLS: their
    direct contributions and their effect on later layers' attention queries are both gone."""
    predictions = [
        hit.trace(chunk, skip_layers=set(removed)).logits.argmax(dim=1).cpu().numpy()
        for chunk in images.split(batch_size)
    ]
    return float((np.concatenate(predictions) == labels).mean())


def decomposition_accuracy(
    per_layer: np.ndarray, constant: np.ndarray, labels: np.ndarray, removed: Sequence[int]
) -> float:
    """Accuracy of the logits without the removed layers' contributions (N, L, K): the constant
    (N, K) plus the kept layers' terms, the direct effect only, which is what layer saliency measures."""
    kept = [layer for layer in range(per_layer.shape[1]) if layer not in set(removed)]
    return float(((constant + per_layer[:, kept].sum(axis=1)).argmax(axis=1) == labels).mean())


def removal_curves(saliency: np.ndarray, accuracy: Callable[[Sequence[int]], float]) -> dict[str, Any]:
    """Accuracy curves (L + 1,) of cumulative removal by saliency, most and least salient first, the
    mean over partial removals (1 .. L-1 layers; lower = the removed layers mattered more), and
    single-layer effects (L,): each layer removed alone ("excluding") and kept alone ("exclusive")."""
    depth = len(saliency)
    order = [int(index) for index in np.argsort(-saliency, kind="stable")]
    most_first = [accuracy(order[:count]) for count in range(depth + 1)]
    least_first = [accuracy(order[::-1][:count]) for count in range(depth + 1)]
    partial = (lambda curve: float(np.mean(curve[1:-1]))) if depth > 1 else (lambda curve: None)
    return {
        "order_most_salient_first": order,
        "cumulative_removed_most_salient_first": most_first,
        "cumulative_removed_least_salient_first": least_first,
        "mean_accuracy_partial_most_first": partial(most_first),
        "mean_accuracy_partial_least_first": partial(least_first),
        "excluding_layer": [accuracy([layer]) for layer in range(depth)],
        "exclusive_layer": [
            accuracy([other for other in range(depth) if other != layer]) for layer in range(depth)
        ],
    }


def layer_analysis(hit: HiT, images: torch.Tensor, labels: np.ndarray, batch_size: int) -> dict[str, Any]:
    """Accuracy, layer saliency (mean over images of Σ_patches of the contributions to the predicted
    class, per layer, and its std) and the removal curves by the decomposition and by the forward pass."""
    per_layer, constant, logits = layer_logits(hit, images, batch_size)
    predicted = logits.argmax(axis=1)
    chosen = per_layer[np.arange(len(per_layer)), :, predicted]  # (N, L)
    saliency = chosen.mean(axis=0)
    by_decomposition = lambda removed: decomposition_accuracy(per_layer, constant, labels, removed)  # noqa: E731
    by_forward = lambda removed: forward_accuracy(hit, images, labels, removed, batch_size)  # noqa: E731
    return {
        "accuracy": float((predicted == labels).mean()),
        "layer_saliency": saliency.tolist(),
        "layer_saliency_std": chosen.std(axis=0).tolist(),
        "layer_removal": {
            "decomposition": removal_curves(saliency, by_decomposition),
            "forward": removal_curves(saliency, by_forward),
        },
    }


def faithfulness_table(metric_paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """One row per attribution metrics.json: name, classifier, TABLE_COLUMNS values (None if absent)."""
    rows = []
    for path in metric_paths:
        record = json.loads(Path(path).read_text())
        row = {"attribution": record["method"], "classifier": record["classifier"], "n": record.get("n")}
        # an undefined metric (NaN: e.g. the randomisation of maps that are all zero) is no value:
        # max/min over a list holding NaN would depend on the order of the rows
        row.update({key: _defined(record.get(key)) for key, _, _ in TABLE_COLUMNS})
        rows.append(row)
    return rows


def _defined(value: Any) -> float | None:
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def hit_against_posthoc(rows: list[dict[str, Any]], hit_rows: list[str], hit_model: str) -> dict[str, Any]:
    """For every column: HiT's value and the best post-hoc value on the same HiT (and the same number
    of images), and whether HiT wins."""
    others = [row for row in rows if row["classifier"] == hit_model and row["attribution"] not in hit_rows]
    result = {}
    for row in (row for row in rows if row["attribution"] in hit_rows):
        for key, _, direction in TABLE_COLUMNS:
            values = [other[key] for other in others if other[key] is not None and other["n"] == row["n"]]
            if row[key] is None or not values:
                continue
            best = best_value(values, direction)
            result[f"{row['attribution']}.{key}"] = {
                "hit": row[key],
                "best_posthoc_on_hit": best,
                "hit_better": is_better(row[key], best, direction),
            }
    return result


def markdown_table(rows: list[dict[str, Any]], title: str) -> str:
    """Rows = attributions, columns = metrics with ↑/↓/→ 0, best value per column (and classifier) in
    bold where that classifier's column holds two or more distinct values."""
    header = ["attribution", "classifier"] + [title_ + ARROWS[up] for _, title_, up in TABLE_COLUMNS]
    table = []
    for row in rows:
        cells = [row["attribution"], row["classifier"]]
        for key, _, direction in TABLE_COLUMNS:
            value = row[key]
            peers = [r[key] for r in rows if r["classifier"] == row["classifier"] and r[key] is not None]
            ranked = len(set(peers)) > 1  # not all tied, not one row
            best = best_value(peers, direction) if ranked else None
            text = "–" if value is None else f"{value:.3f}"
            cells.append(f"**{text}**" if value is not None and value == best else text)
        table.append(cells)
    return "\n".join([f"# {title}", "", *table_lines(header, table)]) + "\n"


def _accuracy(model_dir: str | Path) -> float:
    return float(json.loads((Path(model_dir) / "metrics.json").read_text())["test"]["accuracy"])


def _parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def run(
    inputs: dict[str, Any],
    settings: dict[str, Any],
    labels: dict[str, str],
    json_path: str | Path,
    markdown_path: str | Path,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """Write summary.json and the faithfulness table (markdown).

    ``inputs``: data, hit_dir, baseline_dir (or None), metrics (attribution metrics.json paths),
    hit_attributions (names of the attributions with method hit).
    """
    started = time.perf_counter()
    data = PreparedData(inputs["data"])
    model, _ = load_model(inputs["hit_dir"])
    hit = find_hit(model).to(device).eval()
    ids = explained_samples(data, settings["n_images"])
    images = to_m11(torch.from_numpy(data.rows("images", ids))).to(device)
    truth = data.array("labels")[ids]
    layers = layer_analysis(hit, images, truth, settings["batch_size"])
    summary: dict[str, Any] = {**labels, "n_images": len(ids)}
    summary["accuracy"] = {"hit": _accuracy(inputs["hit_dir"]), "hit_on_these_images": layers.pop("accuracy")}
    summary["parameters"] = {"hit": _parameters(hit)}
    if inputs["baseline_dir"] is not None:
        summary["parameters"]["baseline"] = _parameters(load_model(inputs["baseline_dir"])[0])
        summary["accuracy"]["baseline"] = _accuracy(inputs["baseline_dir"])
        summary["accuracy"]["gap_baseline_minus_hit"] = (
            summary["accuracy"]["baseline"] - summary["accuracy"]["hit"]
        )
    summary.update(layers)
    rows = faithfulness_table(inputs["metrics"])
    summary["faithfulness"] = rows
    summary["hit_vs_posthoc"] = hit_against_posthoc(rows, inputs["hit_attributions"], labels["classifier"])
    summary["provenance"] = provenance(settings, MODULES, seed, str(device), time.perf_counter() - started)
    write_json(json_path, summary)
    title = f"HiT {labels['classifier']} on {labels['dataset']}: faithfulness (thesis Table 6.2)"
    Path(markdown_path).write_text(markdown_table(rows, title))
    log.info("HiT summary: accuracy %s, layer saliency %s", summary["accuracy"], summary["layer_saliency"])
    return summary
