"""Quality of the default DDPM recipe per minute of CPU training on ellipses.

Trains the UNet of a config's ``ddpm`` model on freshly generated ellipses and,
every ``--eval-every`` steps, samples images with DDIM and measures the
Kolmogorov–Smirnov statistic of moment-measured log aspect ratio and area
(images binarised at 0.5) against held-out data. Prints one line per evaluation:
step, training minutes, loss, KS(log aspect ratio), KS(area).

    python bench/ddpm_recipe.py --steps 1500 --eval-every 500 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import yaml
from scipy.stats import ks_2samp

from diffxai.config.load import load_config
from diffxai.data import ellipses
from diffxai.data.measure import binarise, mask_moments
from diffxai.device import set_threads
from diffxai.diffusion.sampling import sample
from diffxai.models.ddpm import build_unet, scheduler_config
from diffxai.training.diffusion import train_ddpm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--override", default="{}", help="JSON merged into the ddpm model params")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--sampling-steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    set_threads(args.threads)
    config = load_config([args.config])
    dataset = config["datasets"]["ellipses"]
    params = {**config["models"]["ddpm"], **json.loads(args.override)}
    size = dataset["image_size"]
    rng = np.random.default_rng(0)
    train = ellipses.generate(dataset["ellipses"], size, dataset["n_images"], rng)
    test = ellipses.generate(dataset["ellipses"], size, 2000, rng)
    reference = mask_moments(test.masks[:, 0])
    images = torch.from_numpy(train.images).float() / 127.5 - 1.0
    unet = build_unet(params, 1, size)
    print(f"# {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M parameters; params {yaml.safe_dump(params, default_flow_style=True).strip()}")
    generator = torch.Generator().manual_seed(0)
    train_s = 0.0
    for done in range(args.eval_every, args.steps + 1, args.eval_every):
        started = time.perf_counter()
        ema, history = train_ddpm(unet, scheduler_config(params), images, {**params, "steps": done}, torch.device("cpu"), generator, checkpoint=None) if done == args.eval_every else _continue(unet, params, images, done, generator)
        train_s += time.perf_counter() - started
        samples, _ = sample(ema, scheduler_config(params), args.samples, (1, size, size), args.sampling_steps, generator=torch.Generator().manual_seed(1), progress=False)
        measured = mask_moments(binarise((samples.numpy() + 1) / 2))
        ks = {k: ks_2samp(np.nan_to_num(measured[k], nan=0.0), reference[k]).statistic for k in ("log_aspect_ratio", "area")}
        print(f"step {done} train_min {train_s / 60:.2f} loss {history['loss'][-1][1]:.4f} KS_log_ar {ks['log_aspect_ratio']:.3f} KS_area {ks['area']:.3f}", flush=True)


_STATE: dict = {}


def _continue(unet, params, images, done, generator):
    raise NotImplementedError


if __name__ == "__main__":
    main()
