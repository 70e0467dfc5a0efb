"""Attribution-map metrics: faithfulness (insertion/deletion curves and their AUC, ROAD with noisy linear
imputation), robustness (max/average sensitivity), complexity (entropy), sanity (cascading model-parameter
randomisation) and ground truth (mask AUROC, pointing game). Images are torch float32 (N, C, H, W) in
[-1, 1]; maps are torch or numpy float32 (N, H, W), one signed value per pixel; targets are int class
indices (N,). ``Predict`` maps images to class probabilities (N, K) and is called without gradients in
chunks of ``batch_size`` images; ``Explain`` maps (images, targets) to maps. Pixels are ranked by
``rank_scores`` (|map| when ``absolute`` else the map), most important first, ties broken by the lower
flattened pixel index (stable sort). All results are numpy float64 arrays (bool for the pointing game).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse, special, stats
from scipy.sparse import linalg as sparse_linalg
from sklearn.metrics import roc_auc_score
from torch import nn

Predict = Callable[[torch.Tensor], torch.Tensor]
Explain = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ExplainWith = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
MapLike = torch.Tensor | np.ndarray

SUBSTRATES = ("zero", "blur")
CURVE_MODES = ("insertion", "deletion")
ROAD_ORDERS = ("morf", "lerf")
ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# (dy, dx, weight) of the 8 neighbours in ROAD's noisy linear imputation.
_NEIGHBOURS = (
    (-1, 0, 1 / 6),
    (1, 0, 1 / 6),
    (0, -1, 1 / 6),
    (0, 1, 1 / 6),
    (-1, -1, 1 / 12),
    (-1, 1, 1 / 12),
    (1, -1, 1 / 12),
    (1, 1, 1 / 12),
)


# --- conventions and validation ---------------------------------------------------------------------


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")


def _as_maps(maps: MapLike) -> torch.Tensor:
    """Maps as a detached float32 CPU tensor (N, H, W)."""
    tensor = maps.detach() if isinstance(maps, torch.Tensor) else torch.from_numpy(np.asarray(maps))
    if tensor.ndim != 3:
        raise ValueError(f"maps must be (N, H, W), got shape {tuple(tensor.shape)}")
    return tensor.to(device="cpu", dtype=torch.float32)


def _check_maps(images: torch.Tensor, maps: torch.Tensor) -> None:
    """Raise unless images are (N, C, H, W) and maps are (N, H, W) with the same N, H, W."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    expected = (images.shape[0], *images.shape[2:])
    if tuple(maps.shape) != expected:
        raise ValueError(f"maps shape {tuple(maps.shape)} does not match images (N, H, W) = {expected}")


def _as_targets(targets: torch.Tensor | np.ndarray | Sequence[int], count: int) -> torch.Tensor:
    """Targets as an int64 CPU tensor (N,); raises unless there is one per image."""
    tensor = torch.as_tensor(np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets))
    if tuple(tensor.shape) != (count,):
        raise ValueError(f"targets shape {tuple(tensor.shape)} does not match the N = {count} images")
    return tensor.long()


def _as_masks(masks: torch.Tensor | np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """Masks as a bool numpy array of the given shape (N, H, W); ``what`` names the reference."""
    array = np.asarray(masks.cpu() if isinstance(masks, torch.Tensor) else masks).astype(bool)
    if array.shape != tuple(shape):
        raise ValueError(f"mask shape {array.shape} does not match {what} shape {tuple(shape)}")
    return array


def rank_scores(maps: MapLike, absolute: bool) -> torch.Tensor:
    """Scores (N, H, W) float32 on CPU by which pixels are ranked: |maps| if ``absolute`` else maps."""
    tensor = _as_maps(maps)
    return tensor.abs() if absolute else tensor


TIE_ORDER_SEED = 0  # the fixed random order in which tied pixels are ranked


def _pixel_ranks(maps: MapLike, absolute: bool) -> torch.Tensor:
    """Rank (N, H·W) int64 of each flattened pixel, 0 = most important. Tied pixels are ranked
    in one fixed random order of the positions (not raster order, which would credit a map
    that ties many pixels, all-zero included, with removing the top rows first)."""
    scores = rank_scores(maps, absolute).flatten(1)
    shuffle = torch.randperm(scores.shape[1], generator=torch.Generator().manual_seed(TIE_ORDER_SEED))
    order = shuffle[torch.argsort(scores[:, shuffle], dim=1, descending=True, stable=True)]
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order).contiguous())
    return ranks


