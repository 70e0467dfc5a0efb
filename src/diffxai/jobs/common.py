"""What every job does first: logging to its log file, threads, seeds, JSON output."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from diffxai.device import resolve_device, set_threads
from diffxai.store import jsonable

log = logging.getLogger("diffxai")


def setup_job(log_path: str | os.PathLike | None, threads: int = 1, device: str = "auto"):
    """Send logs and progress bars (stderr) to ``log_path``; set threads; resolve the device."""
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the job
        sys.stderr = stream
    else:
        stream = sys.stderr
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(stream)],
        force=True,
    )
    set_threads(threads)
    resolved = resolve_device(device)
    log.info("device %s, %d thread(s)", resolved, threads)
    return resolved


def write_json(path: str | os.PathLike, record: Any) -> None:
    """Write ``record`` as indented JSON, via a temporary file renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(jsonable(record), indent=2))
    tmp.replace(path)
