"""What every job does first: logging to its log file, threads, device, JSON output.

Torch is imported only by jobs that ask for a device, so the data-family jobs (preparation,
gathering, tables, the report) run in an environment without it (``envs/data.yaml``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from diffxai.store import jsonable

log = logging.getLogger("diffxai")


def setup_logging(log_path: str | os.PathLike | None, threads: int = 1) -> None:
    """Send logs and progress bars (stderr) to ``log_path`` and cap BLAS threads; no torch."""
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
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, int(threads))))
    log.info("%d thread(s)", threads)


def setup_job(log_path: str | os.PathLike | None, threads: int = 1, device: str = "auto"):
    """:func:`setup_logging`, then torch's threads and the resolved device (``auto``, ``cpu``, ``cuda:N``)."""
    from diffxai.device import resolve_device, set_threads  # torch: only the jobs that need it

    setup_logging(log_path, threads)
    set_threads(threads)
    resolved = resolve_device(device)
    log.info("device %s", resolved)
    return resolved


COUNTS_KEY = "n_of"  # a record's {metric or dotted prefix: sample count} where it is not the record's n


def sample_count(metric: str, n: int | None, counts: dict[str, int]) -> int | None:
    """The samples behind ``metric`` (a dotted path): the count of its longest prefix in
    ``counts`` (a record's ``n_of``), else the record's ``n``."""
    matches = [prefix for prefix in counts if metric == prefix or metric.startswith(prefix + ".")]
    return counts[max(matches, key=len)] if matches else n


def write_json(path: str | os.PathLike, record: Any) -> None:
    """Write ``record`` as indented JSON, via a temporary file renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(jsonable(record), indent=2))
    tmp.replace(path)
