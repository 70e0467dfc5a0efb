"""What every counterfactual method shares: inputs, targets, per-sample noise, results.

``explain(images, sample_ids, models, params, seed) -> Explanations``; images are
float32 (N, C, H, W) in [-1, 1] and ``sample_ids`` their indices in the dataset, used
to name a sample in errors and to seed its noise, so a sample's result does not
depend on which shard or batch it was processed in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from diffxai.diffusion.respaced import RespacedDiffusion
from diffxai.models.batched import batched_outputs
from diffxai.progress import progress
from diffxai.seeds import derive_seed

RANGE_TOLERANCE = 1e-3


class ExplanationError(ValueError):
    """A bad input or parameter, named by sample and parameter."""


@dataclass
class Explanations:
    """Per-sample results of one method on N images (numpy, first axis N)."""

    counterfactuals: np.ndarray  # float32 (N, C, H, W) in [-1, 1]
    sources: np.ndarray  # int (N,): the classifier's prediction on the input
    targets: np.ndarray  # int (N,)
    logits_before: np.ndarray  # float32 (N, K)
    logits_after: np.ndarray  # float32 (N, K)
    nfe: np.ndarray  # int (N,): diffusion-network forward evaluations
    nfe_backward: np.ndarray  # int (N,): backward passes through the diffusion network
    classifier_calls: np.ndarray  # int (N,): classifier forward evaluations
    classifier_gradients: np.ndarray  # int (N,): classifier backward passes
    seconds: np.ndarray  # float32 (N,): wall time per CE (batch time / batch size)
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def success(self) -> np.ndarray:
        return self.logits_after.argmax(axis=1) == self.targets

    def arrays(self) -> dict[str, np.ndarray]:
        """Every per-sample array by its store name."""
        core = {k: v for k, v in vars(self).items() if k != "extras"}
        return {**core, "success": self.success, **self.extras}


@dataclass
class Attribution:
    """Maps of one method on N images: ``maps`` float32 (N, H, W), signed, per-sample
    costs (NFE of the diffusion network, classifier rows evaluated) and optional extras."""

    maps: np.ndarray
    nfe: np.ndarray
    classifier_calls: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Models:
    """The networks a method may use (None where a method needs none)."""

    classifier: nn.Module
    ddpm: nn.Module | None = None
    scheduler_config: dict[str, Any] | None = None
    perceptual: nn.Module | None = None
    context: dict[str, Any] = field(default_factory=dict)  # method-specific inputs (GCD's directions)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) the diffusion model generates, from its diffusers config."""
        config = self.ddpm.config
        size = config["sample_size"]
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return (config["in_channels"], height, width)


def check_images(images: torch.Tensor, shape: tuple[int, ...], sample_ids: np.ndarray) -> None:
    """Refuse images of the wrong shape or outside [-1, 1], naming the first bad sample."""
    if tuple(images.shape[1:]) != tuple(shape):
        raise ExplanationError(
            f"images have shape {tuple(images.shape[1:])} but the diffusion model expects {tuple(shape)}"
        )
    flat = images.reshape(len(images), -1)
    bad = ~torch.isfinite(flat).all(1) | (flat.abs().amax(1) > 1 + RANGE_TOLERANCE)
    if bad.any():
        j = int(bad.nonzero()[0, 0])
        raise ExplanationError(
            f"sample {int(sample_ids[j])}: pixel values must be finite and in [-1, 1], "
            f"got range [{float(flat[j].min()):.3g}, {float(flat[j].max()):.3g}]"
        )


def check_logits(logits: torch.Tensor, sample_ids: np.ndarray, where: str) -> None:
    """Refuse NaN/inf classifier outputs, naming the sample and the step."""
    bad = ~torch.isfinite(logits).all(1)
    if bad.any():
        j = int(bad.nonzero()[0, 0])
        raise ExplanationError(f"sample {int(sample_ids[j])}: classifier returned non-finite logits {where}")


def choose_targets(logits: torch.Tensor, target: int | None) -> torch.Tensor:
    """Target classes (N,): the other class for binary tasks (``target`` is ignored); for
    multi-class the configured ``target``, or the runner-up class where there is none or the
    image is already predicted as it (so every image has a counterfactual to look for)."""
    num_classes = logits.shape[1]
    prediction = logits.argmax(1)
    if num_classes == 2:
        return 1 - prediction
    runner_up = logits.topk(2, dim=1).indices[:, 1]
    if target is None:
        return runner_up
    if not 0 <= target < num_classes:
        raise ExplanationError(f"params.target={target}: allowed 0..{num_classes - 1}")
    return torch.where(prediction == target, runner_up, torch.full_like(prediction, target))


