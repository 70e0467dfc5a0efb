"""Cost per counterfactual of every explanation the workflow ran, side by side, from its results.

Reads ``results/{dataset}/{explanation}/run0/metrics.json`` of the configured explanations and
prints one markdown row per (explanation, dataset): flip rate, diffusion-network forward and
backward evaluations per CE, classifier forward calls and gradients per CE, and seconds per CE
(the job's wall time, two jobs sharing the 2-core machine). For TIME it adds the published
escalation's worst case (Σ 8·τ over the schema's default attempts).

python bench/efficiency_table.py [--config config.yaml ...] [--out results/bench/efficiency.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from diffxai.config.load import deep_merge, load_schema, validate_config
from diffxai.methods.time import attempt_nfe

COLUMNS = ("flip_rate", "nfe", "nfe_backward", "classifier_calls", "classifier_gradients", "seconds_per_ce")
HEADER = (
    "| explanation | method | dataset | flip rate | NFE | backward NFE | classifier calls"
    " | classifier grads | s/CE |"
)


def rows(config: dict) -> list[str]:
    """Markdown rows of every explanation run with a metrics.json."""
    lines = []
    for name, entry in config["explanations"].items():
        for dataset in entry["datasets"]:
            path = Path(config["results"]) / dataset / name / "run0" / "metrics.json"
            if not path.exists():
                continue
            metrics = json.loads(path.read_text())
            cells = [f"{metrics[column]:.3g}" for column in COLUMNS]
            lines.append(f"| {name} | {entry['method']} | {dataset} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", nargs="+", default=["config.yaml"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    raw: dict = {}
    for path in args.config:
        raw = deep_merge(raw, yaml.safe_load(Path(path).read_text()) or {})
    config = validate_config(raw)
    default_attempts = load_schema()["$defs"]["time_params"]["properties"]["attempts"]["default"]
    lines = [HEADER, "|" + "---|" * 9, *rows(config)]
    lines.append("")
    lines.append(
        f"TIME published escalation {default_attempts}: UNet evaluations per CE after each attempt "
        f"{attempt_nfe(default_attempts)} (worst case {attempt_nfe(default_attempts)[-1]})."
    )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
