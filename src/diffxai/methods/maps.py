"""Attribution maps by method name: FreeMCG and the post-hoc baselines behind one call.

``compute_maps(method, images, targets, models, params, seed, sample_ids)`` returns an
:class:`~diffxai.methods.base.Attribution` whatever the method; classifier rows are
counted, not assumed: FreeMCG's by its black box, the others' by a forward hook. HiT's
maps are its own logit decomposition and come with ``layer_contributions`` (N, L).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from diffxai.methods import transformer_maps
from diffxai.methods.attribution_baselines import BASELINES, attribute
from diffxai.methods.base import Attribution, ExplanationError, Models
from diffxai.models.hit import HiT

METHODS = ("freemcg", "hit", *BASELINES)
STOCHASTIC = ("freemcg", "kernel_shap", "rise")  # methods whose maps depend on the seed


class _RowCounter:
    """Counts the rows of every forward call of a module while registered, including calls
    of deep copies of it (a plain function hook is shared by copies; a bound method is not)."""

    def __init__(self, module: torch.nn.Module) -> None:
        rows = [0]

        def count(module, inputs, output) -> None:
            rows[0] += len(inputs[0])

        self._rows = rows
        self.handle = module.register_forward_hook(count)

    @property
    def rows(self) -> int:
        return self._rows[0]


def _counted_module(classifier: torch.nn.Module) -> torch.nn.Module:
    """The module whose forward calls count classifier rows: a HiT's patch embedding (its
    decomposition and rollout run the HiT without the wrapper's forward), else the classifier."""
    network = getattr(classifier, "network", classifier)
    return network.patch_embed if isinstance(network, HiT) else classifier


def compute_maps(
    method: str,
    images: torch.Tensor,
    targets: torch.Tensor,
    models: Models,
    params: dict[str, Any],
    seed: int,
    sample_ids: np.ndarray,
    keep_particles: bool = False,
) -> Attribution:
    """Maps (N, H, W) of ``method`` for the ``targets`` classes (N,) of ``images`` (N, C, H, W)."""
    if method not in METHODS:
        raise ExplanationError(f"attribution method {method!r}: allowed {', '.join(METHODS)}")
    if method == "freemcg":  # counts its own black-box queries
        from diffxai.methods import freemcg  # diffusers: 1.7 s of every other attribution job's start

        return freemcg.attribution_maps(images, targets, models, params, seed, sample_ids, keep_particles)
    counter = _RowCounter(_counted_module(models.classifier))
    extras = {}
    try:
        if method == "hit":  # intrinsic: the classifier's own decomposition
            if params:
                raise ExplanationError(f"hit maps take no parameters, got {sorted(params)}")
            maps, layers = transformer_maps.hit_maps(models.classifier, images, targets)
            extras["layer_contributions"] = layers.numpy()
        else:
            maps = attribute(method, models.classifier, images, targets, params, seed)
    finally:
        counter.handle.remove()
    n = len(images)
    calls = np.full(n, counter.rows // max(n, 1), np.int64)
    return Attribution(maps.numpy().astype(np.float32), np.zeros(n, np.int64), calls, extras)


def map_function(
    method: str,
    models: Models,
    params: dict[str, Any],
    seed: int,
    sample_ids: np.ndarray,
    fresh_seeds: bool = False,
):
    """``explain(images, targets) -> maps`` (N, H, W) tensor for the metrics that recompute
    maps (sensitivity): the same method, models and params; the same per-sample noise on
    every call, or with ``fresh_seeds`` a new seed per call (seed, seed + 1, ...), so that
    a stochastic method's Monte-Carlo noise is measured too."""
    calls = [0]

    def explain(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        call_seed = seed + calls[0] if fresh_seeds else seed
        calls[0] += 1
        result = compute_maps(method, images, targets, models, params, call_seed, sample_ids[: len(images)])
        return torch.from_numpy(result.maps)

    return explain