def class_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-sample loss (N,) to minimise for the target class.

    ``margin``: −(logit_target − max other logit), DiME's "maximise the target logit"
    for a single-logit binary classifier generalised to softmax heads; ``ce``: cross-entropy.
    """
    if kind == "ce":
        return nn.functional.cross_entropy(logits, targets, reduction="none")
    if kind == "margin":
        target_logit = logits.gather(1, targets[:, None])[:, 0]
        others = logits.scatter(1, targets[:, None], float("-inf"))
        return others.amax(1) - target_logit
    raise ExplanationError(f"params.class_loss={kind!r}: allowed ce, margin")


class SampleNoise:
    """One torch.Generator per sample, seeded by (seed, sample id): a sample's noise
    stream is the same whatever batch or shard it is processed in."""

    def __init__(self, seed: int, sample_ids: np.ndarray, shape: tuple[int, ...]) -> None:
        self.shape = tuple(shape)
        self.generators = [torch.Generator().manual_seed(derive_seed(seed, str(int(s)))) for s in sample_ids]

    def draw(self, rows: np.ndarray | list[int]) -> torch.Tensor:
        """Standard normal noise (len(rows), *shape) from the given samples' streams."""
        return torch.stack([torch.randn(self.shape, generator=self.generators[r]) for r in rows])

    def draw_many(self, rows: np.ndarray | list[int], k: int) -> torch.Tensor:
        """Standard normal noise (len(rows), k, *shape): k draws from each sample's stream."""
        return torch.stack([torch.randn((k, *self.shape), generator=self.generators[r]) for r in rows])


def check_params(params: dict[str, Any], allowed: set[str], method: str) -> None:
    """Refuse unknown parameter names."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ExplanationError(f"{method}: unknown params {unknown}; allowed: {sorted(allowed)}")


def batches(rows: np.ndarray, batch_size: int | None) -> list[np.ndarray]:
    """``rows`` cut into consecutive batches of at most ``batch_size`` (one batch when None)."""
    if rows.size == 0:
        return []
    if batch_size is None:
        return [rows]
    return [rows[start : start + batch_size] for start in range(0, rows.size, batch_size)]


def concatenate(parts: list[Explanations]) -> Explanations:
    """One Explanations from per-batch ones, in order."""
    join = lambda arrays: np.concatenate(arrays)  # noqa: E731
    core = {name: join([vars(p)[name] for p in parts]) for name in vars(parts[0]) if name != "extras"}
    extras = {name: join([p.extras[name] for p in parts]) for name in parts[0].extras}
    return Explanations(**core, extras=extras)


BatchExplainer = Callable[[torch.Tensor, np.ndarray, Models, dict[str, Any], int], Explanations]


def in_batches(desc: str) -> Callable[[BatchExplainer], Callable[..., Explanations]]:
    """Decorator of a method's ``explain(images, sample_ids, models, params, seed)``: the decorated
    one takes ``batch_size`` too, explains the images (N, C, H, W) in consecutive batches of at most
    that many (all at once when None) and joins the parts in order; ``desc`` labels the progress."""

    def decorate(explain_batch: BatchExplainer) -> Callable[..., Explanations]:
        @functools.wraps(explain_batch)
        def explain(
            images: torch.Tensor,
            sample_ids: np.ndarray,
            models: Models,
            params: dict[str, Any],
            seed: int,
            batch_size: int | None = None,
        ) -> Explanations:
            parts = batches(np.arange(len(images)), batch_size)
            if len(parts) <= 1:
                return explain_batch(images, sample_ids, models, params, seed)
            return concatenate(
                [
                    explain_batch(images[r], sample_ids[r], models, params, seed)
                    for r in progress(parts, desc=desc)
                ]
            )

        return explain

    return decorate


@torch.no_grad()
def classify(classifier: nn.Module, images: torch.Tensor, sample_ids: np.ndarray, where: str) -> torch.Tensor:
    """Logits (N, K) on CPU, checked for NaN."""
    device = next(classifier.parameters()).device
    logits = batched_outputs(classifier, images, device)
    check_logits(logits, sample_ids, where)
    return logits


@dataclass
class Setup:
    """What both diffusion methods start from: the respaced chain, the classifier's logits
    on the input (N, K), the targets (N,) and the per-sample noise."""

    diffusion: RespacedDiffusion
    logits_before: torch.Tensor
    targets: torch.Tensor
    noise: SampleNoise

    def result(
        self,
        counterfactuals: torch.Tensor,
        logits_after: torch.Tensor,
        extras: dict[str, np.ndarray],
        **counts,
    ) -> Explanations:
        """The method's Explanations; ``counts``: nfe, nfe_backward, classifier_calls and
        classifier_gradients per sample (seconds are filled in by the caller)."""
        return Explanations(
            counterfactuals=counterfactuals.detach().cpu().numpy(),
            sources=self.logits_before.argmax(1).numpy(),
            targets=self.targets.cpu().numpy(),
            logits_before=self.logits_before.numpy(),
            logits_after=logits_after.numpy(),
            seconds=np.zeros(len(counterfactuals), np.float32),
            extras=extras,
            **{k: np.asarray(v, np.int64) for k, v in counts.items()},
        )


def prepare(
    images: torch.Tensor,
    sample_ids: np.ndarray,
    models: Models,
    params: dict[str, Any],
    allowed: set[str],
    method: str,
    seed: int,
) -> Setup:
    """Check parameters and inputs, classify the inputs and choose the targets."""
    check_params(params, allowed, method)
    if not 1 <= params["tau"] <= params["steps"]:
        raise ExplanationError(f"params.tau={params['tau']}: allowed 1..steps={params['steps']}")
    check_images(images, models.image_shape, sample_ids)
    logits_before = classify(models.classifier, images, sample_ids, "on the input")
    return Setup(
        RespacedDiffusion(models.ddpm, models.scheduler_config, params["steps"]),
        logits_before,
        choose_targets(logits_before, params.get("target")).to(images.device),
        SampleNoise(seed, sample_ids, models.image_shape),
    )
