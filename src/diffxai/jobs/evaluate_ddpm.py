"""Job ``evaluate_ddpm``: sample the DDPM and compare samples with test images.

- FID in the self-supervised encoder's feature space, next to the same statistic
  between as many real training images and the test set (the floor at this n);
- per regressor, the KS statistic between its measurements of samples and of test
  images (both measured by the same regressor, so its bias cancels);
- for data with an ``ellipse`` mask, also KS of moment-measured factors of
  binarised samples vs the stored masks (a measurement independent of any model),
  the share of samples that binarise to no, one or several blobs (every data image
  holds one ellipse), and the moment KS over the one-blob samples alone, which
  separates the shapes drawn from the extra blobs (whose moments describe no ellipse).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy.stats import ks_2samp

from diffxai.data.blobs import component_counts
from diffxai.data.measure import binarise, mask_moments
from diffxai.data.prepared import PreparedData
from diffxai.diffusion.sampling import sample
from diffxai.jobs.common import write_json
from diffxai.metrics.frechet import fid_from_features
from diffxai.models.batched import batched_outputs
from diffxai.models.io import load_model
from diffxai.provenance import provenance
from diffxai.training.simsiam import encode
from diffxai.training.supervised import to_m11

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.evaluate_ddpm"]
MOMENT_FACTORS = ("log_aspect_ratio", "area")


def _ks(samples: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    samples = np.nan_to_num(samples, nan=0.0)
    result = ks_2samp(samples, reference)
    return {
        "ks": float(result.statistic),
        "p_value": float(result.pvalue),
        "samples_mean": float(samples.mean()),
        "samples_std": float(samples.std()),
        "data_mean": float(reference.mean()),
        "data_std": float(reference.std()),
    }


def _blob_shares(counts: np.ndarray) -> dict[str, float]:
    """Shares of (N,) blob counts that are 0, 1 and more than 1."""
    return {
        "none": float(np.mean(counts == 0)),
        "one": float(np.mean(counts == 1)),
        "several": float(np.mean(counts > 1)),
    }


def blob_metrics(
    sample_masks: np.ndarray,
    sample_moments: dict[str, np.ndarray],
    test_masks: np.ndarray,
    test_moments: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Blob-count shares of binarised samples and test masks (N, H, W), and the moment KS
    over the one-blob masks of both."""
    sample_counts, test_counts = component_counts(sample_masks), component_counts(test_masks)
    one_sample, one_test = sample_counts == 1, test_counts == 1
    ks_one = (
        {k: _ks(sample_moments[k][one_sample], test_moments[k][one_test]) for k in MOMENT_FACTORS}
        if one_sample.any() and one_test.any()
        else {}
    )
    return {
        "blobs": {"samples": _blob_shares(sample_counts), "test": _blob_shares(test_counts)},
        "ks_moments_one_blob": ks_one,
    }


def save_grid(images_m11: torch.Tensor, path: Path, columns: int = 8) -> None:
    """Save up to 64 images (N, C, H, W) in [-1, 1] as one PNG grid."""
    images = ((images_m11[:64].clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    rows = -(-len(images) // columns)
    canvas = np.zeros((rows * images.shape[2], columns * images.shape[3], images.shape[1]), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        canvas[
            r * image.shape[1] : (r + 1) * image.shape[1], c * image.shape[2] : (c + 1) * image.shape[2]
        ] = image.transpose(1, 2, 0)
    Image.fromarray(canvas.squeeze(-1) if canvas.shape[-1] == 1 else canvas).save(path)


def run(
    data_path: str | Path,
    ddpm_dir: str | Path,
    encoder_dir: str | Path | None,
    regressor_dirs: dict[str, str],
    metrics_path: str | Path,
    grid_path: str | Path,
    evaluation: dict[str, Any],
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    started = time.perf_counter()
    data = PreparedData(data_path)
    unet, info = load_model(ddpm_dir)
    unet = unet.to(device)
    n = evaluation["samples"]
    generator = torch.Generator().manual_seed(seed)
    shape = (data.channels, *data.image_size)
    sampling_started = time.perf_counter()
    samples, nfe = sample(
        unet,
        info["scheduler_config"],
        n,
        shape,
        evaluation["sampling_steps"],
        evaluation["sampler"],
        generator,
        device=device,
    )
    sampling_s = time.perf_counter() - sampling_started
    save_grid(samples, Path(grid_path))
    test = to_m11(torch.from_numpy(data.rows("images", data.indices("test"))))
    metrics: dict[str, Any] = {
        "n_samples": n,
        "n_test": len(test),
        "sampler": evaluation["sampler"],
        "sampling_steps": evaluation["sampling_steps"],
        "nfe": nfe,
        "sampling_time_s": sampling_s,
        "ks": {},
    }
    if encoder_dir is not None:
        encoder, _ = load_model(encoder_dir)
        encoder = encoder.to(device)
        train_idx = data.indices("train")[:n]
        reference = to_m11(torch.from_numpy(data.rows("images", train_idx)))
        test_features = encode(encoder, test, device).numpy()
        metrics["fid_encoder"] = fid_from_features(encode(encoder, samples, device).numpy(), test_features)
        metrics["fid_encoder_train_vs_test"] = fid_from_features(
            encode(encoder, reference, device).numpy(), test_features
        )
    for name, directory in regressor_dirs.items():
        regressor, reg_info = load_model(directory)
        regressor = regressor.to(device)
        measured, reference = (batched_outputs(regressor, x, device).numpy() for x in (samples, test))
        metrics["ks"][reg_info["target"]] = {"measured_by": name, **_ks(measured, reference)}
    if "ellipse" in data.mask_names:
        masks = data.array("masks")[data.indices("test"), data.mask_names.index("ellipse")]
        reference_moments = mask_moments(masks)
        sample_masks = binarise((samples.numpy() + 1) / 2)
        sample_moments = mask_moments(sample_masks)
        metrics["ks_moments"] = {k: _ks(sample_moments[k], reference_moments[k]) for k in MOMENT_FACTORS}
        metrics.update(blob_metrics(sample_masks, sample_moments, masks, reference_moments))
    elapsed = time.perf_counter() - started
    metrics["wall_time_s"] = elapsed
    metrics["training"] = {k: info.get("training", {}).get(k) for k in ("train_time_s",)}
    metrics["provenance"] = provenance(evaluation, MODULES, seed, str(device), elapsed)
    log.info("DDPM evaluation: %s", {k: v for k, v in metrics.items() if k != "provenance"})
    write_json(metrics_path, metrics)
    return metrics
