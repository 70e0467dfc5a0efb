"""Device and thread selection for every job."""

from __future__ import annotations

import os

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cpu``/``cuda``/``cuda:N`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return device


def set_threads(threads: int) -> None:
    """Limit torch (and BLAS) to the threads Snakemake gave the job."""
    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global generator and return a CPU generator for data order."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
