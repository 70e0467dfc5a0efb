"""Job ``variance_sample``: samples of p(X | V = v) for one feature of a variance analysis (seed 002 §3.3).

Feature values are those of ``values`` test images drawn at random (so they follow the real
test distribution); each value gets ``samples_per_value`` samples:

- ``continuous``: V = g(X) for a regressor g; the targets are g of the drawn test images and the
  samples come from DPS-guided DDPM sampling (eq. 8). Every sample's measured g(x) is stored, and
  a sample is accepted when |g(x) − v| ≤ ``tolerance`` × std of g over the test split (App. D.1).
- ``region``: V = the content of a masked region (dilated by ``dilation`` pixels) of the drawn
  test image; the rest is resampled (inpainting, ``resample`` passes per step). No measurement,
  every sample accepted.
- ``plain``: unconstrained DDPM samples with the same sampler, as many as one feature draws (the
  coverage baseline of Table 3).

Output ``samples.zarr`` (kind ``variance_samples``), per sample: ``images`` uint8 (N, C, H, W),
``value_index`` int32 (which drawn value), ``source_index`` int64 (the drawn test image, in the
data store), ``source_label`` int64, ``target`` / ``measured`` float32 (NaN without a
measurement), ``accepted`` uint8; attributes: the feature, its test std, NFE, times, provenance.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from diffxai.data.prepared import PreparedData, to_uint8
from diffxai.diffusion.constrained import ConstrainedSamples, sample_with_region, sample_with_value
from diffxai.diffusion.sampling import sample
from diffxai.models.batched import batched_outputs
from diffxai.models.io import load_model
from diffxai.provenance import provenance
from diffxai.store import ArraySpec, StoreWriter
from diffxai.training.supervised import to_m11

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.variance_sample"]
STORE_KIND = "variance_samples"


def quantise(images_m11: torch.Tensor) -> np.ndarray:
    """uint8 images (N, C, H, W) of float images in [-1, 1], as the data store holds them."""
    return to_uint8(((images_m11.numpy() + 1) / 2).clip(0, 1))


def draw_values(n_test: int, values: int, rng: np.random.Generator) -> np.ndarray:
    """Positions (values,) into the test split, without replacement (with it when values > n_test)."""
    return rng.choice(n_test, size=values, replace=values > n_test)


def dilate(masks: torch.Tensor, pixels: int) -> torch.Tensor:
    """Binary masks (N, 1, H, W) grown by ``pixels`` in every direction (a square structuring element)."""
    if pixels == 0:
        return masks
    return F.max_pool2d(masks.float(), kernel_size=2 * pixels + 1, stride=1, padding=pixels)


def accepted_samples(measured: np.ndarray, target: np.ndarray, tolerance: float, std: float) -> np.ndarray:
    """Boolean (N,): the measured value lies within ``tolerance`` × ``std`` of the target."""
    return np.abs(measured - target) <= tolerance * std


def run(
    inputs: dict[str, Any],
    feature: dict[str, Any],
    sampling: dict[str, Any],
    store_path: str | Path,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """Write ``samples.zarr``; ``inputs``: data, ddpm_dir, regressor_dir (continuous features only).
    Returns the store's summary attributes."""
    started = time.perf_counter()
    data = PreparedData(inputs["data"])
    unet, info = load_model(inputs["ddpm_dir"])
    unet = unet.to(device)
    test = data.indices("test")
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    sources = test[draw_values(len(test), sampling["values"], rng)]
    repeats = sampling["samples_per_value"]
    value_index = np.repeat(np.arange(len(sources)), repeats)
    source_index = sources[value_index]
    shape = (data.channels, *data.image_size)
    n = len(source_index)
    target = measured = np.full(n, np.nan, dtype=np.float32)
    feature_std = None
    kind = feature["kind"]
    if kind == "continuous":
        regressor, _ = load_model(inputs["regressor_dir"])
        regressor = regressor.to(device).requires_grad_(False)
        test_values = batched_outputs(regressor, to_m11(torch.from_numpy(data.rows("images", test))), device)
        feature_std = float(test_values.std())
        by_source = dict(zip(test.tolist(), test_values.tolist(), strict=True))
        target = np.array([by_source[i] for i in source_index], dtype=np.float32)
        result = sample_with_value(
            unet,
            info["scheduler_config"],
            regressor,
            torch.from_numpy(target),
            shape,
            sampling["steps"],
            sampling["rho"],
            generator,
            batch_size=sampling["batch_size"],
        )
        # measured on the stored (uint8) images, the ones the classifier will see
        stored = to_m11(torch.from_numpy(quantise(result.images)))
        measured = batched_outputs(regressor, stored, device).numpy()
        accepted = accepted_samples(measured, target, sampling["tolerance"], feature_std)
    elif kind == "region":
        known = to_m11(torch.from_numpy(data.rows("images", source_index)))
        channel = data.mask_names.index(feature["mask"])
        masks = torch.from_numpy(data.array("masks")[source_index, channel][:, None])
        result = sample_with_region(
            unet,
            info["scheduler_config"],
            known,
            dilate(masks, feature["dilation"]),
            sampling["steps"],
            generator,
            resample=feature["resample"],
            batch_size=sampling["batch_size"],
        )
        accepted = np.ones(n, dtype=bool)
    elif kind == "plain":
        images, nfe = sample(
            unet, info["scheduler_config"], n, shape, sampling["steps"], "ddpm", generator,
            batch_size=sampling["batch_size"], device=device,
        )  # fmt: skip
        result = ConstrainedSamples(images, nfe)
        accepted = np.ones(n, dtype=bool)
    else:
        raise ValueError(f"unknown feature kind {kind!r}; allowed: continuous, region, plain")
    images = quantise(result.images)
    summary = _summary(kind, target, measured, accepted, feature_std, result.nfe, n)
    summary["wall_time_s"] = time.perf_counter() - started
    columns = {
        "images": images,
        "value_index": value_index.astype(np.int32),
        "source_index": source_index.astype(np.int64),
        "source_label": data.array("labels")[source_index].astype(np.int64),
        "target": target,
        "measured": measured,
        "accepted": accepted.astype(np.uint8),
    }
    specs = {name: ArraySpec(tuple(array.shape[1:]), str(array.dtype)) for name, array in columns.items()}
    attrs = {
        "feature": feature,
        "sampling": sampling,
        "summary": summary,
        "provenance": provenance(
            {"feature": feature, "sampling": sampling}, MODULES, seed, str(device), summary["wall_time_s"]
        ),
    }
    with StoreWriter(store_path, STORE_KIND, specs, attrs=attrs, rows_hint=n) as writer:
        writer.append(**columns)
        writer.finalize()
    log.info("%s samples: %s", kind, summary)
    return summary


def _summary(
    kind: str,
    target: np.ndarray,
    measured: np.ndarray,
    accepted: np.ndarray,
    feature_std: float | None,
    nfe: int,
    n: int,
) -> dict[str, Any]:
    """NFE and acceptance; for measured features, |measured − target| in test stds before rejection."""
    summary: dict[str, Any] = {
        "kind": kind,
        "n_samples": n,
        "nfe": nfe,
        "acceptance_rate": float(accepted.mean()),
    }
    if feature_std is not None:
        error = np.abs(measured - target) / feature_std
        summary.update(
            feature_std=feature_std,
            median_abs_error_std=float(np.median(error)),
            mean_abs_error_std=float(error.mean()),
            target_measured_correlation=float(np.corrcoef(target, measured)[0, 1]),
        )
    return summary
