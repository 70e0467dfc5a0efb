"""Job ``train_encoder``: the SimSiam feature space used for FID and similarity offline.

metrics.json reports the k-NN (k = 5) test accuracy of the task label from the
features, a check that the space separates what the classifier sees, and the features'
spread (:func:`~diffxai.training.simsiam.feature_spread`): a collapsed space is logged as a
warning, since FID and S³ in it are not informative.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from sklearn.neighbors import KNeighborsClassifier

from diffxai.jobs.model_job import ModelJob
from diffxai.models.io import build_module
from diffxai.training.simsiam import encode, feature_spread, train_simsiam
from diffxai.training.supervised import to_m11

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.train_encoder"]
# feature spread below which the space is reported as collapsed: a healthy SimSiam keeps
# ≈ 1 (Gaussian-like), a collapsed one falls to ≈ 0.01 within an epoch (SimSiam Fig. 2)
COLLAPSED_BELOW = 0.1


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
        subset = data.subset("train", cfg["train"]["max_train_samples"], job.seed)
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
    spread = feature_spread(torch.from_numpy(test_features))
    log.info(
        "feature spread of %s on the test images: %.3f (1: spread out, 0: collapsed)", job.model_name, spread
    )
    if spread < COLLAPSED_BELOW:
        log.warning(
            "%s has collapsed (feature spread %.3f < %.2f): FID, sFID and S3 in its space are not "
            "informative; train it longer or wider (models.%s.train)",
            job.model_name, spread, COLLAPSED_BELOW, job.model_name,
        )  # fmt: skip
    metrics = {
        "test": {
            "knn5_label_accuracy": accuracy,
            "feature_spread": spread,
            "feature_dim": int(train_features.shape[1]),
        },
        "training": history,
    }
    job.save(model, spec, MODULES, metrics)
    return metrics
