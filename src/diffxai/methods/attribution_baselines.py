"""Post-hoc attribution maps of an image classifier: the baselines next to the counterfactuals.

Every method is ``fn(model, images, targets, params, seed) -> maps``: images float32
(N, C, H, W) in [-1, 1], targets int (N,) class indices, maps float32 (N, H, W) on the CPU,
the attribution of the target class's logit (RISE: of its softmax probability) reduced over
channels by the signed channel mean. The functions in ``BASELINES`` expect complete params;
``attribute`` fills them in from ``DEFAULTS`` and refuses unknown names. A default of None
is derived from the image height H when the method runs.

Baselines (the reference an input is moved to or replaced by) are named: "black" is all -1,
"zero" all 0 (mid-grey in [-1, 1]). A model with in-place modules (``nn.ReLU(inplace=True)``)
runs on a deep copy with them switched off, so that hooks and input gradients see unmodified
tensors and the caller's model is left as it was; in-place ops called functionally inside
``forward`` cannot be switched off this way.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from captum.attr import KernelShap, LayerAttribution, LayerGradCam, Occlusion
from torch import Tensor, nn

from diffxai.methods import transformer_maps

Method = Callable[[nn.Module, Tensor, Tensor, dict[str, Any], int], Tensor]

BASELINE_VALUES: dict[str, float] = {"black": -1.0, "zero": 0.0}


def _baseline_value(name: str) -> float:
    """The pixel value in [-1, 1] of a named baseline."""
    if name not in BASELINE_VALUES:
        raise ValueError(f"baseline must be one of {sorted(BASELINE_VALUES)}, got {name!r}")
    return BASELINE_VALUES[name]


def _or_default(value: int | None, default: int) -> int:
    """``value`` unless it is None (the size-derived default)."""
    return default if value is None else value


def _without_inplace(model: nn.Module) -> nn.Module:
    """The model itself, or a deep copy of it with every ``inplace`` flag switched off."""
    if not any(getattr(module, "inplace", False) is True for module in model.modules()):
        return model
    functional = copy.deepcopy(model)
    for module in functional.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    return functional


def _attribution_map(core: Method) -> Method:
    """Give ``core`` (returning attributions (N, C', H, W)) the common interface.

    ``core`` receives a model without in-place modules, detached images and int64 targets
    on the images' device; its output is reduced by the channel mean to (N, H, W) on the CPU.
    """

    @functools.wraps(core)
    def method(
        model: nn.Module, images: Tensor, targets: Tensor, params: dict[str, Any], seed: int
    ) -> Tensor:
        device_targets = targets.to(device=images.device, dtype=torch.long)
        attributions = core(_without_inplace(model), images.detach(), device_targets, params, seed)
        return attributions.detach().mean(dim=1).float().cpu()

    return method


def _input_gradient(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    """d logit_target / d image (N, C, H, W), one batched backward; parameters get no grad."""
    with torch.enable_grad():
        inputs = images.detach().requires_grad_(True)
        selected = model(inputs).gather(1, targets.view(-1, 1)).sum()
        (gradient,) = torch.autograd.grad(selected, inputs)
    return gradient


@_attribution_map
def gradient(model: nn.Module, images: Tensor, targets: Tensor, params: dict[str, Any], seed: int) -> Tensor:
    """Vanilla gradient of the target logit (signed), logit units per pixel unit."""
    return _input_gradient(model, images, targets)


@_attribution_map
def input_x_gradient(
    model: nn.Module, images: Tensor, targets: Tensor, params: dict[str, Any], seed: int
) -> Tensor:
    """Input × gradient of the target logit (logit units)."""
    return images * _input_gradient(model, images, targets)


def _trapezoid_path(steps: int) -> tuple[Tensor, Tensor]:
    """Path positions alpha (steps,) in [0, 1] and their weights (steps,), as in Captum.

    Captum's "riemann_trapezoid" weights are 1/steps with both ends halved, so they sum to
    (steps - 1) / steps rather than 1: IG sums to that fraction of f(x) - f(baseline).
    """
    if steps < 2:
        raise ValueError(f"integrated_gradients needs steps >= 2, got {steps}")
    weights = torch.full((steps,), 1.0 / steps)
    weights[[0, -1]] /= 2
    return torch.linspace(0.0, 1.0, steps), weights


@_attribution_map
def integrated_gradients(
    model: nn.Module, images: Tensor, targets: Tensor, params: dict[str, Any], seed: int
) -> Tensor:
    """Integrated gradients (logit units) from a constant baseline, trapezoid rule.

    The steps × N path points go through the model in chunks of ``internal_batch_size``.
    """
    alphas, weights = (t.to(images.device) for t in _trapezoid_path(params["steps"]))
    baseline = torch.full_like(images, _baseline_value(params["baseline"]))
    delta = images - baseline
    count = len(images)
    total = torch.zeros_like(images)
    points = torch.arange(params["steps"] * count, device=images.device)
    for chunk in points.split(params["internal_batch_size"]):
        step, index = chunk // count, chunk % count
        path = baseline[index] + alphas[step].view(-1, 1, 1, 1) * delta[index]
        grads = _input_gradient(model, path, targets[index])
        total.index_add_(0, index, grads * weights[step].view(-1, 1, 1, 1))
    return total * delta


@_attribution_map
def occlusion(model: nn.Module, images: Tensor, targets: Tensor, params: dict[str, Any], seed: int) -> Tensor:
    """Occlusion (logit drop) by a window × window square over all channels (Captum).

    A pixel's value is the mean drop over the windows that cover it; pixels that no window
    covers (when (H - window) is not a multiple of stride) get 0.
    """
    channels, height = images.shape[1:3]
    window = _or_default(params["window"], max(2, height // 8))
    stride = _or_default(params["stride"], max(1, window // 2))
    return Occlusion(model).attribute(
        images,
        sliding_window_shapes=(channels, window, window),
        strides=(channels, stride, stride),
        baselines=_baseline_value(params["baseline"]),
        target=targets,
    )


def _superpixels(height: int, width: int, cell: int, device: torch.device) -> Tensor:
    """Feature mask (1, 1, H, W) int64: the index of the cell × cell square of each pixel."""
    rows = torch.arange(height, device=device) // cell
    cols = torch.arange(width, device=device) // cell
    return (rows[:, None] * math.ceil(width / cell) + cols[None, :])[None, None]


@_attribution_map
def kernel_shap(
    model: nn.Module, images: Tensor, targets: Tensor, params: dict[str, Any], seed: int
) -> Tensor:
    """KernelSHAP values (logit units) of square superpixels (Captum), one call per image.

    Each image's sampling starts from torch's RNG seeded with ``seed`` (inside
    ``fork_rng``, so the global state is kept), hence it does not depend on the batch.
    """
    height, width = images.shape[2:]
    cell = _or_default(params["cell"], max(2, height // 8))
    mask = _superpixels(height, width, cell, images.device)
    baseline = _baseline_value(params["baseline"])
    explainer = KernelShap(model)
    maps = []
    with torch.random.fork_rng(devices=[]):
        for image, target in zip(images, targets, strict=True):
            torch.manual_seed(seed)
            maps.append(
                explainer.attribute(
                    image[None],
                    baselines=baseline,
                    target=int(target),
                    feature_mask=mask,
                    n_samples=params["samples"],
                    perturbations_per_eval=params["perturbations_per_eval"],
                )
            )
    return torch.cat(maps)


def _rise_masks(
    count: int, cells: int, p: float, size: tuple[int, int], generator: torch.Generator
) -> Tensor:
    """RISE masks (count, 1, H, W) in [0, 1].

    cells × cells Bernoulli(p) grids, upsampled bilinearly to (cells + 1) cell sizes and
    cropped to H × W at a random shift of less than one cell.
    """
    height, width = size
    cell_h, cell_w = math.ceil(height / cells), math.ceil(width / cells)
    grids = (torch.rand(count, 1, cells, cells, generator=generator) < p).float()
    upsampled = F.interpolate(
        grids, size=((cells + 1) * cell_h, (cells + 1) * cell_w), mode="bilinear", align_corners=False
    )
    rows = torch.randint(0, cell_h, (count, 1, 1), generator=generator) + torch.arange(height).view(1, -1, 1)
    cols = torch.randint(0, cell_w, (count, 1, 1), generator=generator) + torch.arange(width).view(1, 1, -1)
    return upsampled[torch.arange(count).view(-1, 1, 1), 0, rows, cols].unsqueeze(1)


@_attribution_map
def rise(model: nn.Module, images: Tensor, targets: Tensor, params: dict[str, Any], seed: int) -> Tensor:
    """RISE (Petsiuk et al. 2018): Σ_i P_target(masked_i) · M_i / (masks · p), probabilities.

    Masked images are x · M + substrate · (1 - M) with the substrate the named ``baseline``,
    black (-1) by default: multiplying [-1, 1] images by M, as the original does with
    mean-centred inputs, would fade them to grey, and black keeps RISE on the same reference
    as the other perturbation methods. The same masks, drawn in chunks of ``batch`` from a
    generator seeded by ``seed``, serve every image; ``batch`` masked images per forward.
    Values are in probability units (≈ P_target where a pixel does not matter).
    """
    count, _, height, width = images.shape
    cells = _or_default(params["cells"], max(2, height // 4))
    substrate = _baseline_value(params["baseline"])
    generator = torch.Generator().manual_seed(seed)
    saliency = torch.zeros(count, 1, height, width, device=images.device)
    with torch.no_grad():
        for start in range(0, params["masks"], params["batch"]):
            size = min(params["batch"], params["masks"] - start)
            masks = _rise_masks(size, cells, params["p"], (height, width), generator).to(images.device)
            for index in range(count):
                masked = images[index] * masks + substrate * (1 - masks)
                probability = model(masked).softmax(dim=1)[:, targets[index]]
                saliency[index] += (probability.view(-1, 1, 1, 1) * masks).sum(dim=0)
    return saliency / (params["masks"] * params["p"])


def _timm_feature_stage(model: nn.Module) -> str | None:
    """Dotted name of a timm network's last feature stage (``feature_info[-1]``, timm's own
    record of where its features are), e.g. ``network.layer4`` of a wrapped ResNet; None for
    other models. Its last Conv2d can lie after the global pooling (MobileNetV3's
    ``conv_head``: a 1 × 1 map) or make a part of the features only (a DenseNet layer's 32
    new channels)."""
    for prefix, module in model.named_modules():
        info = getattr(module, "feature_info", None)
        if isinstance(info, list) and info and isinstance(info[-1], dict) and "module" in info[-1]:
            return ".".join(part for part in (prefix, info[-1]["module"]) if part)
    return None


def _last_conv_name(model: nn.Module) -> str:
    """Dotted name of the last ``nn.Conv2d`` in registration order."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if not names:
        raise ValueError("gradcam needs a model with an nn.Conv2d layer (or params['layer']); it has none")
    return names[-1]


def _output_rank(model: nn.Module, layer: nn.Module, images: Tensor) -> int:
    """Number of dimensions of ``layer``'s output on one image (a no-grad probe forward)."""
    ranks: list[int] = []
    handle = layer.register_forward_hook(lambda module, inputs, output: ranks.append(output.ndim))
    try:
        with torch.no_grad():
            model(images[:1])
    finally:
        handle.remove()
    if not ranks:
        raise ValueError("gradcam: the chosen layer is not called in the forward pass")
    return ranks[0]


@_attribution_map
def gradcam(model: nn.Module, images: Tensor, targets: Tensor, params: dict[str, Any], seed: int) -> Tensor:
    """GradCAM of the module named ``layer``; by default a transformer's last ``norm1`` (tokens),
    else a timm CNN's last feature stage, else the last Conv2d.

    Feature maps (N, C, h, w): Captum's ReLU(Σ_k mean(∂logit/∂A_k) · A_k), upsampled bilinearly
    to H × W; tokens (N, T, D): :func:`~diffxai.methods.transformer_maps.token_gradcam`.
    Logit units.
    """
    name = (
        params["layer"]
        or transformer_maps.default_token_layer(model)
        or _timm_feature_stage(model)
        or _last_conv_name(model)
    )
    try:
        layer = model.get_submodule(name)
    except AttributeError as error:
        raise ValueError(f"gradcam: the model has no module named {name!r}") from error
    if _output_rank(model, layer, images) == 3:
        return transformer_maps.token_gradcam(model, layer, images, targets).unsqueeze(1)
    cams = LayerGradCam(model, layer).attribute(images, target=targets, relu_attributions=True)
    return LayerAttribution.interpolate(cams, tuple(images.shape[2:]), interpolate_mode="bilinear")


@_attribution_map
def attention_rollout(
    model: nn.Module, images: Tensor, targets: Tensor, params: dict[str, Any], seed: int
) -> Tensor:
    """Attention rollout of a timm ViT or a HiT (:mod:`~diffxai.methods.transformer_maps`), class-agnostic."""
    return transformer_maps.attention_rollout(model, images).unsqueeze(1)


BASELINES: dict[str, Method] = {
    "gradient": gradient,
    "input_x_gradient": input_x_gradient,
    "integrated_gradients": integrated_gradients,
    "occlusion": occlusion,
    "kernel_shap": kernel_shap,
    "rise": rise,
    "gradcam": gradcam,
    "attention_rollout": attention_rollout,
}

DEFAULTS: dict[str, dict[str, Any]] = {
    "gradient": {},
    "input_x_gradient": {},
    "integrated_gradients": {"steps": 32, "baseline": "black", "internal_batch_size": 256},
    "occlusion": {"window": None, "stride": None, "baseline": "black"},
    "kernel_shap": {"cell": None, "samples": 200, "baseline": "black", "perturbations_per_eval": 50},
    "rise": {"masks": 2000, "cells": None, "p": 0.5, "baseline": "black", "batch": 256},
    "gradcam": {"layer": None},
    "attention_rollout": {},
}


def attribute(
    name: str, model: nn.Module, images: Tensor, targets: Tensor, params: dict[str, Any], seed: int
) -> Tensor:
    """Maps (N, H, W) of method ``name`` with ``DEFAULTS[name]`` updated by ``params``."""
    if name not in BASELINES:
        raise ValueError(f"unknown attribution method {name!r}; allowed: {sorted(BASELINES)}")
    unknown = sorted(set(params) - set(DEFAULTS[name]))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {name!r}; allowed: {sorted(DEFAULTS[name])}")
    return BASELINES[name](model, images, targets, {**DEFAULTS[name], **params}, seed)
