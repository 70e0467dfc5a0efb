"""Job ``train_encoder``: the SimSiam feature space used for FID and similarity offline.

metrics.json reports the k-NN (k = 5) test accuracy of the task label from the
features, a check that the space separates what the classifier sees.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from sklearn.neighbors import KNeighborsClassifier

from diffxai.data.prepared import PreparedData
from diffxai.jobs.common import write_json
from diffxai.models.io import build_module, load_model, save_model
from diffxai.provenance import provenance
from diffxai.training.simsiam import encode, train_simsiam
from diffxai.training.supervised import to_m11

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.train_encoder"]


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
    data = PreparedData(data_path)
    spec = {
        "kind": "encoder",
        "in_channels": data.channels,
        "image_size": data.image_size[0],
        "width": model_cfg["width"],
        "feature_dim": model_cfg["feature_dim"],
    }
    images = torch.from_numpy(data.array("images"))
    labels = data.array("labels")
    train, test = data.indices("train"), data.indices("test")
    history: dict[str, Any] = {}
    if model_cfg["checkpoint"]:
        model, _ = load_model(Path(base_dir) / model_cfg["checkpoint"], spec=spec)
        source = str(model_cfg["checkpoint"])
    else:
        torch.manual_seed(seed)
        limit = model_cfg["train"]["max_train_samples"]
        subset = train[:limit] if limit else train
        model, history = train_simsiam(
            build_module(spec),
            images[subset],
            model_cfg["train"],
            device,
            torch.Generator().manual_seed(seed),
        )
        source = "trained"
    model = model.to(device).eval()
    train_features = encode(model, to_m11(images[train]), device).numpy()
    test_features = encode(model, to_m11(images[test]), device).numpy()
    knn = KNeighborsClassifier(n_neighbors=5).fit(train_features, labels[train])
    accuracy = float(knn.score(test_features, labels[test]))
    log.info("k-NN (k=5) test accuracy of the label from %s features: %.4f", model_name, accuracy)
    elapsed = time.perf_counter() - started
    spec["provenance"] = provenance(
        model_cfg, MODULES, seed, str(device), elapsed, dataset=dataset_name, model=model_name, source=source
    )
    save_model(out_dir, model, spec)
    metrics = {
        "model": model_name,
        "dataset": dataset_name,
        "kind": "encoder",
        "source": source,
        "test": {"knn5_label_accuracy": accuracy, "feature_dim": int(train_features.shape[1])},
        "training": history,
        "wall_time_s": elapsed,
    }
    write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics
