"""Job ``attribute``: attribution maps of one method for the predicted classes of test images.

The maps are of the first ``n_images`` test images (as in ``explain``), for the class the
classifier predicts, in batches of ``batch_size``; FreeMCG's particle noise is seeded per
sample, so a sample's map does not depend on its batch. The store holds ``maps`` float32
(N, H, W), ``targets``, ``sample_ids``, the per-map costs (``nfe``, ``classifier_calls``,
``seconds``) and, with ``cache_particles``, FreeMCG's particles float16
(N, timesteps, K, C, H, W), one chunk per image.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffxai.data.prepared import PreparedData
from diffxai.jobs import store_kinds
from diffxai.jobs.explain import explained_samples
from diffxai.methods.base import Attribution, Models, batches, classify
from diffxai.methods.maps import compute_maps
from diffxai.models.io import load_model
from diffxai.progress import progress
from diffxai.provenance import provenance
from diffxai.store import ArraySpec, StoreWriter
from diffxai.training.supervised import to_m11

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.attribute"]
STORE_KIND = store_kinds.ATTRIBUTIONS


def load_attribution_models(
    classifier_dir: str | Path, ddpm_dir: str | Path | None, device: torch.device
) -> Models:
    """The classifier (and FreeMCG's DDPM) on ``device``, frozen, in eval mode."""
    classifier, _ = load_model(classifier_dir)
    classifier.to(device).eval().requires_grad_(False)
    if ddpm_dir is None:
        return Models(classifier)
    ddpm, info = load_model(ddpm_dir)
    ddpm.to(device).eval().requires_grad_(False)
    return Models(classifier, ddpm, info["scheduler_config"])


def predicted_maps(
    images: torch.Tensor, ids: np.ndarray, models: Models, spec: dict[str, Any], seed: int
) -> tuple[np.ndarray, Attribution, np.ndarray]:
    """Targets (the predicted classes, N), the maps of every batch and seconds per map (N,)."""
    targets = classify(models.classifier, images, ids, "on the input").argmax(1).to(images.device)
    parts, seconds = [], []
    for rows in progress(batches(np.arange(len(ids)), spec["batch_size"]), desc=f"{spec['method']} maps"):
        started = time.perf_counter()
        parts.append(
            compute_maps(
                spec["method"], images[rows], targets[rows], models, spec["params"], seed, ids[rows],
                keep_particles=spec.get("cache_particles", False),
            )
        )  # fmt: skip
        seconds.append(np.full(len(rows), (time.perf_counter() - started) / len(rows), np.float32))
    join = lambda name: np.concatenate([vars(p)[name] for p in parts])  # noqa: E731
    extras = {name: np.concatenate([p.extras[name] for p in parts]) for name in parts[0].extras}
    result = Attribution(join("maps"), join("nfe"), join("classifier_calls"), extras)
    return targets.cpu().numpy(), result, np.concatenate(seconds)


def run(
    data_path: str | Path,
    classifier_dir: str | Path,
    ddpm_dir: str | Path | None,
    out_path: str | Path,
    spec: dict[str, Any],
    seed: int,
    device: torch.device,
) -> Path:
    """Write the maps store of ``spec`` (method, params, n_images, batch_size and, for
    FreeMCG, cache_particles)."""
    started = time.perf_counter()
    data = PreparedData(data_path)
    ids = explained_samples(data, spec["n_images"])
    models = load_attribution_models(classifier_dir, ddpm_dir, device)
    images = to_m11(torch.from_numpy(data.rows("images", ids))).to(device)
    targets, result, seconds = predicted_maps(images, ids, models, spec, seed)
    arrays = {
        "sample_ids": ids.astype(np.int64),
        "targets": targets.astype(np.int64),
        "maps": result.maps,
        "nfe": result.nfe,
        "classifier_calls": result.classifier_calls,
        "seconds": seconds,
        **result.extras,
    }
    specs = {name: ArraySpec(tuple(a.shape[1:]), a.dtype.str) for name, a in arrays.items()}
    attrs = {"method": spec["method"], "params": spec["params"]}
    with StoreWriter(Path(out_path), STORE_KIND, specs, attrs=attrs) as writer:
        writer.append(**arrays)
        elapsed = time.perf_counter() - started
        writer.update_attrs(provenance=provenance(spec, MODULES, seed, str(device), elapsed))
        path = writer.finalize()
    log.info(
        "wrote %s: %d maps, %.2f s, %.0f NFE and %.0f classifier rows per map",
        out_path, len(ids), seconds.mean(), result.nfe.mean(), result.classifier_calls.mean(),
    )  # fmt: skip
    return path
