"""Constrained sampling for the variance score: how close samples land to their target, and the cost.

For each (steps, ρ) setting, draws ``--values`` feature values from the test split (V = the
regressor's output), one DPS-guided sample per value and ``--repeats`` per value, and prints
the median |measured − target| in test stds (before rejection), the acceptance rate at ±0.3 std,
the target–measured correlation, the network evaluations per sample (forward + backward
through the UNet) and the seconds per sample. The published setting is 1,000 DDPM steps with
ρ = 0.1 (seed 002 App. D); ``--settings`` takes more as STEPS:RHO.

python bench/variance_sampling.py [--feature regressor_aspect] [--values 16] [--repeats 2]
    [--settings 1000:0.1 100:0.1 50:0.2 25:0.4 25:0.1] [--out results/bench/variance_sampling.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from diffxai.data.prepared import PreparedData
from diffxai.diffusion.constrained import sample_with_value
from diffxai.jobs.common import write_json
from diffxai.jobs.variance_sample import accepted_samples, draw_values, measure, quantise
from diffxai.models.io import load_model
from diffxai.training.supervised import to_m11


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", default="results/ellipses")
    parser.add_argument("--ddpm", default="ddpm")
    parser.add_argument("--feature", default="regressor_aspect", help="the regressor g")
    parser.add_argument("--values", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--settings", nargs="+", default=["1000:0.1", "100:0.1", "50:0.2", "25:0.4", "25:0.1"]
    )
    parser.add_argument("--tolerance", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="results/bench/variance_sampling.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.results)
    data = PreparedData(root / "data.zarr")
    unet, info = load_model(root / "models" / args.ddpm)
    regressor, _ = load_model(root / "models" / args.feature)
    regressor.requires_grad_(False)
    test = data.indices("test")
    test_values = measure(regressor, to_m11(torch.from_numpy(data.rows("images", test))), torch.device("cpu"))
    std = float(test_values.std())
    chosen = draw_values(len(test), args.values, np.random.default_rng(0))
    targets = test_values[np.repeat(chosen, args.repeats)]
    rows = []
    print(f"{args.feature}: {len(targets)} samples per setting, test std {std:.3f}")
    print("steps   rho   median|err|/std  accepted  corr    NFE/sample  s/sample")
    for setting in args.settings:
        steps, rho = int(setting.split(":")[0]), float(setting.split(":")[1])
        started = time.perf_counter()
        result = sample_with_value(
            unet, info["scheduler_config"], regressor, targets, (data.channels, *data.image_size), steps, rho,
            torch.Generator().manual_seed(0), batch_size=len(targets), desc=f"{steps} steps, rho {rho}",
        )  # fmt: skip
        seconds = time.perf_counter() - started
        measured = measure(regressor, to_m11(torch.from_numpy(quantise(result.images))), torch.device("cpu"))
        error = (measured - targets).abs().numpy() / std
        row = {
            "steps": steps,
            "rho": rho,
            "median_abs_error_std": float(np.median(error)),
            "acceptance_rate": float(
                accepted_samples(measured.numpy(), targets.numpy(), args.tolerance, std).mean()
            ),
            "correlation": float(np.corrcoef(measured.numpy(), targets.numpy())[0, 1]),
            "nfe_per_sample": result.nfe / len(targets),
            "seconds_per_sample": seconds / len(targets),
        }
        rows.append(row)
        print(
            f"{steps:5d} {rho:5.2f}   {row['median_abs_error_std']:15.3f}  {row['acceptance_rate']:8.2f}  "
            f"{row['correlation']:.3f}  {row['nfe_per_sample']:10.0f}  {row['seconds_per_sample']:8.2f}"
        )
    write_json(args.out, {"feature": args.feature, "n_samples": len(targets), "test_std": std, "rows": rows})


if __name__ == "__main__":
    main()
