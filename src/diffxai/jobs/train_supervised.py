"""Job ``train_supervised``: a target classifier, a factor regressor or an attribute oracle.

Writes ``model.safetensors``, ``config.json`` and ``metrics.json`` (test scores).
With a ``checkpoint`` in the model config the user's weights are loaded instead of
training, and evaluated the same way.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, r2_score

from diffxai.data.prepared import PreparedData
from diffxai.jobs.model_job import ModelJob
from diffxai.models.io import build_module
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
        present = matrix.sum(1) > 0  # recall is undefined for a class with no test image
        per_class = matrix.diagonal()[present] / matrix.sum(1)[present]
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


def run(job: ModelJob) -> dict[str, Any]:
    """Train (or load) and test the model; returns the metrics written to metrics.json."""
    cfg, kind, data = job.model_cfg, job.model_cfg["kind"], job.data
    spec = model_spec(kind, cfg, data)
    images = torch.from_numpy(data.array("images"))
    targets = _targets(kind, cfg, data)
    split = {name: torch.from_numpy(data.indices(name)) for name in ("val", "test")}
    split["train"] = torch.from_numpy(data.subset("train", cfg["train"]["max_train_samples"], job.seed))
    history: dict[str, Any] = {}
    if job.checkpoint:
        module, _ = job.load_checkpoint(spec)
    else:
        torch.manual_seed(job.seed)
        module = build_module(spec)
        mean, std = 0.0, 1.0
        if kind == "regressor":  # trained in standard units, predicts in the factor's units
            mean, std = float(targets[split["train"]].mean()), float(targets[split["train"]].std())
            module.mean.fill_(mean)
            module.std.fill_(std)
        fit_targets = (targets - mean) / std if kind == "regressor" else targets
        module.network, history = fit(
            module.network,
            TASKS[kind],
            (images[split["train"]], fit_targets[split["train"]]),
            (images[split["val"]], fit_targets[split["val"]]),
            cfg["train"],
            job.device,
            torch.Generator().manual_seed(job.seed),
        )
    module = module.to(job.device).eval()
    names = spec.get("class_names") or spec.get("attribute_names") or [spec.get("target")]
    test = evaluate(kind, module, images[split["test"]], targets[split["test"]], names, job.device)
    log.info(
        "test metrics of %s on %s: %s",
        job.model_name,
        job.dataset_name,
        {k: v for k, v in test.items() if k != "confusion_matrix"},
    )
    metrics = {
        "n_train": len(split["train"]),
        "n_val": len(split["val"]),
        "n_test": len(split["test"]),
        "test": test,
        "training": history,
    }
    job.save(module, spec, MODULES, metrics)
    return metrics
