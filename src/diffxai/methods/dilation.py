"""The dilation of ACE's region masks, shared by ACE and the mask metrics of every run (its own
module, so that editing ACE re-runs ACE's jobs and not every run's metrics)."""

from __future__ import annotations

from typing import Any

REFERENCE_SIZE, REFERENCE_DILATION = 128, 15  # ACE's published 15 px square at 128 px


def dilation_size(params: dict[str, Any], image_size: int) -> int:
    """The dilation square's side in pixels: configured, or 15 px at 128 px scaled, odd."""
    if params.get("dilation") is not None:
        return int(params["dilation"])
    scaled = REFERENCE_DILATION * image_size / REFERENCE_SIZE
    return max(1, 2 * round((scaled - 1) / 2) + 1)
