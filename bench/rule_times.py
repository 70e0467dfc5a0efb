"""Summarise Snakemake benchmark files into a markdown table of time and memory per job.

python bench/rule_times.py results/benchmarks
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def main(root: str = "results/benchmarks") -> None:
    rows = []
    for path in sorted(Path(root).rglob("*.tsv")):
        record = pd.read_csv(path, sep="\t").iloc[0]
        job = path.relative_to(root).with_suffix("")
        rows.append({"job": str(job), "wall_s": record["s"], "max_rss_mb": record["max_rss"]})
    if not rows:
        sys.exit(f"no benchmark files under {root}")
    table = pd.DataFrame(rows)
    print("| job | wall time (s) | max RSS (MB) |\n|---|---:|---:|")
    for row in table.itertuples():
        print(f"| {row.job} | {row.wall_s:.0f} | {row.max_rss_mb:.0f} |")
    print(f"| **sum of jobs** | **{table.wall_s.sum():.0f}** | |")


if __name__ == "__main__":
    main(*sys.argv[1:])
