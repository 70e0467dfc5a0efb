"""Which factors a DiffAE's semantic space holds linearly: the ceiling of a global direction.

Encodes ``--n-images`` training images with the DiffAE's semantic encoder, standardises the
codes as GCD does (the latents store's z_mean / z_std), and prints held-out linear-probe
scores (``metrics/latent_probe``): ridge R² for every factor of the dataset, logistic
accuracy for the class label, and, where the dataset has an ``angle`` factor, R² of the
label factor's doubled-angle components (factor · cos 2θ, factor · sin 2θ) next to a small
MLP's R² for the label factor itself.

python bench/gcd_latent_geometry.py [--data results/ellipses/data.zarr]
    [--diffae results/ellipses/models/diffae] [--n-images 3000]
    [--out results/bench/gcd_latent_geometry.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.neural_network import MLPRegressor

from diffxai.data.prepared import PreparedData
from diffxai.jobs.common import write_json
from diffxai.jobs.encode_diffae import load_codec
from diffxai.jobs.gcd_directions import latent_space
from diffxai.metrics.latent_probe import doubled_angle, held_out_r2, linear_accuracy, linear_r2
from diffxai.training.supervised import to_m11


def standardised_codes(data: PreparedData, diffae_dir: str, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """(u (N, dim), dataset indices (N,)) of the first ``n_images`` training images, standardised
    with the latents store's z_mean / z_std as GCD standardises them."""
    codec = load_codec(diffae_dir, torch.device("cpu"))
    space, _ = latent_space(Path(diffae_dir) / "latents.zarr")
    indices = data.indices("train")[:n_images]
    z = codec.semantic(to_m11(torch.from_numpy(data.rows("images", indices))))
    return space.to_u(z).numpy(), indices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="results/ellipses/data.zarr")
    parser.add_argument("--diffae", default="results/ellipses/models/diffae")
    parser.add_argument("--n-images", type=int, default=3000)
    parser.add_argument("--out", default="results/bench/gcd_latent_geometry.json")
    args = parser.parse_args()
    data = PreparedData(args.data)
    u, indices = standardised_codes(data, args.diffae, args.n_images)
    factors = data.array("factors")[indices]
    column = {name: factors[:, i] for i, name in enumerate(data.factor_names)}
    results: dict[str, float] = {f"r2/{name}": linear_r2(u, values) for name, values in column.items()}
    results["accuracy/label"] = linear_accuracy(u, data.array("labels")[indices])
    label_factor = data.info.get("meta", {}).get("label_factor")
    if "angle" in column and label_factor in column and label_factor != "angle":
        vectors = doubled_angle(column[label_factor], column["angle"])
        results[f"r2/{label_factor}*cos2angle"] = linear_r2(u, vectors[:, 0])
        results[f"r2/{label_factor}*sin2angle"] = linear_r2(u, vectors[:, 1])
        mlp = MLPRegressor(hidden_layer_sizes=(128, 128), max_iter=500, random_state=0)
        results[f"mlp_r2/{label_factor}"] = held_out_r2(mlp, u, column[label_factor])
    for name, value in results.items():
        print(f"{name:36s} {value:.3f}")
    write_json(Path(args.out), {"n_images": len(indices), "diffae": args.diffae, **results})


if __name__ == "__main__":
    main()
