"""GCD's parameters and their defaults, split by the job that uses them (no torch import,
so the workflow can split a config without loading the method).

``DIRECTION_PARAMS`` shape a run's directions (job ``gcd_directions``); changing only
``TRANSFER_PARAMS`` re-runs the line searches, not the discovery. Defaults are those of
the schema's ``gcd_params`` (the published configuration where it states one).
"""

from __future__ import annotations

from typing import Any

DIRECTION_PARAMS = {
    "proxy_samples": 25600,
    "radius": 1.0,
    "lam": 1.0,
    "h_directions": 30,
    "decode_steps": 100,
    "proxy_hidden": 256,
    "proxy_epochs": 400,
    "proxy_lr": 0.003,
    "proxy_batch": 128,
    "proxy_patience": 40,
    "val_fraction": 0.2,
    "source_split": "val",
    "score": "log_odds",
}
TRANSFER_PARAMS = {
    "direction": "g",
    "sides": "both",
    "alpha_max": 4.0,
    "alpha_steps": 16,
    "baseline_probability": 0.05,
    "lig_eps": 1e-3,
}


def direction_params(params: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``params`` that shapes the directions."""
    return {k: v for k, v in params.items() if k in DIRECTION_PARAMS}
