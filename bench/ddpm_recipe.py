"""DDPM quality per minute of CPU training on ellipses (the default recipe, or a variant).

Trains the UNet of a config's ``ddpm`` model on freshly generated ellipses and, every
``--eval-every`` steps (resuming from the training checkpoint), samples with DDIM and
measures the Kolmogorov-Smirnov statistic of moment-measured log aspect ratio and area
(samples binarised at 0.5) against held-out data. Prints one line per evaluation.

    python bench/ddpm_recipe.py --steps 1500 --eval-every 300 --threads 1
    python bench/ddpm_recipe.py --override '{"train": {"lr": 0.001}}'
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import ks_2samp

from diffxai.config.load import deep_merge, load_config
from diffxai.data import ellipses
from diffxai.data.measure import binarise, mask_moments
from diffxai.device import set_threads
from diffxai.diffusion.sampling import sample
from diffxai.models.ddpm import build_unet, scheduler_config
from diffxai.training.diffusion import train_ddpm

FACTORS = ("log_aspect_ratio", "area")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", default=["config.yaml"])
    parser.add_argument("--override", default="{}", help="JSON merged into the ddpm model config")
    parser.add_argument("--steps", type=int, default=None, help="default: the config's train.steps")
    parser.add_argument("--eval-every", type=int, default=300)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--sampling-steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    config = load_config(args.config)
    dataset = config["datasets"]["ellipses"]
    model = deep_merge(config["models"]["ddpm"], json.loads(args.override))
    steps = args.steps or model["train"]["steps"]
    size = dataset["image_size"]
    rng = np.random.default_rng(dataset["seed"])
    n_train = int(dataset["n_images"] * (1 - dataset["split"]["val"] - dataset["split"]["test"]))
    train = ellipses.generate(dataset["ellipses"], size, n_train, rng)
    held_out = mask_moments(ellipses.generate(dataset["ellipses"], size, 2000, rng).masks[:, 0])
    images = torch.from_numpy(train.images).float() / 127.5 - 1.0
    unet = build_unet(model["unet"], 1, size)
    schedule = scheduler_config(model["schedule"])
    print(
        f"# {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M parameters, {n_train} training images, "
        f"{args.threads} thread(s); ddpm config: {json.dumps(model)}"
    )
    print("step  train_min  loss     KS_log_aspect_ratio  KS_area")
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "checkpoint.pt"
        for done in [*range(args.eval_every, steps, args.eval_every), steps]:
            train_params = {**model["train"], "steps": steps, "checkpoint_every": steps}
            ema, history = train_ddpm(
                unet,
                schedule,
                images,
                train_params,
                torch.device("cpu"),
                generator,
                checkpoint=checkpoint,
                stop_at=done,
            )
            started = time.perf_counter()
            samples, _ = sample(
                ema,
                schedule,
                args.samples,
                (1, size, size),
                args.sampling_steps,
                generator=torch.Generator().manual_seed(1),
                progress=False,
            )
            measured = mask_moments(binarise((samples.numpy() + 1) / 2))
            ks = [ks_2samp(np.nan_to_num(measured[k], nan=0.0), held_out[k]).statistic for k in FACTORS]
            print(
                f"{done:5d}  {history['train_time_s'] / 60:9.2f}  {history['loss'][-1][1]:.4f}   "
                f"{ks[0]:19.3f}  {ks[1]:7.3f}   (sampling {time.perf_counter() - started:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
