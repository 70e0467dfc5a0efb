"""The settings of an ablation (config ``ablations``): one parameter at a time, or the full grid."""

from __future__ import annotations

import itertools
from typing import Any

# not a comma: a cluster job gets its wildcards back from Snakemake's --target-jobs, which splits
# them on commas (the SLURM job of "tau=25,w=3" would look up setting "tau=25")
SEPARATOR = "+"


def _depth(value: Any) -> int:
    """How deeply ``value`` nests lists (0: not a list)."""
    return 1 + max(map(_depth, value), default=0) if isinstance(value, list) else 0


def value_text(value: Any) -> str:
    """A parameter value as a label writes it, without commas or spaces: lists join their items
    with ``_`` (nested lists with ``__`` between the inner ones): [[8, 10], [15]] → ``8_10__15``."""
    if not isinstance(value, list):
        return str(value)
    return ("_" * _depth(value)).join(map(value_text, value))


def setting_label(values: dict[str, Any]) -> str:
    """The setting's name (the ``{setting}`` wildcard): ``tau=25`` or ``tau=25+w=3``."""
    return SEPARATOR.join(f"{parameter}={value_text(value)}" for parameter, value in values.items())


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
    settings = {setting_label(values): values for values in combinations}
    if len(settings) < len(combinations):
        raise ValueError(f"two settings share a label: {[setting_label(values) for values in combinations]}")
    return settings