def _rows(tensor: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The given rows (B,) of tensor (R, ...), indexed on the tensor's device."""
    return tensor[rows.to(tensor.device)]


def _target_probabilities(
    predict: Predict,
    make_batch: Callable[[torch.Tensor], torch.Tensor],
    targets: torch.Tensor,
    batch_size: int,
) -> np.ndarray:
    """p(target) (R,) for R rows; ``make_batch(rows)`` builds the images (B, C, H, W) of row indices (B,)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    chunks = []
    for start in range(0, len(targets), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(targets)))
        with torch.no_grad():
            probabilities = predict(make_batch(rows)).detach().float().cpu()
        chunks.append(probabilities[torch.arange(len(rows)), targets[rows]])
    return torch.cat(chunks).double().numpy()


# --- insertion / deletion ---------------------------------------------------------------------------


def _gaussian_blur(images: torch.Tensor, sigma: float | None) -> torch.Tensor:
    """Separable depthwise Gaussian blur of images (N, C, H, W); sigma in px, default max(H, W) / 8.

    The kernel has 2·⌈3σ⌉ + 1 ≥ 6σ + 1 taps, sums to 1 and is applied in float64 with reflect padding,
    so a constant image comes back unchanged.
    """
    height, width = images.shape[-2:]
    sigma = max(height, width) / 8 if sigma is None else sigma
    if sigma <= 0:
        raise ValueError(f"blur sigma must be > 0 px, got {sigma}")
    radius = math.ceil(3 * sigma)
    if radius >= min(height, width):
        raise ValueError(f"blur kernel radius {radius} px needs images larger than {radius} px (reflect pad)")
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=images.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    rows = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    columns = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    blurred = F.conv2d(F.pad(images.double(), (radius, radius, 0, 0), mode="reflect"), rows, groups=channels)
    blurred = F.conv2d(F.pad(blurred, (0, 0, radius, radius), mode="reflect"), columns, groups=channels)
    return blurred.to(images.dtype)


def substrate(images: torch.Tensor, kind: str, sigma: float | None = None) -> torch.Tensor:
    """Baseline images (N, C, H, W) that replace removed pixels.

    ``"zero"``: black, i.e. −1 in [−1, 1]; ``"blur"``: Gaussian blur with ``sigma`` px (default
    max(H, W) / 8).
    """
    _check_choice("substrate kind", kind, SUBSTRATES)
    if kind == "zero":
        return torch.full_like(images, -1.0)
    return _gaussian_blur(images, sigma)


def insertion_deletion_curves(
    predict: Predict,
    images: torch.Tensor,
    maps: MapLike,
    targets: torch.Tensor | np.ndarray | Sequence[int],
    mode: str,
    substrate_kind: str = "zero",
    steps: int = 16,
    absolute: bool = True,
    batch_size: int = 256,
) -> np.ndarray:
    """p(target) (N, steps + 1) after moving the round(k·HW/steps) most important pixels, k = 0..steps
    (the fraction k/steps of the pixels, where the AUC places step k).

    ``"insertion"`` starts from the substrate and reveals the image's pixels; ``"deletion"`` starts from
    the image and replaces its pixels with the substrate. All channels of a pixel move together.
    """
    _check_choice("mode", mode, CURVE_MODES)
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    maps = _as_maps(maps)
    _check_maps(images, maps)
    targets = _as_targets(targets, len(images))
    count, _, height, width = images.shape
    ranks = _pixel_ranks(maps, absolute).to(images.device)
    moved = torch.round(torch.arange(steps + 1) * (height * width / steps)).long().to(images.device)
    background = substrate(images, substrate_kind)
    incoming, base = (images, background) if mode == "insertion" else (background, images)

    def make_batch(rows: torch.Tensor) -> torch.Tensor:
        samples, step = (rows // (steps + 1)).to(images.device), (rows % (steps + 1)).to(images.device)
        changed = ranks[samples] < moved[step, None]
        changed = changed.view(len(rows), 1, height, width)
        return torch.where(changed, incoming[samples], base[samples])

    row_targets = targets.repeat_interleave(steps + 1)
    return _target_probabilities(predict, make_batch, row_targets, batch_size).reshape(count, steps + 1)


def auc(curves: np.ndarray) -> np.ndarray:
    """Trapezoid area (N,) under curves (N, T), x evenly spaced over [0, 1]."""
    curves = np.asarray(curves, dtype=np.float64)
    return np.trapezoid(curves, dx=1.0 / (curves.shape[1] - 1), axis=1)


def normalised_auc(curves: np.ndarray) -> np.ndarray:
    """``auc`` (N,) divided by each curve's maximum; NaN where that maximum is 0."""
    peak = np.asarray(curves, dtype=np.float64).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peak == 0, np.nan, auc(curves) / peak)


