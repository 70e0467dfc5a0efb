"""Progress bars that stay readable in log files.

On a terminal a bar redraws every second; when stderr is a log file (every
Snakemake job) it writes a line at most every ``LOG_INTERVAL_S`` seconds, so logs
show progress without thousands of redraws.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0


def progress(iterable: Any = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` with a redraw interval suited to where stderr goes."""
    interactive = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    kwargs.setdefault("mininterval", 1.0 if interactive else LOG_INTERVAL_S)
    kwargs.setdefault("file", sys.stderr)
    return tqdm(iterable, **kwargs)
