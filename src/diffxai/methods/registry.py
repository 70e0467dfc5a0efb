"""Counterfactual methods by config name.

A method's module is imported when a job asks for it, so a job loads only its own method and
the workflow hashes only that method's sources into the job's params (an edit of DiME's module
re-runs DiME's jobs, not ACE's).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from diffxai.lookup import module_for

if TYPE_CHECKING:
    from diffxai.methods.base import Explanations

METHOD_MODULES: dict[str, str] = {
    "dime": "diffxai.methods.dime",
    "ace": "diffxai.methods.ace",
    "freemcg": "diffxai.methods.freemcg",
    "gcd": "diffxai.methods.gcd",
    "time": "diffxai.methods.time",
}


# the job modules whose functions build a method's inputs beyond the models (its ``context``:
# GCD's directions and latents, TIME's tokens); the shard and ablation scripts call them
CONTEXT_MODULES: dict[str, tuple[str, ...]] = {
    "gcd": ("diffxai.jobs.gcd_directions",),
    "time": ("diffxai.jobs.distill",),
}


def method_modules(name: str) -> tuple[str, ...]:
    """Every module a job of method ``name`` runs beyond its job module: the method's own and
    those that build its context (the workflow hashes them into the job's params)."""
    return (method_module(name), *CONTEXT_MODULES.get(name, ()))


def method_module(name: str) -> str:
    """The module that implements counterfactual method ``name``."""
    return module_for(METHOD_MODULES, name, "counterfactual method")


def explainer(name: str) -> Callable[..., Explanations]:
    """``explain(images, sample_ids, models, params, seed, batch_size)`` of method ``name``."""
    return importlib.import_module(method_module(name)).explain
