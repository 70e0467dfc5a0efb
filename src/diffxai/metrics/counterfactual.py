"""Counterfactual-explanation (CE) metrics: validity, closeness, COUT, feature similarity, factor changes.

Definitions follow DiME (Jeanneret et al.) and Jeanneret's thesis (§2.2.2, App. B.1); COUT follows
Khorram & Fuxin (C3LT). Images are float tensors (N, C, H, W) in [-1, 1]; classifiers return logits
(N, num_classes) and should be in eval mode.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def flip_rate(pred_cf: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of CEs whose predicted class (N,) equals the target class (N,)."""
    return float(np.mean(np.asarray(pred_cf) == np.asarray(targets)))


def bkl(probs_cf: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-sample 1 − p(target | CE) (N,) from the classifier's probabilities on the CEs (N, K)."""
    probs_cf = np.asarray(probs_cf, dtype=np.float64)
    return 1.0 - probs_cf[np.arange(len(probs_cf)), np.asarray(targets)]


def distances(images: torch.Tensor, cfs: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-sample closeness of CEs to their images, both (N, C, H, W) in [-1, 1].

    Both are mapped to [0, 1] first, so d = (cf − x) / 2 and, with P = C·H·W pixel values:
    ``l1`` = Σ|d| / P (DiME's per-pixel mean ℓ1) and ``l2`` = sqrt(Σ d²) / sqrt(P) (the root mean
    square). Returns float64 arrays (N,) in [0, 1].
    """
    diff = (cfs.double() - images.double()).flatten(1) / 2
    return {
        "l1": diff.abs().mean(dim=1).cpu().numpy(),
        "l2": diff.square().mean(dim=1).sqrt().cpu().numpy(),
    }


def _module_device(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _insertion_ranks(images: torch.Tensor, cfs: torch.Tensor) -> torch.Tensor:
    """Rank (N, H·W) of each pixel position by channel-summed |cf − x|, 0 = largest (stable on ties)."""
    change = (cfs - images).abs().sum(dim=1).flatten(1)
    order = torch.argsort(change, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order).contiguous())
    return ranks


@torch.no_grad()
def cout(
    classifier: nn.Module,
    images: torch.Tensor,
    cfs: torch.Tensor,
    sources: np.ndarray,
    targets: np.ndarray,
    steps: int = 50,
    batch_size: int = 256,
) -> np.ndarray:
    """COUT (N,) in [−1, 1]: area under p_target − p_source while the CE's pixels are inserted into x.

    Pixel positions are ordered by channel-summed |cf − x| (largest first); step k = 0..steps
    replaces the top round(k / steps · H·W) positions (all channels) of x by the CE's values.
    The curve is integrated with the trapezoid rule on the normalised axis k / steps ∈ [0, 1].
    The (N · (steps + 1)) intermediate images are evaluated in batches of ``batch_size``.
    """
    images, cfs = images.float().cpu(), cfs.float().cpu()
    n, _, height, width = images.shape
    ranks = _insertion_ranks(images, cfs)
    counts = torch.round(torch.arange(steps + 1, dtype=torch.float64) * (height * width) / steps).long()
    sources_t, targets_t = torch.as_tensor(sources).long(), torch.as_tensor(targets).long()
    device = _module_device(classifier)
    gaps = torch.empty(n * (steps + 1), dtype=torch.float64)
    for flat in torch.arange(n * (steps + 1)).split(batch_size):
        sample, step = flat // (steps + 1), flat % (steps + 1)
        inserted = (ranks[sample] < counts[step, None]).view(-1, 1, height, width)
        mixed = torch.where(inserted, cfs[sample], images[sample])
        probs = classifier(mixed.to(device)).double().softmax(dim=1).cpu()
        rows = torch.arange(len(flat))
        gaps[flat] = probs[rows, targets_t[sample]] - probs[rows, sources_t[sample]]
    curves = gaps.view(n, steps + 1).numpy()
    return np.trapezoid(curves, dx=1.0 / steps, axis=1)


def similarity_s3(
    encoder_features_x: torch.Tensor | np.ndarray, encoder_features_cf: torch.Tensor | np.ndarray
) -> np.ndarray:
    """S³ / FS: cosine similarity (N,) between encoder features (N, D) of the images and of their CEs."""
    a = torch.as_tensor(encoder_features_x).double()
    b = torch.as_tensor(encoder_features_cf).double()
    return nn.functional.cosine_similarity(a, b, dim=1).cpu().numpy()


def factor_changes(before: np.ndarray, after: np.ndarray, reference_std: float) -> dict[str, float]:
    """Change of one generative factor (e.g. log aspect ratio or size) measured on images (N,) and CEs (N,).

    ``mean_abs_change`` = mean |after − before| in the factor's units; ``mean_abs_change_in_std`` =
    the same divided by ``reference_std`` (the factor's std on real data), so that factors with
    different units can be compared. Call once per factor.
    """
    if not reference_std > 0:
        raise ValueError(f"reference_std must be positive, got {reference_std}")
    change = float(np.mean(np.abs(np.asarray(after, np.float64) - np.asarray(before, np.float64))))
    return {"mean_abs_change": change, "mean_abs_change_in_std": change / reference_std}
