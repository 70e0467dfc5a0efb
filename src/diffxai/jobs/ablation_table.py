"""Job ``ablation_table``: every point of an ablation side by side (CSV and markdown); no torch.

Rows: one per setting, with the value of every varied parameter it ran with (the base value
where a one-at-a-time setting leaves a parameter alone). A grid of two or more parameters also
gets, per headline metric, the grid laid out as in thesis Table 5.3: one row per combination of
the other parameters, one column per value of the last one.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from diffxai.jobs.markdown import table_lines

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.ablation_table"]
METRIC_FIELDS = ["flip_rate", "l2", "fid", "nfe", "classifier_calls", "seconds_per_ce", "n", "n_successful"]
METRIC_HEADERS = ["flip rate ↑", "L2 ↓", "FID ↓", "NFE", "classifier calls", "s/CE", "n", "n CEs"]
COUNT_FIELDS = {"n", "n_successful"}  # the images, and the flipped CEs that L2 and FID measure
ON_SUCCESSFUL = {"l2", "fid"}
GRID_METRICS = {"flip_rate": "flip rate ↑", "l2": "L2 ↓", "fid": "FID ↓", "nfe": "NFE"}


def _cell(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _row(point: dict[str, Any], parameters: list[str]) -> dict[str, Any]:
    values = {parameter: point["params"][parameter] for parameter in parameters}
    return {"setting": point["setting"], **values, **{k: point[k] for k in METRIC_FIELDS}}


def _markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return table_lines(header, ([_cell(v) for v in row] for row in rows))


def grid_layout(rows: list[dict[str, Any]], parameters: list[str], metric: str) -> list[str]:
    """Markdown of ``metric`` over a grid: rows = values of ``parameters[:-1]``, columns = values
    of ``parameters[-1]`` (each in first-seen order); a combination with no point is left blank."""
    *row_keys, column_key = parameters
    columns = list(dict.fromkeys(row[column_key] for row in rows))
    lookup = {tuple(row[p] for p in parameters): row[metric] for row in rows}
    row_values = list(dict.fromkeys(tuple(row[p] for p in row_keys) for row in rows))
    header = [*row_keys, *(f"{column_key}={value}" for value in columns)]
    body = [[*values, *(lookup.get((*values, c), "") for c in columns)] for values in row_values]
    return _markdown_table(header, body)


def write_table(
    point_paths: list[str | Path],
    csv_path: str | Path,
    markdown_path: str | Path,
    title: str,
    parameters: list[str],
    grid: bool,
) -> None:
    """The ablation table of the varied ``parameters`` from its points, in the order given
    (CSV + markdown; ``grid``: with the per-metric grid layouts)."""
    rows = [_row(json.loads(Path(p).read_text()), parameters) for p in point_paths]
    fields = ["setting", *parameters, *METRIC_FIELDS]
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# {title}", ""]
    lines += _markdown_table([*parameters, *METRIC_HEADERS], [[row[k] for k in fields[1:]] for row in rows])
    if grid and len(parameters) > 1:
        for metric, header in GRID_METRICS.items():
            lines += ["", f"## {header}", "", *grid_layout(rows, parameters, metric)]
    Path(markdown_path).write_text("\n".join(lines) + "\n")
    log.info("ablation table %s: %d points", csv_path, len(rows))
