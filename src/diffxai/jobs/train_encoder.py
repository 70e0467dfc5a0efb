"""Job ``train_encoder``: the SimSiam feature space used for FID and similarity offline.

metrics.json reports the k-NN (k = 5) test accuracy of the task label from the
features, a check that the space separates what the classifier sees.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from sklearn.neighbors import KNeighborsClassifier

from diffxai.jobs.model_job import ModelJob
from diffxai.models.io import build_module
from diffxai.training.simsiam import encode, train_simsiam
from diffxai.training.supervised import to_m11

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.train_encoder"]


def run(job: ModelJob) -> dict[str, Any]:
    """Train (or load) the encoder; returns the metrics written to metrics.json."""
    cfg, data = job.model_cfg, job.data
    spec = {
        "kind": "encoder",
        "in_channels": data.channels,
        "image_size": data.image_size[0],
        "width": cfg["width"],
        "feature_dim": cfg["feature_dim"],
    }
    images = torch.from_numpy(data.array("images"))
    labels = data.array("labels")
    train, test = data.indices("train"), data.indices("test")
    history: dict[str, Any] = {}
    if job.checkpoint:
        model, _ = job.load_checkpoint(spec)
    else:
        torch.manual_seed(job.seed)
        subset = train[: cfg["train"]["max_train_samples"]] if cfg["train"]["max_train_samples"] else train
        model, history = train_simsiam(
            build_module(spec),
            images[subset],
            cfg["train"],
            job.device,
            torch.Generator().manual_seed(job.seed),
        )
    model = model.to(job.device).eval()
    train_features = encode(model, to_m11(images[train]), job.device).numpy()
    test_features = encode(model, to_m11(images[test]), job.device).numpy()
    knn = KNeighborsClassifier(n_neighbors=5).fit(train_features, labels[train])
    accuracy = float(knn.score(test_features, labels[test]))
    log.info("k-NN (k=5) test accuracy of the label from %s features: %.4f", job.model_name, accuracy)
    metrics = {
        "test": {"knn5_label_accuracy": accuracy, "feature_dim": int(train_features.shape[1])},
        "training": history,
    }
    job.save(model, spec, MODULES, metrics)
    return metrics
