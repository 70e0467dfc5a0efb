"""Job ``explain_shard``: one shard of a counterfactual run, cached in a zarr store.

The explained samples are the first ``n_images`` of the test split. They are cut
into batches of ``batch_size`` and the batches into ``shards`` contiguous groups, so
a sample's batch (and, with per-sample noise, its result) does not depend on the
number of shards. A failing shard fails only its own job.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffxai.data.prepared import PreparedData
from diffxai.jobs.gather_explanations import STORE_KIND
from diffxai.methods.base import Models
from diffxai.methods.perceptual_features import encoder_layers, vgg_layers
from diffxai.methods.registry import explainer, method_modules
from diffxai.models.io import load_model
from diffxai.paths import resolve
from diffxai.provenance import provenance
from diffxai.store import ArraySpec, StoreWriter
from diffxai.training.supervised import to_m11

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.explain"]


def explained_samples(data: PreparedData, n_images: int | None) -> np.ndarray:
    """Dataset indices of the explained samples: the first ``n_images`` test images."""
    test = data.indices("test")
    return test if n_images is None else test[:n_images]


def shard_batches(n: int, batch_size: int, shards: int, shard: int) -> list[np.ndarray]:
    """Positions (into the explained samples) of each batch of ``shard``."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} outside 0..{shards - 1}")
    starts = np.arange(0, n, batch_size)
    mine = np.array_split(starts, shards)[shard]
    return [np.arange(start, min(start + batch_size, n)) for start in mine]


def load_models(
    classifier_dir: str | Path,
    ddpm_dir: str | Path,
    perceptual: dict[str, Any] | None,
    device: torch.device,
) -> Models:
    """Classifier, DDPM and perceptual network on ``device``, frozen and in eval mode.
    ``perceptual``: DiME's network settings (None: a method without one)."""
    classifier, _ = load_model(classifier_dir)
    ddpm, info = load_model(ddpm_dir)
    if perceptual is None:
        features = None
    elif perceptual["network"] == "vgg":
        features = vgg_layers(resolve(perceptual["weights"]), perceptual["arch"])
    elif perceptual.get("encoder_dir"):
        encoder, _ = load_model(perceptual["encoder_dir"])
        features = encoder_layers(encoder)
    else:
        features = None
    modules = [m for m in (classifier, ddpm, features) if m is not None]
    for module in modules:
        module.to(device).eval().requires_grad_(False)
    return Models(classifier, ddpm, info["scheduler_config"], features)


def run(
    data_path: str | Path,
    classifier_dir: str | Path,
    ddpm_dir: str | Path,
    out_path: str | Path,
    spec: dict[str, Any],
    shard: int,
    seed: int,
    device: torch.device,
    context: dict[str, Any] | None = None,
) -> Path:
    """Explain shard ``shard`` of ``spec`` (method, params, n_images, shards, batch_size and,
    for DiME, perceptual) and write its store; the noise of each sample is seeded by (seed, sample id).
    ``context``: method-specific inputs (GCD's directions and latents)."""
    started = time.perf_counter()
    data = PreparedData(data_path)
    samples = explained_samples(data, spec["n_images"])
    batches = shard_batches(len(samples), spec["batch_size"], spec["shards"], shard)
    models = load_models(classifier_dir, ddpm_dir, spec.get("perceptual"), device)
    models.context = dict(context or {})
    explain = explainer(spec["method"])
    attrs = {
        "method": spec["method"],
        "params": spec["params"],
        "shard": shard,
        "shards": spec["shards"],
        "batch_size": spec["batch_size"],
        "n_explained": len(samples),  # of the whole run: the gather checks its shards cover them
    }
    rows = np.concatenate(batches) if batches else np.zeros(0, np.int64)
    ids = samples[rows]
    arrays: dict[str, np.ndarray] = {}
    if ids.size:
        images = to_m11(torch.from_numpy(data.rows("images", ids))).to(device)
        explain_started = time.perf_counter()
        result = explain(images, ids, models, spec["params"], seed, batch_size=spec["batch_size"])
        result.seconds[:] = (time.perf_counter() - explain_started) / len(ids)
        arrays = {"sample_ids": ids.astype(np.int64), **result.arrays()}
        log.info(
            "samples %s..%s: flip rate %.3f, mean NFE %.0f, %.2f s per CE",
            ids[0], ids[-1], result.success.mean(), result.nfe.mean(), result.seconds[0],
        )  # fmt: skip
    specs = {name: ArraySpec(tuple(a.shape[1:]), a.dtype.str) for name, a in arrays.items()}
    with StoreWriter(Path(out_path), STORE_KIND, specs, attrs=attrs) as writer:
        if arrays:
            writer.append(**arrays)
        elapsed = time.perf_counter() - started
        modules = [*MODULES, *method_modules(spec["method"])]
        writer.update_attrs(provenance=provenance(spec, modules, seed, str(device), elapsed))
        path = writer.finalize()
    log.info("wrote %s (%d batches) in %.1f s", out_path, len(batches), time.perf_counter() - started)
    return path
