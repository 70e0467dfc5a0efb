"""Counterfactual efficiency: published vs fast settings of DiME, ACE and FreeMCG, side by side.

For each dataset, explains the same first N test images with each setting and prints
flip rate, diffusion-network evaluations per CE (forward, and backward through the
UNet), classifier calls (FreeMCG: black-box queries), seconds per CE, and the ratio of
wall time to the network's own cost (forward-only NFE × time of one batched UNet forward
+ backward NFE × time of one batched forward+backward, per image, at the same batch
size): a ratio near 1 means
little overhead beyond the diffusion network itself.

python bench/cf_efficiency.py --n-images 32 [--datasets ellipses] [--out results/bench/cf_efficiency.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from diffxai.config.load import deep_merge, validate_config
from diffxai.data.prepared import PreparedData
from diffxai.jobs.common import write_json
from diffxai.jobs.explain import explained_samples, load_models
from diffxai.methods.registry import METHODS
from diffxai.training.supervised import to_m11

# method -> config entry with its fast setting
FAST_ENTRIES = {"dime": "dime", "ace": "ace_l1", "freemcg": "freemcg"}


def compared_settings(config_files: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The validated config and, per method, the published (schema-default) and fast entries."""
    raw: dict[str, Any] = {}
    for path in config_files:
        raw = deep_merge(raw, yaml.safe_load(Path(path).read_text()) or {})
    config = validate_config(raw)
    published = copy.deepcopy(raw)
    for entry_name in FAST_ENTRIES.values():
        kept = {k: v for k, v in raw["explanations"][entry_name]["params"].items() if k == "distance"}
        published["explanations"][entry_name]["params"] = kept
    defaults = validate_config(published)
    compared = {}
    for method, entry_name in FAST_ENTRIES.items():
        compared[f"{method} published"] = defaults["explanations"][entry_name]
        compared[f"{method} fast"] = config["explanations"][entry_name]
    return config, compared


def unet_seconds_per_image(ddpm: torch.nn.Module, shape: tuple[int, ...], batch: int) -> tuple[float, float]:
    """Seconds per image of one batched forward, and of one forward+backward w.r.t. the input."""
    x = torch.randn(batch, *shape)
    t = torch.full((batch,), 500, dtype=torch.long)
    with torch.no_grad():
        ddpm(x, t)
        started = time.perf_counter()
        for _ in range(5):
            ddpm(x, t)
        forward = (time.perf_counter() - started) / 5 / batch
    x.requires_grad_(True)
    started = time.perf_counter()
    for _ in range(3):
        torch.autograd.grad(ddpm(x, t).sample.sum(), x)
    backward = (time.perf_counter() - started) / 3 / batch
    return forward, backward


def run_setting(entry: dict[str, Any], models, images, ids, seed: int) -> dict[str, Any]:
    started = time.perf_counter()
    result = METHODS[entry["method"]](
        images, ids, models, entry["params"], seed, batch_size=entry["batch_size"]
    )
    wall = time.perf_counter() - started
    success, nfe, backward = result.success, result.nfe, result.nfe_backward
    return {
        "params": entry["params"],
        "n": len(ids),
        "flip_rate": float(success.mean()),
        "nfe": float(nfe.mean()),
        "nfe_backward": float(backward.mean()),
        "classifier_calls": float(result.classifier_calls.mean()),
        "seconds_per_ce": wall / len(ids),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", nargs="+", default=["config.yaml"])
    parser.add_argument("--datasets", nargs="+", default=None)
    parser.add_argument("--n-images", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=list(FAST_ENTRIES), choices=list(FAST_ENTRIES))
    parser.add_argument("--settings", nargs="+", default=["published", "fast"], choices=["published", "fast"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config, compared = compared_settings(args.config)
    root = Path(config["results"])
    datasets = args.datasets or next(iter(compared.values()))["datasets"]
    report: dict[str, Any] = {}
    for dataset in datasets:
        data = PreparedData(root / dataset / "data.zarr")
        ids = explained_samples(data, args.n_images)
        images = to_m11(torch.from_numpy(data.rows("images", ids)))
        rows = {}
        for name, entry in compared.items():
            method, setting = name.split()
            if method not in args.methods or setting not in args.settings:
                continue
            perceptual = dict(entry["perceptual"]) if entry["method"] == "dime" else None
            if perceptual and perceptual["network"] == "encoder":
                perceptual["encoder_dir"] = str(root / dataset / "models" / perceptual["encoder"])
            models = load_models(
                root / dataset / "models" / entry["classifier"], root / dataset / "models" / entry["ddpm"],
                perceptual, torch.device("cpu"),
            )  # fmt: skip
            # the network's speed is measured right before and after the run, under the same load
            before = unet_seconds_per_image(models.ddpm, models.image_shape, entry["batch_size"])
            row = run_setting(entry, models, images, ids, args.seed)
            after = unet_seconds_per_image(models.ddpm, models.image_shape, entry["batch_size"])
            forward, backward = ((b + a) / 2 for b, a in zip(before, after, strict=True))
            network = (row["nfe"] - row["nfe_backward"]) * forward + row["nfe_backward"] * backward
            row.update(unet_forward_s=forward, unet_forward_backward_s=backward, network_s_per_ce=network,
                       overhead_ratio=row["seconds_per_ce"] / network)  # fmt: skip
            rows[name] = row
            print(
                f"[{dataset}] {name}: {json.dumps({k: v for k, v in row.items() if k != 'params'})}",
                flush=True,
            )
        for method in args.methods if len(args.settings) == 2 else []:
            published, fast = rows[f"{method} published"], rows[f"{method} fast"]
            passes = lambda r: r["nfe"] + r["nfe_backward"]  # noqa: E731 - network passes per CE
            rows[f"{method} fast vs published"] = {
                "flip_rate_difference_points": 100 * (fast["flip_rate"] - published["flip_rate"]),
                "network_passes_reduction": passes(published) / passes(fast),
            }
        report[dataset] = rows
    print("\n| dataset | setting | flip rate | NFE fwd | NFE bwd | classifier calls | s/CE | wall/network |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for dataset, rows in report.items():
        for name, row in rows.items():
            if "flip_rate" in row:
                print(
                    f"| {dataset} | {name} | {row['flip_rate']:.3f} | {row['nfe']:.0f} | "
                    f"{row['nfe_backward']:.0f} | {row['classifier_calls']:.0f} | "
                    f"{row['seconds_per_ce']:.2f} | {row['overhead_ratio']:.2f} |"
                )
    for dataset, rows in report.items():
        for method in args.methods if len(args.settings) == 2 else []:
            cmp = rows[f"{method} fast vs published"]
            print(
                f"{dataset} {method}: fast uses {cmp['network_passes_reduction']:.1f}x fewer network passes; "
                f"flip rate {cmp['flip_rate_difference_points']:+.1f} points"
            )
    if args.out:
        write_json(args.out, report)


if __name__ == "__main__":
    main()
