"""Device and thread selection for every job."""

from __future__ import annotations

import os

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cpu``/``cuda``/``cuda:N`` as given. On CUDA,
    cuDNN and cuBLAS are made deterministic (two runs give the same arrays)."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} requested but CUDA is not available")
        deterministic_cuda()
    return device


def deterministic_cuda() -> None:
    """Deterministic cuDNN convolutions (no autotuner) and cuBLAS workspaces; an op with no
    deterministic kernel warns instead of failing the job."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def set_threads(threads: int) -> None:
    """Limit torch (and BLAS) to the threads Snakemake gave the job."""
    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global generator and return a CPU generator for data order."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
