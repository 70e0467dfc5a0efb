"""Job ``encode_diffae``: the DiffAE's codes of test images (``latents.zarr``) and how well
encode → decode reconstructs them (``metrics.json``).

The store holds per sample ``sample_ids``, ``z_sem`` (latent_dim,) and ``z_t`` (C, H, W)
of the first ``n_images`` test images (DDIM inversion over ``encode_steps``), and the
standardisation of z_sem used by GCD: ``z_mean`` and ``z_std`` (latent_dim,) over the
training images (encoder only). Reconstruction MSE (on [-1, 1] pixels) and LPIPS are
measured on the first ``reconstruction_images`` of them, decoding with as many steps as
encoding (``same_steps``: the exact inverse as steps grow) and with the latents'
``decode_steps`` (``decode_steps``: set it to GCD's to see the error of GCD's decodes)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffxai.data.prepared import PreparedData
from diffxai.jobs.common import write_json
from diffxai.jobs.explain import explained_samples
from diffxai.methods.base import batches
from diffxai.metrics.perceptual import Lpips
from diffxai.models.diffae import DiffAECodec
from diffxai.models.io import load_model
from diffxai.progress import progress
from diffxai.provenance import provenance
from diffxai.store import ArraySpec, StoreWriter
from diffxai.training.supervised import to_m11

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.encode_diffae"]
STORE_KIND = "latents"
STAT_IMAGES = 4096  # training images behind z_mean and z_std


def load_codec(diffae_dir: str | Path, device: torch.device, batch: int = 256) -> DiffAECodec:
    """The trained DiffAE behind a DDIM codec, frozen, on ``device``."""
    model, info = load_model(diffae_dir)
    model.to(device).eval().requires_grad_(False)
    return DiffAECodec(model, info["scheduler_config"], batch)


def reconstruction(
    codec: DiffAECodec, images: torch.Tensor, z_sem: torch.Tensor, z_t: torch.Tensor, steps: int, lpips: Lpips
) -> dict[str, float]:
    """MSE and LPIPS of DAE(z_sem, z_T) decoded in ``steps`` against the images."""
    decoded = codec.decode(z_sem, z_t, steps).clamp(-1, 1)
    return {
        "decode_steps": steps,
        "mse": float(((decoded - images) ** 2).mean()),
        "max_abs_error": float((decoded - images).abs().amax()),
        "lpips": float(lpips(images, decoded).mean()),
    }


def image_batches(data: PreparedData, ids: np.ndarray, batch_size: int, desc: str) -> Iterator[torch.Tensor]:
    """Images ``ids`` in [-1, 1] (B, C, H, W), read from the store ``batch_size`` at a time."""
    for rows in progress(batches(ids, batch_size), desc=desc):
        yield to_m11(torch.from_numpy(data.rows("images", rows)))


def run(
    data_path: str | Path,
    diffae_dir: str | Path,
    store_path: str | Path,
    metrics_path: str | Path,
    cfg: dict[str, Any],
    lpips_weights: str | None,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """Encode, write the latents store and the reconstruction metrics; returns the metrics.
    ``cfg``: n_images, encode_steps, decode_steps, reconstruction_images, batch_size. Images
    and codes are held one batch at a time (and the reconstruction images)."""
    started = time.perf_counter()
    data = PreparedData(data_path)
    batch_size = cfg["batch_size"]
    codec = load_codec(diffae_dir, device, batch_size)
    train_ids = data.indices("train")[:STAT_IMAGES]
    train_codes = torch.cat(
        [codec.semantic(x) for x in image_batches(data, train_ids, batch_size, "z_sem stats")]
    )
    z_mean, z_std = train_codes.mean(0), train_codes.std(0).clamp_min(1e-6)
    ids = explained_samples(data, cfg["n_images"])
    n_rec = min(cfg["reconstruction_images"], len(ids))
    kept: dict[str, list[torch.Tensor]] = {"images": [], "z_sem": [], "z_t": []}  # the first n_rec
    specs = {
        "sample_ids": ArraySpec((), "<i8"),
        "z_sem": ArraySpec(tuple(train_codes.shape[1:]), "<f4"),
        "z_t": ArraySpec(tuple(data.array("images").shape[1:]), "<f4"),
    }
    attrs = {"encode_steps": cfg["encode_steps"]}
    with StoreWriter(Path(store_path), STORE_KIND, specs, attrs=attrs) as writer:
        writer.append(sample_ids=ids.astype(np.int64))
        encoded = 0
        for images in image_batches(data, ids, batch_size, "encode"):
            z_sem, z_t = (code.cpu() for code in codec.encode(images.to(device), cfg["encode_steps"]))
            writer.append(z_sem=z_sem.numpy(), z_t=z_t.numpy())
            take = max(0, min(len(images), n_rec - encoded))
            for name, value in (("images", images), ("z_sem", z_sem), ("z_t", z_t)):
                kept[name].append(value[:take])
            encoded += len(images)
        writer.put("z_mean", z_mean.cpu().numpy())
        writer.put("z_std", z_std.cpu().numpy())
        elapsed = time.perf_counter() - started
        writer.update_attrs(provenance=provenance(cfg, MODULES, seed, str(device), elapsed))
        writer.finalize()
    lpips = Lpips(lpips_weights, device)
    rec_args = tuple(torch.cat(kept[name]).to(device) for name in ("images", "z_sem", "z_t"))
    metrics: dict[str, Any] = {
        "n_images": len(ids),
        "encode_steps": cfg["encode_steps"],
        "reconstruction_images": n_rec,
        "lpips_network": lpips.name,
        "reconstruction": {
            "same_steps": reconstruction(codec, *rec_args, cfg["encode_steps"], lpips),
            "decode_steps": reconstruction(codec, *rec_args, cfg["decode_steps"], lpips),
        },
        "z_sem_std_mean": float(z_std.mean()),
    }
    metrics["wall_time_s"] = time.perf_counter() - started
    metrics["provenance"] = provenance(cfg, MODULES, seed, str(device), metrics["wall_time_s"])
    write_json(metrics_path, metrics)
    log.info("latents of %d images; reconstruction %s", len(ids), metrics["reconstruction"])
    return metrics
