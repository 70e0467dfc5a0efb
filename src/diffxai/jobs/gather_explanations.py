"""Job ``gather_explanations``: merge a run's shard stores, in shard order, into one store."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from diffxai.jobs import store_kinds
from diffxai.provenance import provenance
from diffxai.store import ArraySpec, StoreWriter, open_store

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.gather_explanations"]
STORE_KIND = store_kinds.EXPLANATIONS


SUMMARY_ARRAYS = ("success", "nfe", "nfe_backward", "seconds")


def summary(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Headline figures of a run: samples, flip rate, mean NFE and time per CE."""
    if "success" not in arrays:
        return {"n": 0}
    return {
        "n": len(arrays["success"]),
        "flip_rate": float(arrays["success"].mean()),
        "nfe_mean": float(arrays["nfe"].mean()),
        "nfe_backward_mean": float(arrays["nfe_backward"].mean()),
        "seconds_per_ce": float(arrays["seconds"].mean()),
    }


RUN_SETTINGS = ("method", "params", "batch_size", "n_explained")


def check_shards(shards: list, shard_paths: list[str | Path]) -> np.ndarray:
    """Refuse shards that are not one run's: shard i of len(shards), one method, params, batch
    size and number of explained samples, the same per-sample arrays in every shard that holds
    samples, and together exactly the run's samples, each once. Returns their sample ids in
    shard order (int64)."""
    first = shards[0].attrs
    for index, (shard, path) in enumerate(zip(shards, shard_paths, strict=True)):
        attrs = shard.attrs
        if (attrs["shard"], attrs["shards"]) != (index, len(shards)):
            raise ValueError(
                f"{path} is shard {attrs['shard']} of {attrs['shards']}, expected {index} of {len(shards)}"
            )
        if any(attrs.get(key) != first.get(key) for key in RUN_SETTINGS):
            raise ValueError(f"{path} was explained with other settings than {shard_paths[0]}")
    arrays = {tuple(sorted(s.marker["per_sample"])) for s in shards if s.n_samples}
    if len(arrays) > 1:
        raise ValueError(f"shards of one run hold different arrays: {sorted(arrays)}")
    ids = np.concatenate([s.read("sample_ids") for s in shards if s.n_samples] or [np.zeros(0, np.int64)])
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"shards {shard_paths[0]}… overlap: duplicate sample ids")
    if len(ids) != first["n_explained"]:
        raise ValueError(f"the shards hold {len(ids)} samples, their run explains {first['n_explained']}")
    return ids


def run(shard_paths: list[str | Path], out_path: str | Path, run_info: dict[str, Any]) -> dict[str, Any]:
    """Write the run's store from its shards, one shard in memory at a time; returns the
    run's :func:`summary`."""
    started = time.perf_counter()
    shards = [open_store(p, kind=STORE_KIND) for p in shard_paths]
    ids = check_shards(shards, shard_paths)
    filled = [s for s in shards if s.n_samples]
    names = sorted(filled[0].marker["per_sample"]) if filled else []
    specs = {name: ArraySpec(tuple(filled[0][name].shape[1:]), filled[0][name].dtype.str) for name in names}
    attrs = {
        **{k: shards[0].attrs[k] for k in ("method", "params", "shards")},
        **run_info,
        "shard_provenance": [s.attrs["provenance"] for s in shards],
    }
    kept: dict[str, list[np.ndarray]] = {name: [] for name in SUMMARY_ARRAYS if name in names}
    with StoreWriter(out_path, STORE_KIND, specs, attrs=attrs) as writer:
        if filled:
            writer.append(sample_ids=ids)
        for shard in filled:
            batch = {name: shard.read(name) for name in names if name != "sample_ids"}
            writer.append(**batch)
            for name, parts in kept.items():
                parts.append(batch[name])
        figures = summary({name: np.concatenate(parts) for name, parts in kept.items()})
        writer.update_attrs(
            summary=figures,
            provenance=provenance(run_info, MODULES, None, "cpu", time.perf_counter() - started),
        )
        writer.finalize()
    log.info("gathered %d shards into %s: %s", len(shards), out_path, figures)
    return figures
