"""Job ``ablation_table``: every point of an ablation side by side (CSV and markdown); no torch."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.ablation_table"]
TABLE_FIELDS = [
    "parameter",
    "value",
    "flip_rate",
    "l2",
    "fid",
    "nfe",
    "classifier_calls",
    "seconds_per_ce",
    "n",
]


def _cell(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def write_table(
    point_paths: list[str | Path], csv_path: str | Path, markdown_path: str | Path, title: str
) -> None:
    """The ablation table from its points, in the order given (CSV + markdown)."""
    rows = [{k: json.loads(Path(p).read_text())[k] for k in TABLE_FIELDS} for p in point_paths]
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TABLE_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    header = "| parameter | value | flip rate ↑ | L2 ↓ | FID ↓ | NFE | classifier calls | s/CE | n |"
    lines = [f"# {title}", "", header, "|" + "---|" * len(TABLE_FIELDS)]
    lines += ["| " + " | ".join(_cell(row[k]) for k in TABLE_FIELDS) + " |" for row in rows]
    Path(markdown_path).write_text("\n".join(lines) + "\n")
    log.info("ablation table %s: %d points", csv_path, len(rows))