def mean_curve_nauc(curves: np.ndarray) -> float:
    """nAUC of a set of images (thesis §6.4): the AUC of their mean curve (N, T) → (T,) divided
    by that curve's maximum. Not the mean of per-image ratios, where a flat curve of a
    low-confidence image scores 1."""
    return float(normalised_auc(np.asarray(curves, dtype=np.float64).mean(axis=0, keepdims=True))[0])


# --- ROAD -------------------------------------------------------------------------------------------


def _imputation_system(image: np.ndarray, removed: np.ndarray) -> tuple[sparse.csc_matrix, np.ndarray]:
    """Linear system over the m removed pixels (row-major) of image (C, H, W) with mask removed (H, W).

    Row i reads v_i − Σ_removed w_ij v_j = Σ_kept w_ij x_j, weights 1/6 (direct) and 1/12 (diagonal)
    renormalised over the neighbours inside the image. Returns the matrix (m, m) and rhs (m, C).
    """
    height, width = removed.shape
    ys, xs = np.nonzero(removed)
    count = len(ys)
    index = np.full((height, width), -1)
    index[ys, xs] = np.arange(count)
    links, total = [], np.zeros(count)
    for dy, dx, weight in _NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        total += weight * inside
        links.append((np.nonzero(inside)[0], ny[inside], nx[inside], weight))
    rows, columns, values = [np.arange(count)], [np.arange(count)], [np.ones(count)]
    rhs = np.zeros((count, image.shape[0]))
    for source, ny, nx, weight in links:
        coefficient = weight / total[source]
        neighbour = index[ny, nx]
        unknown = neighbour >= 0
        rows.append(source[unknown])
        columns.append(neighbour[unknown])
        values.append(-coefficient[unknown])
        known = ~unknown
        rhs[source[known]] += coefficient[known, None] * image[:, ny[known], nx[known]].T
    matrix = sparse.csc_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))), shape=(count, count)
    )
    return matrix, rhs


def _solve(matrix: sparse.spmatrix, rhs: np.ndarray) -> np.ndarray:
    """Solution (m, C) of matrix (m, m) @ x = rhs (m, C) by sparse LU; per-column ``lsqr`` (least squares,
    minimum norm) when the LU reports a singular matrix or its solution does not satisfy the system."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", sparse_linalg.MatrixRankWarning)
        try:
            solution = np.asarray(sparse_linalg.spsolve(matrix, rhs)).reshape(rhs.shape)
        except sparse_linalg.MatrixRankWarning:
            solution = np.full(rhs.shape, np.nan)
    residual = np.abs(matrix @ solution - rhs).max(initial=0.0) if np.isfinite(solution).all() else np.inf
    if residual <= 1e-9 * (1.0 + np.abs(rhs).max(initial=0.0)):
        return solution
    limit = 20 * matrix.shape[0] + 100
    columns = [sparse_linalg.lsqr(matrix, b, atol=1e-14, btol=1e-14, iter_lim=limit)[0] for b in rhs.T]
    return np.stack(columns, axis=1)


def _impute_values(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Noise-free imputed values (C, m) of the removed pixels (row-major) of image (C, H, W); 0 if all are."""
    if removed.all():
        return np.zeros((image.shape[0], removed.size))
    return _solve(*_imputation_system(image, removed)).T


