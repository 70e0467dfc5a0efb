"""Job ``aggregate``: every metric of the run in one tidy table, and the report's method tables.

Each input is described by an entry {path, kind, dataset, classifier, method, setting}; kinds:
``model`` (model metrics.json), ``explanation`` (one run's metrics.json), ``attribution``,
``diversity`` (σ_L of a method's 2+ runs, a column of its counterfactual row), ``gcd_summary``,
``hit_summary``, ``variance`` (scores.json) and ``ablation`` (table.csv, one
setting per row). JSON records give one row per numeric leaf (dotted path; lists and the
provenance are left out), with the record's sample count ``n`` and a provenance hash (of its
config and source hashes; of the file for CSV tables).

Outputs: ``metrics.csv`` (columns :data:`COLUMNS`), one CSV per method table under ``tables/``
(columns titled as in the markdown, with ↑/↓) and all of them in ``tables.md``, where the best
value of each column is in bold.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from diffxai.jobs.ablation_table import COUNT_FIELDS, METRIC_FIELDS, ON_SUCCESSFUL
from diffxai.jobs.common import COUNTS_KEY, sample_count, write_json
from diffxai.jobs.markdown import table_lines

log = logging.getLogger(__name__)
# ``kind``: the entry's, as names are shared across kinds (a model, an attribution and an
# interpretable analysis may all be called ``hit``; an ablation may share its explanation's name)
COLUMNS = ("dataset", "classifier", "kind", "method", "setting", "metric", "value", "n", "provenance")
SKIPPED_KEYS = {"provenance", "params", "config", COUNTS_KEY}

ZERO = "zero"  # a column's best value is the one closest to 0 (a signed correlation)
# a table family's columns, (metric key, title, direction) each: True higher is better (↑),
# False lower (↓), ZERO closest to 0 (→ 0), None neither
Columns = tuple[tuple[str, str, bool | str | None], ...]
ARROWS = {True: " ↑", False: " ↓", ZERO: " → 0", None: ""}
COUNTERFACTUAL_COLUMNS = (
    ("flip_rate", "flip rate", True),
    ("bkl", "BKL", False),
    ("l1", "ℓ1", False),
    ("l2", "ℓ2", False),
    ("lpips", "LPIPS", False),
    ("fid", "FID", False),
    ("sfid", "sFID", False),
    ("cout", "COUT", True),
    ("s3", "S³", True),
    ("mnac", "MNAC", False),
    ("correlation_difference", "CD", False),
    ("sigma_l", "σ_L", True),  # a diversity entry's (2+ runs)
)  # then the Δ of each measured factor (factor_change_columns), then COUNTERFACTUAL_COST_COLUMNS
COUNTERFACTUAL_COST_COLUMNS = (
    ("nfe", "NFE", False),
    ("classifier_calls", "queries", False),
    ("seconds_per_ce", "s / CE", False),
)
ATTRIBUTION_COLUMNS = (
    ("insertion_nauc_zero", "Ins Z", True),
    ("insertion_nauc_blur", "Ins B", True),
    ("deletion_nauc_zero", "Del Z", False),
    ("deletion_nauc_blur", "Del B", False),
    ("road_lerf_minus_morf", "ROAD LeRF−MoRF", True),
    ("mask_auroc", "mask AUROC", True),
    ("pointing_game", "pointing game", True),
    ("randomisation_spearman_all_layers", "rank corr. randomised", ZERO),
    ("avg_sensitivity", "avg sens.", False),
    ("max_sensitivity", "max sens.", False),
    ("complexity", "complexity", False),
    ("seconds_per_map", "s / map", False),
)
MODEL_COLUMNS = (
    ("test.accuracy", "accuracy", True),
    ("test.r2", "R²", True),
    ("fid_encoder", "FID (encoder)", False),
    ("reconstruction.mse", "reconstruction MSE", False),
)  # then the KS distance of each measured factor (DDPM samples vs test), then the time
MODEL_TIME_COLUMN = ("wall_time_s", "time (s)", False)
ABLATION_COLUMNS = (*COUNTERFACTUAL_COLUMNS, *COUNTERFACTUAL_COST_COLUMNS)  # those an ablation table has
FACTOR_CHANGE = "factor_changes.{factor}.mean_abs_change_in_std"  # metric name per measured factor
FACTOR_KS = "ks.{factor}.ks"
VARIANCE_COLUMNS = (
    ("scores.class.global_score", "global (class)", None),
    ("scores.probability.global_score", "global (prob.)", None),
    ("scores.class_balanced.global_score", "global (balanced)", None),
    ("bootstrap.mean_local_variance", "boot. var local", False),
    ("bootstrap.global_variance", "boot. var global", False),
    ("linear_r2.r2", "linear R²", None),
    ("sampling.median_abs_error_std", "median |err|/std", False),
    ("sampling.acceptance_rate", "accepted", True),
)


def numeric_leaves(record: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """(dotted path, value) of every int/float leaf of a JSON record; lists and SKIPPED_KEYS left out."""
    if isinstance(record, dict):
        for key, value in record.items():
            if key in SKIPPED_KEYS:
                continue
            yield from numeric_leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(record, int | float) and not isinstance(record, bool):
        yield prefix, float(record)


def provenance_hash(provenance: dict[str, Any]) -> str:
    """12 hex digits identifying the config and code that produced a record: every ``*_hash`` of
    its provenance (its own config and source, and the config hashes of the artifacts it
    measured, e.g. ``explanations_config_hash``); the seed is the row's setting (run)."""
    hashes = {key: value for key, value in provenance.items() if key.endswith("_hash")}
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:12]


