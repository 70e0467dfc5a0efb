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


def check_shards(shards: list, shard_paths: list[str | Path]) -> None:
    """Refuse shards that are not one run's: shard i of len(shards), one method, params, batch
    size and number of explained samples, the same per-sample arrays in every shard that holds
    samples, and together exactly the run's samples, each once."""
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


def run(shard_paths: list[str | Path], out_path: str | Path, run_info: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    shards = [open_store(p, kind=STORE_KIND) for p in shard_paths]
    check_shards(shards, shard_paths)
    filled = [s for s in shards if s.n_samples]
    names = sorted(filled[0].marker["per_sample"]) if filled else []
    arrays = {name: np.concatenate([s.read(name) for s in filled]) for name in names}
    specs = {name: ArraySpec(tuple(a.shape[1:]), a.dtype.str) for name, a in arrays.items()}
    figures = summary(arrays)
    attrs = {
        **{k: shards[0].attrs[k] for k in ("method", "params", "shards")},
        **run_info,
        "summary": figures,
        "shard_provenance": [s.attrs["provenance"] for s in shards],
    }
    with StoreWriter(out_path, STORE_KIND, specs, attrs=attrs) as writer:
        writer.append(**arrays)
        writer.update_attrs(
            provenance=provenance(run_info, MODULES, None, "cpu", time.perf_counter() - started)
        )
        writer.finalize()
    log.info("gathered %d shards into %s: %s", len(shards), out_path, figures)
    return figures
