"""The settings of an ablation (config ``ablations``): one parameter at a time, or the full grid."""

from __future__ import annotations

import itertools
from typing import Any

# not a comma: a cluster job gets its wildcards back from Snakemake's --target-jobs, which splits
# them on commas (the SLURM job of "tau=25,w=3" would look up setting "tau=25")
SEPARATOR = "+"


def setting_label(values: dict[str, Any]) -> str:
    """The setting's name (the ``{setting}`` wildcard): ``tau=25`` or ``tau=25+w=3``."""
    return SEPARATOR.join(f"{parameter}={value}" for parameter, value in values.items())


def ablation_settings(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{label: {parameter: value}} of an ablation entry, in table order.

    ``design: one_at_a_time``: each listed value of each ``vary`` parameter replaces the base
    value, the others stay (seed 000 Table 4). ``design: grid``: every combination of the listed
    values, the last parameter varying fastest (thesis Table 5.3: τ × w).
    """
    vary = entry["vary"]
    if entry.get("design", "one_at_a_time") == "grid":
        combinations = [dict(zip(vary, values, strict=True)) for values in itertools.product(*vary.values())]
    else:
        combinations = [{parameter: value} for parameter, values in vary.items() for value in values]
    return {setting_label(values): values for values in combinations}