def noisy_linear_impute(
    images: torch.Tensor,
    removed: torch.Tensor | np.ndarray,
    noise_std: float = 0.02,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """ROAD's noisy linear imputation of images (N, C, H, W) at the pixels where removed (N, H, W) is true.

    Each removed pixel becomes the weighted mean of its 8 neighbours (1/6 direct, 1/12 diagonal,
    renormalised inside the image), removed neighbours being unknowns solved jointly per image and
    channel, plus N(0, noise_std²) noise ([−1, 1] units, drawn on CPU from ``generator``). Kept pixels
    are returned unchanged; an image with every pixel removed is imputed as 0 plus noise.
    """
    removed = _as_masks(removed, (images.shape[0], *images.shape[2:]), "images (N, H, W)")
    result = images.detach().clone()
    values = images.detach().cpu().double().numpy()
    for sample, mask in enumerate(removed):
        if not mask.any():
            continue
        filled = _impute_values(values[sample], mask)
        noise = torch.randn(filled.shape, generator=generator, dtype=torch.float64) * noise_std
        imputed = torch.from_numpy(filled) + noise
        result[sample][:, torch.from_numpy(mask).to(result.device)] = imputed.to(result)
    return result


def road_curves(
    predict: Predict,
    images: torch.Tensor,
    maps: MapLike,
    targets: torch.Tensor | np.ndarray | Sequence[int],
    order: str,
    fractions: Sequence[float] = ROAD_FRACTIONS,
    absolute: bool = True,
    noise_std: float = 0.02,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """p(target) (N, len(fractions)) after imputing round(f·HW) pixels per fraction f.

    ``"morf"`` imputes the most relevant pixels first, ``"lerf"`` the least relevant ones (Rong et al.
    2022, noisy linear imputation).
    """
    _check_choice("order", order, ROAD_ORDERS)
    maps = _as_maps(maps)
    _check_maps(images, maps)
    targets = _as_targets(targets, len(images))
    count, _, height, width = images.shape
    ranks = _pixel_ranks(maps, absolute).view(count, height, width)
    curves = np.empty((count, len(fractions)))
    for column, fraction in enumerate(fractions):
        if not 0 <= fraction <= 1:
            raise ValueError(f"ROAD fractions must lie in [0, 1], got {fraction}")
        removing = round(fraction * height * width)
        removed = ranks < removing if order == "morf" else ranks >= height * width - removing
        imputed = noisy_linear_impute(images, removed, noise_std, generator)
        curves[:, column] = _target_probabilities(predict, partial(_rows, imputed), targets, batch_size)
    return curves


# --- robustness and complexity ----------------------------------------------------------------------


def _unit_max(maps: torch.Tensor) -> torch.Tensor:
    """Maps (N, H, W) in float64 divided by their own max |a|; a zero map stays zero."""
    maps = maps.detach().double()
    peak = maps.abs().flatten(1).amax(dim=1).view(-1, 1, 1)
    return torch.where(peak > 0, maps / torch.where(peak > 0, peak, 1.0), 0.0)


def sensitivity(
    explain: Explain,
    images: torch.Tensor,
    targets: torch.Tensor | np.ndarray | Sequence[int],
    radius: float = 0.02,
    samples: int = 10,
    generator: torch.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Average and max sensitivity (Bhatt et al. 2020), each (N,), over ``samples`` perturbations.

    Per sample s: δ = radius·(2u − 1) with u = torch.rand((N, C, H, W), generator) drawn on CPU
    (float32, [−1, 1] units), x' = clamp(x + δ, −1, 1), value = ‖â(x') − â(x)‖_F / ‖x‖_F where â is a
    map divided by its own max |a|.
    """
    if samples < 1:
        raise ValueError(f"samples must be ≥ 1, got {samples}")
    targets = _as_targets(targets, len(images)).to(images.device)
    reference = explain(images, targets)
    _check_maps(images, reference)
    reference = _unit_max(reference)
    norms = images.detach().double().flatten(1).norm(dim=1)
    values = []
    for _ in range(samples):
        delta = radius * (2 * torch.rand(images.shape, generator=generator) - 1)
        perturbed = (images + delta.to(images)).clamp(-1.0, 1.0)
        change = (_unit_max(explain(perturbed, targets)) - reference).flatten(1).norm(dim=1)
        values.append((change / norms).cpu().numpy())
    values = np.stack(values)
    return values.mean(axis=0), values.max(axis=0)


def complexity(maps: MapLike) -> np.ndarray:
    """Shannon entropy (N,) in nats of p = |a| / Σ|a| over the H·W pixels; NaN for an all-zero map."""
    magnitude = _as_maps(maps).double().abs().flatten(1).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        share = magnitude / magnitude.sum(axis=1, keepdims=True)
    return special.entr(share).sum(axis=1)


# --- sanity: cascading model-parameter randomisation ---------------------------------------------------


def _parameter_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules owning parameters directly, output side first (reverse ``named_modules`` order)."""
    owners = [(name, module) for name, module in model.named_modules() if list(module.parameters(False))]
    return owners[::-1]


def _reinitialise(module: nn.Module, generator: torch.Generator) -> None:
    """Replace each own parameter with N(0, std²): std of that tensor, 0.01 if it is 0 or undefined."""
    with torch.no_grad():
        for parameter in module.parameters(recurse=False):
            std = parameter.float().std().item() if parameter.numel() > 1 else 0.0
            std = std if std > 0 else 0.01
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)


def _correlations(first: torch.Tensor, second: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Spearman and Pearson correlation (N,) per sample of the original scores ``first`` and the
    randomised ``second`` (N, H, W): 0 where the randomised map is constant (no ranking of the
    original survives: the check is passed), NaN where the original is (nothing to compare)."""
    first, second = first.flatten(1).double().numpy(), second.flatten(1).double().numpy()
    spearman, pearson = np.full(len(first), np.nan), np.full(len(first), np.nan)
    for sample, (a, b) in enumerate(zip(first, second, strict=True)):
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            spearman[sample] = stats.spearmanr(a, b).statistic
            pearson[sample] = stats.pearsonr(a, b).statistic
        elif np.ptp(a) > 0:
            spearman[sample] = pearson[sample] = 0.0
    return spearman, pearson


def randomisation_check(
    model: nn.Module,
    explain_with: ExplainWith,
    images: torch.Tensor,
    targets: torch.Tensor | np.ndarray | Sequence[int],
    seed: int = 0,
    absolute: bool = True,
) -> dict[str, list[str] | np.ndarray]:
    """Cascading top-down model-parameter randomisation (Adebayo et al. 2018) on a copy of ``model``.

    Layers are re-initialised cumulatively from the output side; after each, the maps of the randomised
    copy are compared per sample with the original maps (rank scores per ``absolute``). Returns
    {"layers": names (L,), "spearman": (L, N), "pearson": (L, N)}.
    """
    randomised = copy.deepcopy(model)
    targets = _as_targets(targets, len(images)).to(images.device)
    original = explain_with(randomised, images, targets)
    _check_maps(images, original)
    original = rank_scores(original, absolute)
    layers = _parameter_layers(randomised)
    generator = torch.Generator().manual_seed(seed)
    spearman, pearson = np.empty((len(layers), len(images))), np.empty((len(layers), len(images)))
    for depth, (_, module) in enumerate(layers):
        _reinitialise(module, generator)
        scores = rank_scores(explain_with(randomised, images, targets), absolute)
        spearman[depth], pearson[depth] = _correlations(original, scores)
    return {"layers": [name for name, _ in layers], "spearman": spearman, "pearson": pearson}


# --- ground truth -----------------------------------------------------------------------------------


def scorable_masks(masks: torch.Tensor | np.ndarray) -> np.ndarray:
    """Bool (N,): the masks (N, H, W) that are neither empty nor the whole image, the ones
    against which a map's AUROC is defined."""
    masks = np.asarray(masks, dtype=bool)
    flat = masks.reshape(len(masks), math.prod(masks.shape[1:]))
    return flat.any(1) & ~flat.all(1)


def mask_auroc(maps: MapLike, masks: torch.Tensor | np.ndarray, absolute: bool = True) -> np.ndarray:
    """AUROC (N,) of the pixel scores against bool masks (N, H, W); NaN where a mask is all true/false."""
    scores = rank_scores(maps, absolute)
    truth = _as_masks(masks, tuple(scores.shape), "maps").reshape(len(scores), math.prod(scores.shape[1:]))
    scores = scores.flatten(1).double().numpy()
    defined = scorable_masks(truth)
    return np.array(
        [roc_auc_score(t, s) if ok else np.nan for t, s, ok in zip(truth, scores, defined, strict=True)]
    )


def pointing_game(maps: MapLike, masks: torch.Tensor | np.ndarray, absolute: bool = True) -> np.ndarray:
    """Hit rate (N,) of each map's highest-scoring pixel in its mask: 1 or 0, and where pixels tie
    for the maximum (a patch-constant HiT or occlusion map) the share of the tied pixels inside
    the mask, the expected hit under a random tie-break (a constant map scores the mask's area)."""
    scores = rank_scores(maps, absolute)
    truth = _as_masks(masks, tuple(scores.shape), "maps").reshape(len(scores), math.prod(scores.shape[1:]))
    scores = scores.flatten(1).numpy()
    best = scores == scores.max(axis=1, keepdims=True)
    return (best & truth).sum(axis=1) / best.sum(axis=1)
