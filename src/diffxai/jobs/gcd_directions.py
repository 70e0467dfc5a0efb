"""Job ``gcd_directions``: one run's Global Counterfactual Directions (seed 001 §4) and the
proxy data behind them, in ``directions.zarr``.

Each run has its own source image, drawn (by the run's seed) from ``source_split``; the
five-run default is the seed's Table 3 protocol (one direction per source image). The
store holds the proxy training set (per sample that decoded to finite values ``proxy_u``
(dim,), ``proxy_f``, ``proxy_s``) and, as whole arrays, ``u0``, ``g`` (dim,), ``h`` (k, dim)
and ``eigenvalues`` (k,); its attrs the source, the proxy fit, NFE, black-box queries and
the direction settings in effect. Codes are standardised (u-space) with the latents store's
``z_mean`` / ``z_std``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffxai.data.prepared import PreparedData
from diffxai.jobs.encode_diffae import load_codec
from diffxai.methods.gcd import Directions, LatentSpace, ProxyFit, discover, with_defaults
from diffxai.methods.gcd_params import direction_params
from diffxai.metrics.perceptual import Lpips
from diffxai.models.blackbox import BlackBox
from diffxai.models.io import load_model
from diffxai.provenance import provenance
from diffxai.store import ArraySpec, StoreWriter, open_store
from diffxai.training.supervised import to_m11

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.gcd_directions"]
STORE_KIND = "gcd_directions"


def latent_space(latents_path: str | Path) -> tuple[LatentSpace, int]:
    """The z_sem standardisation of a latents store, and its encode steps."""
    store = open_store(latents_path, "latents")
    space = LatentSpace(torch.from_numpy(store.read("z_mean")), torch.from_numpy(store.read("z_std")))
    return space, int(store.attrs["encode_steps"])


def cached_latents(latents_path: str | Path) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{sample id: (z_sem (dim,), z_T (C, H, W))} of a latents store."""
    store = open_store(latents_path, "latents")
    ids, z_sem, z_t = (store.read(name) for name in ("sample_ids", "z_sem", "z_t"))
    return {int(i): (torch.from_numpy(z_sem[k]), torch.from_numpy(z_t[k])) for k, i in enumerate(ids)}


def load_blackbox(classifier_dir: str | Path, device: torch.device) -> BlackBox:
    """The classifier saved in ``classifier_dir`` on ``device``, frozen, behind a :class:`BlackBox`."""
    classifier, _ = load_model(classifier_dir)
    return BlackBox(classifier.to(device).eval().requires_grad_(False))


def source_index(data: PreparedData, split: str, seed: int, earlier_seeds: Sequence[int] = ()) -> int:
    """The dataset index of a run's source image, drawn from ``split`` by ``seed`` and
    redrawn while it is the source of an earlier run (whose seeds are ``earlier_seeds``, in
    run order): the runs' sources are distinct, as the spread over sources assumes."""
    candidates = data.indices(split)
    taken: set[int] = set()
    for run_seed in [*earlier_seeds, seed]:
        if len(taken) == len(candidates):
            runs = len(earlier_seeds) + 1
            raise ValueError(f"{runs} GCD runs need as many {split} images, it has {len(taken)}")
        draws = np.random.default_rng(run_seed)
        index = int(candidates[draws.integers(len(candidates))])
        while index in taken:
            index = int(candidates[draws.integers(len(candidates))])
        taken.add(index)
    return index


def run(
    data_path: str | Path,
    classifier_dir: str | Path,
    diffae_dir: str | Path,
    latents_path: str | Path,
    out_path: str | Path,
    params: dict[str, Any],
    lpips_weights: str | None,
    seed: int,
    device: torch.device,
    earlier_seeds: Sequence[int] = (),
) -> Directions:
    """Find and store one run's directions; ``earlier_seeds``: the seeds of the runs before
    this one, whose sources this run's differs from. The store's params are the direction
    settings in effect (``params`` with defaults, transfer settings left out)."""
    started = time.perf_counter()
    params = direction_params(with_defaults(params))
    data = PreparedData(data_path)
    codec = load_codec(diffae_dir, device)
    blackbox = load_blackbox(classifier_dir, device)
    space, encode_steps = latent_space(latents_path)
    source_id = source_index(data, params["source_split"], seed, earlier_seeds)
    source = to_m11(torch.from_numpy(data.rows("images", [source_id])))
    z_t = codec.encode(source.to(device), encode_steps)[1].cpu()
    found = discover(
        codec, blackbox, Lpips(lpips_weights, device), space, source, source_id, z_t, params,
        torch.Generator().manual_seed(seed),
    )  # fmt: skip
    write_directions(out_path, found, params, seed, str(device), time.perf_counter() - started)
    log.info(
        "source %d (class %d): proxy val MSE %.3f after %d epochs, |∇| %.3g, %d NFE, %d queries",
        source_id, found.source_class, found.fit.val_loss, found.fit.epochs, found.gradient_norm,
        found.nfe, found.queries,
    )  # fmt: skip
    return found


def write_directions(
    path: str | Path, found: Directions, params: dict[str, Any], seed: int, device: str, elapsed: float
) -> None:
    arrays = {
        "proxy_u": found.proxy_u.numpy(),
        "proxy_f": found.proxy_f.numpy(),
        "proxy_s": found.proxy_s.numpy(),
    }
    specs = {name: ArraySpec(tuple(a.shape[1:]), a.dtype.str) for name, a in arrays.items()}
    attrs = {
        "source_id": found.source_id,
        "source_class": found.source_class,
        "gradient_norm": found.gradient_norm,
        "proxy": {
            "train_mse": found.fit.train_loss,
            "val_mse": found.fit.val_loss,
            "epochs": found.fit.epochs,
        },
        "nfe": found.nfe,
        "queries": found.queries,
        "params": params,
    }
    with StoreWriter(Path(path), STORE_KIND, specs, attrs=attrs) as writer:
        writer.append(**arrays)
        for name in ("u0", "g", "h", "eigenvalues"):
            writer.put(name, getattr(found, name).numpy())
        writer.update_attrs(provenance=provenance(params, MODULES, seed, device, elapsed))
        writer.finalize()


def read_directions(path: str | Path) -> Directions:
    """A directions store back as :class:`Directions` (without the proxy's weights)."""
    store = open_store(path, STORE_KIND)
    attrs = store.attrs
    tensor = lambda name: torch.from_numpy(store.read(name))  # noqa: E731
    fit = ProxyFit(None, attrs["proxy"]["train_mse"], attrs["proxy"]["val_mse"], attrs["proxy"]["epochs"])
    return Directions(
        attrs["source_id"], attrs["source_class"], tensor("u0"), tensor("g"), tensor("h"),
        tensor("eigenvalues"), attrs["gradient_norm"], tensor("proxy_u"), tensor("proxy_f"),
        tensor("proxy_s"), fit, attrs["nfe"], attrs["queries"],
    )  # fmt: skip


def gcd_context(
    directions_path: str | Path, latents_path: str | Path, lpips_weights: str | None, device: torch.device
) -> dict[str, Any]:
    """What :func:`diffxai.methods.gcd.explain` reads from ``Models.context``."""
    space, encode_steps = latent_space(latents_path)
    return {
        "directions": read_directions(directions_path),
        "space": space,
        "latents": cached_latents(latents_path),
        "encode_steps": encode_steps,
        "lpips": Lpips(lpips_weights, device),
    }
