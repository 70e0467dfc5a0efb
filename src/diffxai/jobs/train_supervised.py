"""Job ``train_supervised``: a target classifier, a factor regressor or an attribute oracle.

Writes ``model.safetensors``, ``config.json`` and ``metrics.json`` (test scores).
With a ``checkpoint`` in the model config the user's weights are loaded instead of
training, and evaluated the same way.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, r2_score

from diffxai.data.prepared import PreparedData
from diffxai.jobs.common import write_json
from diffxai.models.io import build_module, load_model, save_model
from diffxai.provenance import provenance
from diffxai.training.supervised import TASKS, fit, predict

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.train_supervised"]


def model_spec(kind: str, model_cfg: dict[str, Any], data: PreparedData) -> dict[str, Any]:
    """The info dict that rebuilds this model (stored as config.json)."""
    spec = {
        "kind": kind,
        "arch": model_cfg["arch"],
        "arch_params": model_cfg["arch_params"],
        "in_channels": data.channels,
        "image_size": data.image_size[0],
    }
    if kind == "classifier":
        spec["class_names"] = data.class_names
    elif kind == "regressor":
        spec["target"] = model_cfg["target"]
    else:
        spec["attribute_names"] = data.attribute_names
    return spec


def _targets(kind: str, model_cfg: dict[str, Any], data: PreparedData) -> torch.Tensor:
    if kind == "classifier":
        return torch.from_numpy(data.array("labels")).long()
    if kind == "regressor":
        return torch.from_numpy(data.factor(model_cfg["target"]).astype(np.float32))
    return torch.from_numpy(data.array("attributes").astype(np.float32))


def evaluate(
    kind: str,
    module: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    names: list[str],
    device: torch.device,
) -> dict[str, Any]:
    """Test metrics: accuracy + confusion matrix, R² + MAE, or per-attribute accuracy."""
    if kind == "regressor":
        predictions = predict(module, images, device)
        truth, pred = targets.numpy(), predictions.numpy()
        return {
            "r2": float(r2_score(truth, pred)),
            "mae": float(np.abs(truth - pred).mean()),
            "rmse": float(np.sqrt(((truth - pred) ** 2).mean())),
        }
    outputs = predict(module, images, device)
    if kind == "classifier":
        predicted = outputs.argmax(1).numpy()
        matrix = confusion_matrix(targets.numpy(), predicted, labels=list(range(len(names))))
        per_class = matrix.diagonal() / np.maximum(matrix.sum(1), 1)
        return {
            "accuracy": float((predicted == targets.numpy()).mean()),
            "balanced_accuracy": float(per_class.mean()),
            "confusion_matrix": matrix.tolist(),
            "class_names": names,
        }
    correct = ((outputs > 0).float() == targets).float().mean(0).numpy()
    return {
        "per_attribute_accuracy": dict(zip(names, map(float, correct), strict=True)),
        "mean_accuracy": float(correct.mean()),
    }


def run(
    data_path: str | Path,
    out_dir: str | Path,
    model_name: str,
    dataset_name: str,
    model_cfg: dict[str, Any],
    seed: int,
    device: torch.device,
    base_dir: str | Path = ".",
) -> dict[str, Any]:
    started = time.perf_counter()
    kind = model_cfg["kind"]
    data = PreparedData(data_path)
    spec = model_spec(kind, model_cfg, data)
    images = torch.from_numpy(data.array("images"))
    targets = _targets(kind, model_cfg, data)
    split = {name: torch.from_numpy(data.indices(name)) for name in ("train", "val", "test")}
    limit = model_cfg["train"]["max_train_samples"]
    if limit:
        split["train"] = split["train"][:limit]
    mean, std = 0.0, 1.0
    if kind == "regressor":
        mean, std = float(targets[split["train"]].mean()), float(targets[split["train"]].std())
    history: dict[str, Any] = {}
    if model_cfg["checkpoint"]:
        module, _ = load_model(Path(base_dir) / model_cfg["checkpoint"], spec=spec)
        source = str(model_cfg["checkpoint"])
        log.info("loaded %s from %s (no training)", kind, source)
    else:
        torch.manual_seed(seed)
        module = build_module(spec)
        standard = (targets - mean) / std if kind == "regressor" else targets
        generator = torch.Generator().manual_seed(seed)
        module.network, history = fit(
            module.network,
            TASKS[kind],
            (images[split["train"]], standard[split["train"]]),
            (images[split["val"]], standard[split["val"]]),
            model_cfg["train"],
            device,
            generator,
        )
        if kind == "regressor":
            module.mean.fill_(mean)
            module.std.fill_(std)
        source = "trained"
    module = module.to(device).eval()
    names = spec.get("class_names") or spec.get("attribute_names") or [spec.get("target")]
    test = evaluate(kind, module, images[split["test"]], targets[split["test"]], names, device)
    log.info(
        "test metrics of %s on %s: %s",
        model_name,
        dataset_name,
        {k: v for k, v in test.items() if k != "confusion_matrix"},
    )
    elapsed = time.perf_counter() - started
    spec["provenance"] = provenance(
        model_cfg, MODULES, seed, str(device), elapsed, dataset=dataset_name, model=model_name, source=source
    )
    save_model(out_dir, module, spec)
    metrics = {
        "model": model_name,
        "dataset": dataset_name,
        "kind": kind,
        "source": source,
        "n_train": len(split["train"]),
        "n_val": len(split["val"]),
        "n_test": len(split["test"]),
        "test": test,
        "training": history,
        "wall_time_s": elapsed,
    }
    write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics
