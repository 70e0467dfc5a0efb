"""GCD efficiency: the published discovery budget vs the fast setting, side by side.

For ``--sources`` source images (drawn as the workflow's runs draw them), finds the
directions with a setting and applies each run's g-direction to the first N test images;
prints per setting the flip rate (mean ± std over sources), network evaluations to find
one source's directions and per transferred CE, black-box queries, and seconds.

The published setting (50 rounds × 512 proxy samples, T_render 100, T_encode 250:
2.56 million decoder evaluations per source) is counted with the same formula the fast
run is measured with, and its time extrapolated from the fast run's seconds per
evaluation; ``--run-published`` runs it instead (hours on a CPU; meant for a GPU).
``--from-results`` takes the fast row from the workflow's own GCD runs of the same config
(``gcd_summary.json`` and each run's metrics) instead of recomputing it.

python bench/gcd_efficiency.py --n-images 100 --sources 5 [--from-results]
    [--out results/bench/gcd_efficiency.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from diffxai.config.load import deep_merge, validate_config
from diffxai.data.prepared import PreparedData
from diffxai.jobs.common import write_json
from diffxai.jobs.encode_diffae import load_codec
from diffxai.jobs.explain import explained_samples
from diffxai.jobs.gcd_directions import cached_latents, latent_space, source_index
from diffxai.methods import gcd
from diffxai.metrics.perceptual import Lpips
from diffxai.models.blackbox import BlackBox
from diffxai.models.io import load_model
from diffxai.seeds import derive_seed
from diffxai.store import open_store
from diffxai.training.supervised import to_m11

PUBLISHED_ENCODE_STEPS = 250


def run_setting(
    params: dict[str, Any], setup: dict[str, Any], seeds: list[int], encode_steps: int
) -> dict[str, Any]:
    """Discover from each seed's source image, transfer its g-direction; flip rates and costs."""
    codec, blackbox, lpips, space, data = (setup[k] for k in ("codec", "blackbox", "lpips", "space", "data"))
    images, u, z_t = setup["images"], setup["u"], setup["z_t"]
    sources = blackbox(images).argmax(1)
    flips, discovery_nfe, discovery_s, transfer_nfe, transfer_s, queries = [], [], [], [], [], []
    for seed in seeds:
        source_id = source_index(data, params["source_split"], seed)
        source = to_m11(torch.from_numpy(data.rows("images", [source_id])))
        started, nfe0, q0 = time.perf_counter(), codec.nfe, blackbox.queries
        z_t_source = codec.encode(source, encode_steps)[1]
        found = gcd.discover(
            codec,
            blackbox,
            lpips,
            space,
            source,
            source_id,
            z_t_source,
            params,
            torch.Generator().manual_seed(seed),
        )
        discovery_s.append(time.perf_counter() - started)
        discovery_nfe.append(codec.nfe - nfe0)
        queries.append(blackbox.queries - q0)
        started, nfe0 = time.perf_counter(), codec.nfe
        search, _ = gcd.transfer(
            codec, blackbox, lpips, space, images, u, z_t, found.g, found.source_class, sources, params
        )
        transfer_s.append((time.perf_counter() - started) / len(images))
        transfer_nfe.append((codec.nfe - nfe0) / len(images) + encode_steps)
        flips.append(float(search.success.float().mean()))
    return {
        "flip_rate_mean": float(np.mean(flips)),
        "flip_rate_std": float(np.std(flips)),
        "flip_rates": flips,
        "discovery_nfe": float(np.mean(discovery_nfe)),
        "discovery_queries": float(np.mean(queries)),
        "discovery_seconds": float(np.mean(discovery_s)),
        "nfe_per_ce": float(np.mean(transfer_nfe)),
        "seconds_per_ce": float(np.mean(transfer_s)),
    }


def fast_from_results(folder: Path, runs: int, encode_steps: int) -> dict[str, Any]:
    """The fast row from a workflow run: each run's directions store (discovery cost) and
    metrics.json (flip rate, transfer cost); discovery seconds from the jobs' benchmark files."""
    per_run = [json.loads((folder / f"run{k}" / "metrics.json").read_text()) for k in range(runs)]
    found = [open_store(folder / f"run{k}" / "directions.zarr", "gcd_directions").attrs for k in range(runs)]
    flips = [run["flip_rate"] for run in per_run]
    results, dataset, method = folder.parents[1], folder.parent.name, folder.name
    benchmarks = [
        results / "benchmarks" / "gcd_directions" / dataset / method / f"run{k}.tsv" for k in range(runs)
    ]
    seconds = [float(path.read_text().splitlines()[1].split("\t")[0]) for path in benchmarks if path.exists()]
    return {
        "flip_rate_mean": float(np.mean(flips)),
        "flip_rate_std": float(np.std(flips)),
        "flip_rates": flips,
        "discovery_nfe": float(np.mean([attrs["nfe"] for attrs in found])) + encode_steps,
        "discovery_queries": float(np.mean([attrs["queries"] for attrs in found])),
        "discovery_seconds": float(np.mean(seconds)) if seconds else float("nan"),
        "nfe_per_ce": float(np.mean([run["nfe"] for run in per_run])),
        "seconds_per_ce": float(np.mean([run["seconds_per_ce"] for run in per_run])),
        "source": "workflow run",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", nargs="+", default=["config.yaml"])
    parser.add_argument("--explanation", default="gcd")
    parser.add_argument("--dataset", default="ellipses")
    parser.add_argument("--n-images", type=int, default=100)
    parser.add_argument("--sources", type=int, default=5)
    parser.add_argument("--run-published", action="store_true")
    parser.add_argument("--from-results", action="store_true")
    parser.add_argument("--out", default="results/bench/gcd_efficiency.json")
    args = parser.parse_args()
    raw: dict[str, Any] = {}
    for path in args.config:
        raw = deep_merge(raw, yaml.safe_load(Path(path).read_text()) or {})
    config = validate_config(raw)
    entry = config["explanations"][args.explanation]
    published_raw = copy.deepcopy(raw)
    published_raw["explanations"][args.explanation]["params"] = {}
    published = validate_config(published_raw)["explanations"][args.explanation]["params"]
    root = Path(config["results"]) / args.dataset
    models = root / "models"
    torch.manual_seed(0)
    device = torch.device("cpu")
    data = PreparedData(root / "data.zarr")
    codec = load_codec(models / entry["diffae"], device)
    classifier, _ = load_model(models / entry["classifier"])
    latents = models / entry["diffae"] / "latents.zarr"
    space, encode_steps = latent_space(latents)
    cached = cached_latents(latents)
    ids = explained_samples(data, args.n_images)
    missing = [int(i) for i in ids if int(i) not in cached]
    if missing:
        raise SystemExit(f"latents.zarr lacks test images {missing[:5]}...: raise latents.n_images")
    setup = {
        "codec": codec,
        "blackbox": BlackBox(classifier.eval().requires_grad_(False)),
        "lpips": Lpips(config["counterfactual_metrics"]["lpips_weights"], device),
        "space": space,
        "data": data,
        "images": to_m11(torch.from_numpy(data.rows("images", ids))),
        "u": space.to_u(torch.stack([cached[int(i)][0] for i in ids])),
        "z_t": torch.stack([cached[int(i)][1] for i in ids]),
    }
    seeds = [
        derive_seed(config["seed"], args.dataset, args.explanation, f"run{k}") for k in range(args.sources)
    ]
    if args.from_results:
        fast = fast_from_results(root / args.explanation, args.sources, encode_steps)
    else:
        fast = run_setting(gcd.with_defaults(entry["params"]), setup, seeds, encode_steps)
    seconds_per_nfe = fast["discovery_seconds"] / fast["discovery_nfe"]
    published_nfe = gcd.discovery_nfe(published, PUBLISHED_ENCODE_STEPS)
    if args.run_published:
        published_row = run_setting(gcd.with_defaults(published), setup, seeds, PUBLISHED_ENCODE_STEPS)
    else:
        published_row = {
            "discovery_nfe": float(published_nfe),
            "discovery_seconds_extrapolated": published_nfe * seconds_per_nfe,
            "nfe_per_ce": PUBLISHED_ENCODE_STEPS
            + (2 if published["sides"] == "both" else 1)
            * (published["alpha_steps"] + 1)
            * published["decode_steps"],
            "run": False,
        }
    result = {
        "dataset": args.dataset,
        "n_images": len(ids),
        "sources": args.sources,
        "fast_params": entry["params"],
        "fast": fast,
        "published": published_row,
        "discovery_nfe_ratio": published_row["discovery_nfe"] / fast["discovery_nfe"],
    }
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