def record_provenance(entry: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """The record's provenance; a model's metrics.json has none, its config.json beside it has."""
    if entry["kind"] == "model" and "provenance" not in record:
        return json.loads(Path(entry["path"]).with_name("config.json").read_text())["provenance"]
    return record.get("provenance") or {}


def _sample_count(record: dict[str, Any]) -> int | None:
    for key in ("n", "n_images", "n_test", "n_samples"):
        if isinstance(record.get(key), int):
            return record[key]
    return None


def json_rows(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Tidy rows of one JSON artifact; variance records get one ``setting`` per feature."""
    record = json.loads(Path(entry["path"]).read_text())
    labels = {key: entry[key] for key in ("dataset", "classifier", "method", "setting")}
    digest, n = provenance_hash(record_provenance(entry, record)), _sample_count(record)
    if entry["kind"] == "variance":
        return [
            {**labels, "setting": feature, "metric": metric, "value": value, "n": n, "provenance": digest}
            for feature, result in record["features"].items()
            for metric, value in numeric_leaves(result)
        ]
    counts = record.get(COUNTS_KEY, {})
    return [
        {
            **labels,
            "metric": metric,
            "value": value,
            "n": sample_count(metric, n, counts),
            "provenance": digest,
        }
        for metric, value in numeric_leaves(record)
    ]


def ablation_rows(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Tidy rows of an ablation table.csv (``jobs.ablation_table``): one per setting and metric;
    L2 and FID count the setting's flipped CEs, the other metrics its images."""
    path = Path(entry["path"])
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    labels = {key: entry[key] for key in ("dataset", "classifier", "method")}
    rows = []
    with path.open() as handle:
        for row in csv.DictReader(handle):
            counts = {field: int(row[field]) if row.get(field) else None for field in COUNT_FIELDS}
            for metric in METRIC_FIELDS:
                text = row[metric]
                if metric not in COUNT_FIELDS and text not in ("", None):
                    n = counts["n_successful" if metric in ON_SUCCESSFUL else "n"]
                    rows.append(
                        {**labels, "setting": row["setting"], "metric": metric, "value": float(text), "n": n,
                         "provenance": digest}
                    )  # fmt: skip
    return rows


def tidy(entries: list[dict[str, Any]]) -> pd.DataFrame:
    """The long table (:data:`COLUMNS`) of every entry."""
    rows = []
    for entry in entries:
        parts = ablation_rows(entry) if entry["kind"] == "ablation" else json_rows(entry)
        rows += [{**row, "kind": entry["kind"]} for row in parts]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def method_table(frame: pd.DataFrame, columns: Columns, row_key: str = "method") -> pd.DataFrame:
    """Rows = ``row_key`` values (mean over settings such as runs), columns = the metrics present."""
    wanted = frame[frame["metric"].isin([metric for metric, _, _ in columns])]
    if wanted.empty:
        return pd.DataFrame()
    table = wanted.pivot_table(index=row_key, columns="metric", values="value", aggfunc="mean", sort=False)
    present = [metric for metric, _, _ in columns if metric in table.columns]
    return table[present]


def column_titles(table: pd.DataFrame, columns: Columns) -> list[str]:
    """The title of each of the table's metrics, with ↑ where higher is better, ↓ where lower
    is, → 0 where closer to 0 is."""
    directions = {metric: (name, higher) for metric, name, higher in columns}
    return [directions[metric][0] + ARROWS[directions[metric][1]] for metric in table.columns]


def markdown(table: pd.DataFrame, columns: Columns, title: str) -> str:
    """The table with titled ↑/↓ columns and the best value per column in bold (where the
    column holds two or more distinct values), and every value that prints as the best."""
    directions = {metric: direction for metric, _, direction in columns}
    header = [table.index.name or "", *column_titles(table, columns)]
    rows = []
    for label, row in table.iterrows():
        cells = [str(label)]
        for metric in table.columns:
            value, direction = row[metric], directions[metric]
            column = table[metric].dropna()
            ranked = direction is not None and column.nunique() > 1  # not all tied, not one row
            best = _format(best_value(column, direction)) if ranked else None
            text = "–" if pd.isna(value) else _format(value)
            cells.append(f"**{text}**" if text == best else text)
        rows.append(cells)
    return "\n".join([f"## {title}", "", *table_lines(header, rows)]) + "\n"


def best_value(values: Iterable[float], direction: bool | str) -> float:
    """The best of values (non-empty, no NaN) for their column's direction (see ``Columns``)."""
    if direction == ZERO:
        return min(values, key=abs)
    return max(values) if direction else min(values)


def is_better(value: float, other: float, direction: bool | str) -> bool:
    """Whether ``value`` beats ``other`` in a column of that direction (see ``Columns``)."""
    if direction == ZERO:
        return abs(value) < abs(other)
    return value > other if direction else value < other


def _format(value: float) -> str:
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.2e}"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"


GLOBALITY = re.compile(
    r"^globality\.(?:flip_rate\.(?P<rate>[^.]+)|others_combined\.flip_rate"
    r"|factor_changes\.(?P<direction>[^.]+)\.(?P<factor>[^.]+)\.mean_abs_change_in_std)$"
)
OTHERS_COMBINED = "others combined"


def gcd_direction_table(part: pd.DataFrame) -> tuple[pd.DataFrame, Columns]:
    """GCD's directions (seed 001 Fig. 3, Table 4) from one gcd_summary's rows: per direction (g,
    h1.., the other h combined) its flip rate and what its flipped CEs change (Δ of each factor in
    std; no best marked: which factor should change is the task's)."""
    cells: dict[str, dict[str, float]] = {}
    for metric, value in zip(part["metric"], part["value"], strict=True):
        match = GLOBALITY.match(metric)
        if match is None:
            continue
        if match["factor"]:
            cells.setdefault(match["direction"], {})[match["factor"]] = value
        else:
            cells.setdefault(match["rate"] or OTHERS_COMBINED, {})["flip_rate"] = value
    table = pd.DataFrame.from_dict(cells, orient="index")
    if table.empty:
        return table, ()
    factors = sorted(column for column in table.columns if column != "flip_rate")
    table = table[["flip_rate", *factors]]
    table.index.name = "direction"
    columns = (("flip_rate", "flip rate", True), *((f, f"Δ {f} (std)", None) for f in factors))
    return table, columns


def same_factor(first: str, second: str) -> bool:
    """Whether two factor names measure one quantity (``aspect_ratio`` and ``log_aspect_ratio``)."""
    return first.removeprefix("log_") == second.removeprefix("log_")


def measured_factors(metrics: Iterable[str], template: str) -> list[str]:
    """The factors of the metric names that fill ``template`` (its ``{factor}``), sorted."""
    pattern = re.compile("^" + re.escape(template).replace(re.escape("{factor}"), "(?P<factor>[^.]+)") + "$")
    return sorted({match["factor"] for match in map(pattern.match, metrics) if match})


def factor_change_columns(metrics: Iterable[str], label_factor: str | None) -> Columns:
    """Δ columns of the factors the counterfactual metrics measured, the label's factor first. A
    counterfactual should change the label's factor (↑) and no other (↓); where the dataset's
    label is not a factor, no direction is marked."""
    factors = measured_factors(metrics, FACTOR_CHANGE)
    if label_factor is not None:
        factors.sort(key=lambda factor: not same_factor(factor, label_factor))
    return tuple(
        (FACTOR_CHANGE.format(factor=factor), f"Δ {factor} (std)",
         None if label_factor is None else same_factor(factor, label_factor))
        for factor in factors
    )  # fmt: skip


def family_columns(kind: str, metrics: Iterable[str], label_factor: str | None) -> Columns:
    """The columns of one table family (``explanation``, ``attribution``, ``model``), with a
    column per factor its metrics measured."""
    if kind == "explanation":
        changes = factor_change_columns(metrics, label_factor)
        return (*COUNTERFACTUAL_COLUMNS, *changes, *COUNTERFACTUAL_COST_COLUMNS)
    if kind == "model":
        factors = measured_factors(metrics, FACTOR_KS)
        ks = tuple((FACTOR_KS.format(factor=factor), f"KS {factor}", False) for factor in factors)
        return (*MODEL_COLUMNS, *ks, MODEL_TIME_COLUMN)
    return ATTRIBUTION_COLUMNS


class ReportTable(NamedTuple):
    """One table of the report: its values (metric keys as columns), their columns (see
    :data:`Columns`) and its title; the arguments of :func:`markdown`."""

    table: pd.DataFrame
    columns: Columns
    title: str


def titled(table: pd.DataFrame, columns: Columns) -> pd.DataFrame:
    """The table with its columns titled as in its markdown (↑/↓), as tables/<name>.csv holds it."""
    return table.set_axis(column_titles(table, columns), axis=1)


def report_tables(
    frame: pd.DataFrame, entries: list[dict[str, Any]], label_factors: dict[str, str | None] | None = None
) -> dict[str, ReportTable]:
    """{table name: table} of every table family present, per dataset.
    ``label_factors``: {dataset: the factor its label thresholds, None where it is no factor}."""
    label_factors = label_factors or {}
    groups = sorted({(entry["kind"], entry["dataset"], entry["classifier"] or "") for entry in entries})
    families = {"explanation": "counterfactuals", "attribution": "attributions", "model": "models"}
    tables = {}
    for kind, dataset, classifier in groups:
        if kind not in families:
            continue
        family = families[kind]
        methods = [
            entry["method"]
            for entry in entries
            if (entry["kind"], entry["dataset"], entry["classifier"] or "") == (kind, dataset, classifier)
        ]
        kinds = {kind, "diversity"} if kind == "explanation" else {kind}  # σ_L joins the CE rows
        part = frame[
            (frame["dataset"] == dataset)
            & (frame["classifier"].fillna("") == classifier)
            & frame["method"].isin(methods)
            & frame["kind"].isin(kinds)
        ]
        columns = family_columns(kind, part["metric"].unique(), label_factors.get(dataset))
        table = method_table(part, columns)
        if table.empty:
            continue
        table.index.name = family.rstrip("s")
        name = "_".join(filter(None, (family, dataset, classifier)))
        title = f"{family.capitalize()}: {dataset}" + (f", classifier {classifier}" if classifier else "")
        tables[name] = ReportTable(table, columns, title)
    for entry in entries:
        if entry["kind"] == "variance":
            part = entry_rows(frame, entry)
            table = method_table(part, VARIANCE_COLUMNS, "setting")
            table.index.name = "feature"
            name = f"variance_{entry['method']}_{entry['dataset']}"
            title = f"Variance-based feature importance: {entry['method']} on {entry['dataset']}"
            tables[name] = ReportTable(table, VARIANCE_COLUMNS, title)
        if entry["kind"] == "gcd_summary":
            part = entry_rows(frame, entry)
            table, columns = gcd_direction_table(part)
            if not table.empty:
                title = f"GCD directions of the first source: {entry['method']} on {entry['dataset']}"
                tables[f"gcd_directions_{entry['method']}_{entry['dataset']}"] = ReportTable(
                    table, columns, title
                )
        if entry["kind"] == "ablation":
            table = method_table(entry_rows(frame, entry), ABLATION_COLUMNS, "setting")
            title = f"Ablation {entry['method']} on {entry['dataset']}"
            tables[f"ablation_{entry['method']}_{entry['dataset']}"] = ReportTable(
                table, ABLATION_COLUMNS, title
            )
    return tables


def entry_rows(frame: pd.DataFrame, entry: dict[str, Any]) -> pd.DataFrame:
    """The rows of one entry's artifact."""
    return frame[
        (frame["dataset"] == entry["dataset"])
        & (frame["method"] == entry["method"])
        & (frame["kind"] == entry["kind"])
    ]


def run(
    entries: list[dict[str, Any]],
    label_factors: dict[str, str | None],
    metrics_path: str | Path,
    tables_dir: str | Path,
    markdown_path: str | Path,
):
    """Write metrics.csv, tables/<name>.csv and tables.md; returns the tidy frame.
    ``label_factors`` as in :func:`report_tables`."""
    frame = tidy(entries)
    Path(metrics_path).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(metrics_path, index=False)
    tables = report_tables(frame, entries, label_factors)
    tables_dir = Path(tables_dir)
    tables_dir.mkdir(parents=True, exist_ok=True)
    for name, (table, columns, _) in tables.items():
        titled(table, columns).to_csv(tables_dir / f"{name}.csv")
    text = "# diffxai report: method tables\n\n" + "\n".join(markdown(*table) for table in tables.values())
    Path(markdown_path).write_text(text)
    write_json(tables_dir / "index.json", {"tables": sorted(tables), "n_rows": len(frame)})
    log.info("aggregated %d rows from %d artifacts into %d tables", len(frame), len(entries), len(tables))
    return frame
