"""Job ``encode_diffae``: the DiffAE's codes of test images (``latents.zarr``) and how well
encode → decode reconstructs them (``metrics.json``).

The store holds per sample ``sample_ids``, ``z_sem`` (latent_dim,) and ``z_t`` (C, H, W)
of the first ``n_images`` test images (DDIM inversion over ``encode_steps``), and the
standardisation of z_sem used by GCD: ``z_mean`` and ``z_std`` (latent_dim,) over the
training images (encoder only). Reconstruction MSE (on [-1, 1] pixels) and LPIPS are
measured on the first ``reconstruction_images`` of them, decoding with as many steps as
encoding (the exact inverse as steps grow) and with GCD's ``decode_steps``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffxai.data.prepared import PreparedData
from diffxai.jobs.common import write_json
from diffxai.jobs.explain import explained_samples
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
    ``cfg``: n_images, encode_steps, decode_steps, reconstruction_images, batch_size."""
    started = time.perf_counter()
    data = PreparedData(data_path)
    codec = load_codec(diffae_dir, device, cfg["batch_size"])
    train_ids = data.indices("train")[:STAT_IMAGES]
    train_codes = codec.semantic(to_m11(torch.from_numpy(data.rows("images", train_ids))))
    z_mean, z_std = train_codes.mean(0), train_codes.std(0).clamp_min(1e-6)
    ids = explained_samples(data, cfg["n_images"])
    images = to_m11(torch.from_numpy(data.rows("images", ids)))
    z_sem, z_t = [], []
    for rows in progress(torch.arange(len(ids)).split(cfg["batch_size"]), desc="encode"):
        codes, noise = codec.encode(images[rows].to(device), cfg["encode_steps"])
        z_sem.append(codes.cpu())
        z_t.append(noise.cpu())
    z_sem_all, z_t_all = torch.cat(z_sem), torch.cat(z_t)
    lpips = Lpips(lpips_weights, device)
    n_rec = min(cfg["reconstruction_images"], len(ids))
    rec_args = (images[:n_rec].to(device), z_sem_all[:n_rec].to(device), z_t_all[:n_rec].to(device))
    metrics: dict[str, Any] = {
        "n_images": len(ids),
        "encode_steps": cfg["encode_steps"],
        "reconstruction_images": n_rec,
        "lpips_network": lpips.name,
        "reconstruction": {
            "same_steps": reconstruction(codec, *rec_args, cfg["encode_steps"], lpips),
            "gcd_steps": reconstruction(codec, *rec_args, cfg["decode_steps"], lpips),
        },
        "z_sem_std_mean": float(z_std.mean()),
    }
    arrays = {
        "sample_ids": ids.astype(np.int64),
        "z_sem": z_sem_all.numpy().astype(np.float32),
        "z_t": z_t_all.numpy().astype(np.float32),
    }
    specs = {name: ArraySpec(tuple(a.shape[1:]), a.dtype.str) for name, a in arrays.items()}
    with StoreWriter(
        Path(store_path), STORE_KIND, specs, attrs={"encode_steps": cfg["encode_steps"]}
    ) as writer:
        writer.append(**arrays)
        writer.put("z_mean", z_mean.cpu().numpy())
        writer.put("z_std", z_std.cpu().numpy())
        elapsed = time.perf_counter() - started
        writer.update_attrs(provenance=provenance(cfg, MODULES, seed, str(device), elapsed))
        writer.finalize()
    metrics["wall_time_s"] = time.perf_counter() - started
    metrics["provenance"] = provenance(cfg, MODULES, seed, str(device), metrics["wall_time_s"])
    write_json(metrics_path, metrics)
    log.info("latents of %d images; reconstruction %s", len(ids), metrics["reconstruction"])
    return metrics
