"""Saliency maps of vision transformers: HiT's own contributions, attention rollout and token GradCAM.

``model`` is a classifier (a task wrapper with ``network``, or the network itself); images
float32 (N, C, H, W) in [-1, 1], targets int (N,), maps float32 (N, H, W) on the CPU, patch
values spread evenly over the patch's pixels (a map sums to the sum of its patch values).

* ``hit_maps``: Σ over layers of HiT's contributions to the target logit (thesis eq. 6.8),
  logit units, and the per-layer sums (N, L); both sum to the logit.
* ``attention_rollout`` (Abnar & Zuidema 2020): for a ViT the product over layers of the
  head-averaged attention with the residual, 0.5·A + 0.5·I, rows renormalised; the CLS row
  over patches. HiT has no token-to-token attention, so its rollout is the CLS→patch
  attention averaged over layers and heads (thesis App. C).
* ``gradcam`` of a token layer (N, T, D): weights = patch-averaged ∂logit/∂token per channel,
  map = ReLU(Σ_D weight · token) per patch (Selvaraju et al. 2017 with tokens as the spatial
  positions). The default layer is the last block's ``norm1``, the tokens the last attention reads.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from diffxai.models.hit import HiT, find_hit


def _network(model: nn.Module) -> nn.Module:
    """The network inside a task wrapper (``Classifier.network``) or the model itself."""
    return getattr(model, "network", model)


def token_grid(network: nn.Module, tokens: int) -> tuple[int, int, int]:
    """(prefix tokens, grid rows, grid columns) of a token sequence of length ``tokens``: from the
    network's ``patch_embed.grid_size`` when it has one, else the largest square that fits."""
    grid = getattr(getattr(network, "patch_embed", None), "grid_size", None)
    rows, cols = grid if grid is not None else (math.isqrt(tokens),) * 2
    prefix = tokens - rows * cols
    if prefix < 0:
        raise ValueError(f"{tokens} tokens cannot hold a {rows} x {cols} patch grid")
    return prefix, rows, cols


