"""Model directories from a Snakemake job's named inputs, where each input is one model's files
(``model.safetensors``, ``config.json``) and the regressors are named ``regressor_<name>``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

REGRESSOR_PREFIX = "regressor_"


def model_dir(files: Sequence[str]) -> str:
    """The directory of one model's files."""
    return str(Path(files[0]).parent)


def optional_model_dir(named_inputs: Iterable[tuple[str, Sequence[str]]], name: str) -> str | None:
    """The model directory of input ``name`` among (name, files) pairs
    (``snakemake.input.items()``), or None where the job has no such input."""
    return next((model_dir(files) for key, files in named_inputs if key == name), None)


def regressor_dirs(named_inputs: Iterable[tuple[str, Sequence[str]]]) -> dict[str, str]:
    """{regressor name: model directory} of the ``regressor_<name>`` inputs among (name, files)
    pairs (``snakemake.input.items()``)."""
    return {
        name.removeprefix(REGRESSOR_PREFIX): model_dir(files)
        for name, files in named_inputs
        if name.startswith(REGRESSOR_PREFIX)
    }
