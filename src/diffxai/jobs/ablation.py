"""Jobs ``ablation_point`` and ``ablation_table``: one-factor-at-a-time ablations of an
explanation (seed 000 Table 4: particles, t', β → flip rate, L2, FID).

A point runs the explanation's method with one parameter replaced on the first
``n_images`` test images and measures flip rate, mean L2 between input and CE over the
successful CEs, FID of the successful CEs against the inputs (the encoder's feature space)
and the mean NFE and classifier calls per CE. The table puts every point of an ablation
side by side (CSV and markdown).
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from diffxai.data.prepared import PreparedData
from diffxai.jobs.common import write_json
from diffxai.jobs.explain import explained_samples, load_models
from diffxai.methods.registry import METHODS
from diffxai.metrics.counterfactual import distances
from diffxai.metrics.realism import FeatureSpace, fid
from diffxai.models.io import load_model
from diffxai.provenance import provenance
from diffxai.training.supervised import to_m11

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.ablation"]
TABLE_FIELDS = [
    "parameter",
    "value",
    "flip_rate",
    "l2",
    "fid",
    "nfe",
    "classifier_calls",
    "seconds_per_ce",
    "n",
]


def run_point(
    data_path: str | Path,
    classifier_dir: str | Path,
    ddpm_dir: str | Path,
    encoder_dir: str | Path,
    out_path: str | Path,
    spec: dict[str, Any],
    setting: dict[str, Any],
    seed: int,
    device: torch.device,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Explain with ``spec['params']`` updated by ``setting`` ({'parameter', 'value'}) and
    write the point's figures to ``out_path`` (JSON). ``context``: the method's extra inputs
    (TIME's tokens)."""
    started = time.perf_counter()
    data = PreparedData(data_path)
    ids = explained_samples(data, spec["n_images"])
    models = load_models(classifier_dir, ddpm_dir, spec["perceptual"], device)
    models.context = dict(context or {})
    params = {**spec["params"], setting["parameter"]: setting["value"]}
    x = to_m11(torch.from_numpy(data.array("images")[ids])).to(device)
    result = METHODS[spec["method"]](x, ids, models, params, seed, batch_size=spec["batch_size"])
    seconds = (time.perf_counter() - started) / len(ids)
    success = result.success
    x_cpu = x.cpu()
    cf = torch.from_numpy(result.counterfactuals)
    encoder, _ = load_model(encoder_dir)
    space = FeatureSpace.from_encoder(encoder.to(device).eval(), device)
    figures = {
        **setting,
        "n": len(ids),
        "flip_rate": float(success.mean()),
        "l2": float(distances(x_cpu[success], cf[success])["l2"].mean()) if success.any() else float("nan"),
        "fid": fid(space.features(x_cpu), space.features(cf[success])) if success.sum() > 1 else float("nan"),
        "nfe": float(result.nfe.mean()),
        "classifier_calls": float(result.classifier_calls.mean()),
        "seconds_per_ce": seconds,
    }
    record = provenance({**spec, "params": params}, MODULES, seed, str(device), time.perf_counter() - started)
    write_json(out_path, {**figures, "params": params, "provenance": record})
    log.info("ablation point %s: %s", setting, figures)
    return figures


def _cell(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def write_table(
    point_paths: list[str | Path], csv_path: str | Path, markdown_path: str | Path, title: str
) -> None:
    """The ablation table from its points, in the order given (CSV + markdown)."""
    rows = [{k: json.loads(Path(p).read_text())[k] for k in TABLE_FIELDS} for p in point_paths]
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TABLE_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    header = "| parameter | value | flip rate ↑ | L2 ↓ | FID ↓ | NFE | classifier calls | s/CE | n |"
    lines = [f"# {title}", "", header, "|" + "---|" * len(TABLE_FIELDS)]
    lines += ["| " + " | ".join(_cell(row[k]) for k in TABLE_FIELDS) + " |" for row in rows]
    Path(markdown_path).write_text("\n".join(lines) + "\n")
    log.info("ablation table %s: %d points", csv_path, len(rows))