def spread_patches(values: Tensor, grid: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """Patch values (N, rows·cols) → pixel maps (N, H, W), each pixel its patch's value / patch area.
    Patches are ⌊H / rows⌋ × ⌊W / cols⌋ pixels from the top left; the pixels past the grid (a timm
    ViT's patch embedding drops the remainder of a size its patches do not divide) get 0."""
    rows, cols = grid
    height, width = size
    step_h, step_w = height // rows, width // cols
    if not (step_h and step_w):
        raise ValueError(f"a {height} x {width} image is smaller than a {rows} x {cols} patch grid")
    grid_values = values.reshape(-1, rows, cols) / (step_h * step_w)
    spread = grid_values.repeat_interleave(step_h, dim=1).repeat_interleave(step_w, dim=2)
    maps = spread.new_zeros(len(spread), height, width)
    maps[:, : rows * step_h, : cols * step_w] = spread
    return maps


@torch.no_grad()
def hit_maps(model: nn.Module, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """HiT saliency maps (N, H, W) and layer contributions (N, L) of the target logits, logit units.

    Map: Σ_l contribution_l(p) per patch, spread over the patch; layer contribution: Σ_p
    contribution_l(p). Both sum to the target logit.
    """
    hit = find_hit(model)
    contributions, _ = hit.contributions(images)  # (N, L, P, K)
    index = targets.to(images.device).long().view(-1, 1, 1, 1).expand(*contributions.shape[:3], 1)
    per_patch = contributions.gather(3, index)[..., 0]  # (N, L, P)
    maps = spread_patches(per_patch.sum(dim=1), hit.grid_size, tuple(images.shape[2:]))
    return maps.float().cpu(), per_patch.sum(dim=2).float().cpu()


class _AttentionRecorder:
    """Records the attention probabilities (N, heads, T, T) of a timm ViT's blocks during a forward
    pass: the fused kernel is switched off and ``attn_drop``'s input (the softmax output) is kept."""

    def __init__(self, network: nn.Module) -> None:
        self.attentions: list[Tensor] = []
        self._restore: list[tuple[nn.Module, bool]] = []
        self._handles = []
        for block in network.blocks:
            attention = block.attn
            self._restore.append((attention, attention.fused_attn))
            attention.fused_attn = False
            self._handles.append(attention.attn_drop.register_forward_hook(self._keep))

    def _keep(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self.attentions.append(inputs[0].detach())

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        for attention, fused in self._restore:
            attention.fused_attn = fused


def rollout(attentions: list[Tensor], prefix: int, class_token: bool = True) -> Tensor:
    """Attention rollout (N, patches) from per-layer attentions (N, heads, T, T): the row of the
    token the head reads of Π_l normalise(0.5·mean_heads(A_l) + 0.5·I), restricted to the patch
    tokens after ``prefix``: the class token's (row 0), or with ``class_token`` False (a ViT that
    pools its patch tokens) the mean of the patch rows."""
    tokens = attentions[0].shape[-1]
    identity = torch.eye(tokens, device=attentions[0].device, dtype=attentions[0].dtype)
    joint = identity.expand(len(attentions[0]), tokens, tokens)
    for attention in attentions:
        mixed = 0.5 * attention.mean(dim=1) + 0.5 * identity
        joint = (mixed / mixed.sum(dim=-1, keepdim=True)) @ joint
    rows = joint[:, 0] if class_token else joint[:, prefix:].mean(dim=1)
    return rows[:, prefix:]


@torch.no_grad()
def attention_rollout(model: nn.Module, images: Tensor) -> Tensor:
    """Rollout (N, H, W) of a HiT (mean CLS→patch attention) or a timm ViT (``rollout``); class-agnostic."""
    network = _network(model)
    size = tuple(images.shape[2:])
    if isinstance(network, HiT):
        attention = network.trace(images).attention  # (N, L, heads, P)
        return spread_patches(attention.mean(dim=(1, 2)), network.grid_size, size).float().cpu()
    if not hasattr(network, "blocks"):
        raise ValueError(f"attention_rollout needs a HiT or a timm ViT, got {type(network).__name__}")
    recorder = _AttentionRecorder(network)
    try:
        model(images)
    finally:
        recorder.close()
    prefix, rows, cols = token_grid(network, recorder.attentions[0].shape[-1])
    reads_class_token = (
        getattr(network, "global_pool", "token") == "token"
        and getattr(network, "cls_token", None) is not None
    )
    maps = rollout(recorder.attentions, prefix, reads_class_token)
    return spread_patches(maps, (rows, cols), size).float().cpu()


def default_token_layer(model: nn.Module) -> str | None:
    """Dotted name of the last transformer block's ``norm1`` (None for a model whose ``blocks``
    are absent or not transformer blocks, such as timm's EfficientNet and MobileNet stages)."""
    blocks = getattr(_network(model), "blocks", None)
    if blocks is None or len(blocks) == 0 or not isinstance(getattr(blocks[-1], "norm1", None), nn.Module):
        return None
    prefix = "network." if hasattr(model, "network") else ""
    return f"{prefix}blocks.{len(blocks) - 1}.norm1"


def token_gradcam(model: nn.Module, layer: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    """GradCAM (N, H, W) of a layer whose output is tokens (N, T, D), logit units (see module docstring)."""
    kept: list[Tensor] = []
    handle = layer.register_forward_hook(lambda module, inputs, output: kept.append(output))
    try:
        with torch.enable_grad():
            logits = model(images.detach().requires_grad_(True))  # a graph even with frozen weights
            selected = logits.gather(1, targets.to(logits.device).long().view(-1, 1)).sum()
            (gradient,) = torch.autograd.grad(selected, kept[-1])
    finally:
        handle.remove()
    tokens = kept[-1].detach()
    if tokens.ndim != 3:
        raise ValueError(f"token GradCAM needs a layer output (N, T, D), got shape {tuple(tokens.shape)}")
    prefix, rows, cols = token_grid(_network(model), tokens.shape[1])
    weights = gradient[:, prefix:].mean(dim=1, keepdim=True)  # (N, 1, D)
    cam = torch.relu((weights * tokens[:, prefix:]).sum(dim=-1))
    return spread_patches(cam, (rows, cols), tuple(images.shape[2:])).float().cpu()
