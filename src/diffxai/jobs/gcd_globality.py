"""Job ``gcd_globality``: how global the first run's directions are (seed 001 Fig. 3, Table 4)
→ ``gcd_globality.json``.

The first run's g- and h-directions are applied to the first ``globality.n_images`` explained
images, a line search per image and direction: flip rate per direction, what each
direction's CEs change (the counterfactual metrics' regressors: mean |Δ| of each factor in
std units), the three h-directions of highest flip rate, and the others combined by lowest
CF loss per image. It needs only the first run's directions, so it runs beside the other
runs' discovery and CEs instead of after them; ``gcd_summary`` reads its record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffxai.data.prepared import PreparedData
from diffxai.jobs.cf_metrics import factor_metrics
from diffxai.jobs.common import write_json
from diffxai.jobs.encode_diffae import load_codec
from diffxai.jobs.explain import explained_samples
from diffxai.jobs.gcd_directions import cached_latents, latent_space, load_blackbox, read_directions
from diffxai.methods import gcd
from diffxai.methods.base import batches
from diffxai.metrics.perceptual import Lpips
from diffxai.progress import progress
from diffxai.provenance import provenance
from diffxai.training.supervised import to_m11

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.gcd_globality"]


def combine_by_cf_loss(success: np.ndarray, cf_loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image (N,) of directions (D, N): whether any direction flips it, and the index of
    the flipped direction of lowest CF loss (−1 where none flips)."""
    masked = np.where(success, cf_loss, np.inf)
    best = masked.argmin(0)
    flipped = success.any(0)
    return flipped, np.where(flipped, best, -1)


def globality(
    codec,
    blackbox,
    lpips,
    space,
    directions: gcd.Directions,
    images,
    u,
    z_t,
    params,
    n_h: int,
    measure: Callable[[torch.Tensor, torch.Tensor], dict[str, Any]] | None = None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Flip rate of g and of h1..h_{n_h} on the given images (N, C, H, W); top-3 h and the rest
    combined. ``measure(images, counterfactuals)`` (the flipped ones, (M, C, H, W) each), if
    given, says what each direction's CEs change (``factor_changes``; {} where none flips).
    Each direction's line searches run on at most ``batch_size`` images at once (all when None)."""
    sources = blackbox(images).argmax(1)
    names = ["g"] + [f"h{i}" for i in range(1, min(n_h, len(directions.h)) + 1)]
    success, loss, changes = [], [], {}
    for name in progress(names, desc="globality"):
        flipped, cf_loss, counterfactuals = [], [], []
        for rows in batches(np.arange(len(images)), batch_size):
            search, _ = gcd.transfer(
                codec, blackbox, lpips, space, images[rows], u[rows], z_t[rows],
                directions.direction(name), directions.source_class, sources[rows], params,
            )  # fmt: skip
            flipped.append(search.success)
            cf_loss.append(search.cf_loss)
            counterfactuals.append(search.path[torch.arange(len(rows)), search.index])
        flips = torch.cat(flipped)
        success.append(flips.numpy())
        loss.append(torch.cat(cf_loss).numpy())
        if measure is not None:
            chosen = torch.cat(counterfactuals)
            changes[name] = measure(images[flips], chosen[flips]) if flips.any() else {}
    success_all, loss_all = np.stack(success), np.stack(loss)
    rates = success_all.mean(1)
    result: dict[str, Any] = {
        "n_images": len(images),
        "flip_rate": {name: float(rate) for name, rate in zip(names, rates, strict=True)},
        "eigenvalues": directions.eigenvalues[: len(names) - 1].tolist(),
    }
    if measure is not None:
        result["factor_changes"] = changes
    h_order = np.argsort(-rates[1:], kind="stable") + 1
    top, rest = h_order[:3], h_order[3:]
    result["top3_h"] = [names[i] for i in top]
    if len(rest):
        flipped, best = combine_by_cf_loss(success_all[rest], loss_all[rest])
        chosen = loss_all[rest][best[flipped], np.flatnonzero(flipped)]
        result["others_combined"] = {
            "directions": [names[i] for i in rest],
            "flip_rate": float(flipped.mean()),
            "mean_cf_loss": float(chosen.mean()) if chosen.size else float("nan"),
        }
    return result


def run(
    inputs: dict[str, Any],
    params: dict[str, Any],
    settings: dict[str, Any],
    json_path: str | Path,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """``inputs``: data, classifier_dir, diffae_dir, latents, directions (the first run's),
    regressors ({name: model directory}, optional). ``settings``: globality {n_images,
    h_directions}, explained_images (the explanation's ``n_images``), batch_size (the
    explanation's), lpips_weights."""
    started = time.perf_counter()
    params = gcd.with_defaults(params)
    data = PreparedData(inputs["data"])
    blackbox = load_blackbox(inputs["classifier_dir"], device)
    space, encode_steps = latent_space(inputs["latents"])
    codec = load_codec(inputs["diffae_dir"], device)
    lpips = Lpips(settings["lpips_weights"], device)
    ids = explained_samples(data, settings["explained_images"])[: settings["globality"]["n_images"]]
    images = to_m11(torch.from_numpy(data.rows("images", ids)))
    z_sem, z_t = gcd.latent_codes(
        codec, cached_latents(inputs["latents"]), images, ids, encode_steps, len(space.mean)
    )
    regressors = inputs.get("regressors") or {}
    measure = (lambda x, cf: factor_metrics(regressors, data, x, cf, device)) if regressors else None
    record = globality(
        codec, blackbox, lpips, space, read_directions(inputs["directions"]), images,
        space.to_u(z_sem), z_t, params, settings["globality"]["h_directions"], measure,
        settings["batch_size"],
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    config = {**settings, "params": params}  # the line search shapes the record too
    record["provenance"] = provenance(config, MODULES, seed, str(device), elapsed)
    write_json(json_path, record)
    log.info("GCD globality in %.1f s: flip rates %s", elapsed, record["flip_rate"])
    return record
