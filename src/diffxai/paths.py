"""Paths in the config: relative to the workflow's working directory unless absolute."""

from __future__ import annotations

import os
from pathlib import Path


def resolve(path: str | os.PathLike, base: str | os.PathLike) -> Path:
    """``path`` itself if absolute (``~`` expanded), else ``base / path``."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else Path(base) / path
