"""Global Counterfactual Directions (seed 001 §4): black-box directions in a DiffAE's
semantic space, found from one source image, applied to any image by a line search.

Discovery (one source image x with codes z_sem, z_T):

1. δ uniform in the n-ball of radius r; x̃ = DAE(z_sem + δ, z_T); record the black-box
   score f(x̃) of x's predicted class (``params.score``: its log-odds by default, or its
   probability) and s = LPIPS(x, x̃); samples that decode to non-finite values are left out;
2. a proxy MLP p (5 linear layers, sigmoid activations, outputs (p_f, p_s)) fitted to
   (z̃ → (f, s)) with validation early stopping;
3. g-direction ∇_z (p_f + λ p_s) at z_sem (eq. 3) and h-directions, eigenvectors of the
   Hessian of the same function sorted by |eigenvalue| (eq. 4). p_f is in the score's
   units: with log-odds (d log-odds / dp = 1 / (p (1 − p))) the direction weighs LPIPS as
   the probability loss p + λ p (1 − p) s would, near the source's probability p, not as
   the line search's f + λ s — much less where p is close to 1.

All of it runs in standardised coordinates u = (z_sem − μ) / σ (μ, σ per latent
dimension over training images), and the radius and step sizes are in units of √dim, the
typical norm of a standardised code, so they depend neither on the encoder's scale nor on
the latent size. Directions are unit vectors pointing downhill on the proxy's CF loss
(−g, and each h signed so that it does not climb the proxy's gradient).

Transfer (eq. 5): for every image, x̃_k = DAE(z_sem + α_k d, z_T) on a grid of α in one
batch; the CE is the flipped x̃_k of smallest CF loss f + λ·LPIPS(x, x̃_k), f the
probability of the image's predicted class. ``sides: both`` (the default) searches +d and
−d and keeps the better side per image; ``sides: oriented`` searches one side, d oriented
against the image's predicted class (−d for images not of the source image's class).
Points that decode to non-finite values are never taken; an image without a finite point
beyond α = 0 gets no CE.

BB-LIG (eq. 6): the same line-search images up to the baseline give a finite-difference
Latent Integrated Gradients map, zero where a pixel does not change (|Δ| ≤ ``lig_eps``).
The baseline is the first point beyond α = 0 whose probability of the source class is at
most ``baseline_probability``, else the last point, both within the path's finite stretch
from α = 0 (up to its first non-finite point); a path without a finite point beyond α = 0
gets a zero map. BB-IG is the same quotient on the straight path from a black image.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from diffxai.methods.base import ExplanationError, Explanations, check_images, check_params, in_batches
from diffxai.methods.gcd_params import DIRECTION_PARAMS, TRANSFER_PARAMS
from diffxai.models.blackbox import BlackBox
from diffxai.models.diffae import DiffAECodec

log = logging.getLogger(__name__)
PARAMS = {**DIRECTION_PARAMS, **TRANSFER_PARAMS}


def with_defaults(params: dict[str, Any]) -> dict[str, Any]:
    check_params(params, set(PARAMS), "gcd")
    return {**PARAMS, **params}


# ---------------------------------------------------------------------------- proxy


def sample_ball(n: int, dim: int, radius: float, generator: torch.Generator) -> torch.Tensor:
    """n points (n, dim) uniform in the dim-ball of ``radius``: a uniform direction times
    radius · U^(1/dim)."""
    direction = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    direction /= direction.norm(dim=1, keepdim=True)
    scale = radius * torch.rand(n, 1, generator=generator, dtype=torch.float64) ** (1.0 / dim)
    return (direction * scale).float()


class ProxyMLP(nn.Module):
    """5 linear layers with sigmoid activations: u (N, dim) → (p_f, p_s) (N, 2) in the
    targets' units (targets are standardised inside, by buffers set before fitting)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        widths = [dim, hidden, hidden, hidden, hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b), nn.Sigmoid()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, 2))
        self.register_buffer("target_mean", torch.zeros(2))
        self.register_buffer("target_std", torch.ones(2))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.net(u) * self.target_std + self.target_mean


@dataclass
class ProxyFit:
    proxy: ProxyMLP
    train_loss: float  # standardised MSE at the best epoch
    val_loss: float
    epochs: int


def fit_proxy(
    u: torch.Tensor, targets: torch.Tensor, params: dict[str, Any], generator: torch.Generator
) -> ProxyFit:
    """Fit a :class:`ProxyMLP` to targets (N, 2) = (f, s) at points u (N, dim): Adam on the
    MSE of standardised targets, the weights of the best validation epoch, stopped after
    ``proxy_patience`` epochs without improvement. Refuses a split without 2 training rows
    (the targets' std needs them) and 1 validation row, and a fit whose validation loss was
    never finite."""
    n = len(u)
    order = torch.randperm(n, generator=generator)
    n_val = max(1, round(params["val_fraction"] * n))
    val, train = order[:n_val], order[n_val:]
    if len(train) < 2 or len(val) < 1:
        raise ExplanationError(
            f"{n} proxy samples with params.val_fraction={params['val_fraction']} leave {len(train)} "
            f"for training and {len(val)} for validation (at least 2 and 1): raise params.proxy_samples"
        )
    with torch.random.fork_rng(devices=[]):  # initial weights from ``generator``, not the global state
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        proxy = ProxyMLP(u.shape[1], params["proxy_hidden"])
    proxy.target_mean.copy_(targets[train].mean(0))
    proxy.target_std.copy_(targets[train].std(0).clamp_min(1e-6))
    optimizer = torch.optim.Adam(proxy.parameters(), lr=params["proxy_lr"])

    def loss_on(rows: torch.Tensor) -> torch.Tensor:
        return (((proxy(u[rows]) - targets[rows]) / proxy.target_std) ** 2).mean()

    best = (math.inf, math.inf, 0, {k: v.clone() for k, v in proxy.state_dict().items()})
    for epoch in range(params["proxy_epochs"]):
        proxy.train()
        for rows in train[torch.randperm(len(train), generator=generator)].split(params["proxy_batch"]):
            optimizer.zero_grad(set_to_none=True)
            loss_on(rows).backward()
            optimizer.step()
        proxy.eval()
        with torch.no_grad():
            val_loss = float(loss_on(val))
        if val_loss < best[0]:
            with torch.no_grad():
                train_loss = float(loss_on(train))
            best = (val_loss, train_loss, epoch + 1, {k: v.clone() for k, v in proxy.state_dict().items()})
        elif epoch + 1 - best[2] >= params["proxy_patience"]:
            break
    if best[2] == 0:  # NaN/inf targets or a diverging fit: the initial weights would be returned
        raise ExplanationError(
            "the proxy's validation loss was never finite: non-finite targets or a diverging fit "
            "(lower params.proxy_lr)"
        )
    proxy.load_state_dict(best[3])
    return ProxyFit(proxy.eval().requires_grad_(False), best[1], best[0], best[2])


def proxy_cf_loss(proxy: ProxyMLP, lam: float):
    """u (dim,) → p_f(u) + λ p_s(u), a scalar (the proxy's approximate CF loss)."""

    def loss(u: torch.Tensor) -> torch.Tensor:
        out = proxy(u[None])[0]
        return out[0] + lam * out[1]

    return loss


def directions_at(proxy: ProxyMLP, u0: torch.Tensor, lam: float, k: int) -> dict[str, torch.Tensor]:
    """g (dim,), h (k, dim) unit directions at u0 (both downhill), the gradient norm and the
    Hessian eigenvalues (k,) sorted by magnitude (seed 001 eqs. 3–4)."""
    loss = proxy_cf_loss(proxy, lam)
    u = u0.detach().double().clone().requires_grad_(True)
    proxy.double()
    try:
        gradient = torch.autograd.grad(loss(u), u)[0].detach()
        hessian = torch.autograd.functional.hessian(loss, u0.detach().double())
    finally:
        proxy.float()
    if not (gradient.isfinite().all() and hessian.isfinite().all()):
        raise ExplanationError("the proxy's CF loss has a non-finite gradient or Hessian at the source")
    eigenvalues, eigenvectors = torch.linalg.eigh((hessian + hessian.T) / 2)
    order = eigenvalues.abs().argsort(descending=True)[:k]
    h = eigenvectors[:, order].T.clone()
    signs = torch.where(h @ gradient > 0, -1.0, 1.0).to(h.dtype)
    h *= signs[:, None]
    g_norm = gradient.norm()
    if g_norm == 0:  # a constant proxy: the line search would walk a zero direction, never flipping
        raise ExplanationError(
            "the proxy's CF loss is flat at the source (zero gradient): no g-direction; "
            "raise params.radius or params.proxy_samples"
        )
    g = -gradient / g_norm
    return {
        "g": g.float(),
        "h": h.float(),
        "gradient_norm": g_norm.float(),
        "eigenvalues": eigenvalues[order].float(),
    }


# ---------------------------------------------------------------------------- latents


@dataclass
class LatentSpace:
    """The standardisation of z_sem: u = (z − mean) / std, per dimension (dim,)."""

    mean: torch.Tensor
    std: torch.Tensor

    def to_u(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.mean) / self.std

    def to_z(self, u: torch.Tensor) -> torch.Tensor:
        return u * self.std + self.mean


@dataclass
class Probe:
    """What the black box and LPIPS say about decoded images: probabilities (N, K) and
    LPIPS to their originals (N,)."""

    probabilities: torch.Tensor
    lpips: torch.Tensor


def decode_and_probe(
    codec: DiffAECodec,
    blackbox: BlackBox,
    lpips,
    space: LatentSpace,
    u: torch.Tensor,
    z_t: torch.Tensor,
    originals: torch.Tensor,
    steps: int,
) -> tuple[torch.Tensor, Probe]:
    """Decode u (N, dim) with z_T (N, C, H, W), clipped to [-1, 1]; classify and compare
    with ``originals`` (N, C, H, W)."""
    images = codec.decode(space.to_z(u), z_t, steps).clamp(-1, 1)
    return images, Probe(blackbox(images), lpips(originals, images))


# ---------------------------------------------------------------------------- discovery


def class_score(probabilities: torch.Tensor, source_class: int, kind: str) -> torch.Tensor:
    """The proxy's target f (N,) from black-box probabilities (N, K): ``probability`` of the
    source class, or its ``log_odds`` log p_c − log Σ_{j≠c} p_j, which keeps varying where
    the probability has saturated at 1 in float32 (the other classes' small probabilities
    stay representable)."""
    p = probabilities.double()
    if kind == "probability":
        return p[:, source_class].float()
    if kind == "log_odds":
        others = torch.cat([p[:, :source_class], p[:, source_class + 1 :]], 1).sum(1)
        tiny = torch.finfo(torch.float32).tiny
        return (p[:, source_class].clamp_min(tiny).log() - others.clamp_min(tiny).log()).float()
    raise ExplanationError(f"params.score={kind!r}: allowed probability, log_odds")


@dataclass
class Directions:
    """One source image's GCDs and the proxy data behind them (u-space)."""

    source_id: int
    source_class: int
    u0: torch.Tensor  # (dim,)
    g: torch.Tensor  # (dim,)
    h: torch.Tensor  # (k, dim)
    eigenvalues: torch.Tensor  # (k,)
    gradient_norm: float
    proxy_u: torch.Tensor  # (n, dim): the finite samples the proxy was fitted on
    proxy_f: torch.Tensor  # (n,)
    proxy_s: torch.Tensor  # (n,)
    fit: ProxyFit
    nfe: int
    queries: int

    def direction(self, name: str) -> torch.Tensor:
        """``g`` or ``h<i>`` (1-based, in |eigenvalue| order)."""
        if name == "g":
            return self.g
        if name.startswith("h") and name[1:].isdigit() and 1 <= int(name[1:]) <= len(self.h):
            return self.h[int(name[1:]) - 1]
        raise ExplanationError(f"params.direction={name!r}: allowed g or h1..h{len(self.h)}")


def finite_samples(
    u: torch.Tensor, f: torch.Tensor, s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The proxy samples u (n, dim), f (n,), s (n,) whose score and LPIPS are finite (a
    diverging decode gives NaN), with a warning counting the others."""
    keep = f.isfinite() & s.isfinite()
    if not keep.all():
        log.warning("%d of %d proxy samples decoded to non-finite values: left out", (~keep).sum(), len(keep))
    return u[keep], f[keep], s[keep]


def discover(
    codec: DiffAECodec,
    blackbox: BlackBox,
    lpips,
    space: LatentSpace,
    source: torch.Tensor,
    source_id: int,
    z_t: torch.Tensor,
    params: dict[str, Any],
    generator: torch.Generator,
) -> Directions:
    """GCDs of one source image (1, C, H, W) with its z_T (1, C, H, W)."""
    params = with_defaults(params)
    nfe0, queries0 = codec.nfe, blackbox.queries
    source_class = int(blackbox(source).argmax(1))
    u0 = space.to_u(codec.semantic(source))[0]
    n = params["proxy_samples"]
    u = u0 + sample_ball(n, len(u0), params["radius"] * math.sqrt(len(u0)), generator)
    f, s = [], []
    for rows in torch.arange(n).split(codec.batch):
        _, probe = decode_and_probe(
            codec, blackbox, lpips, space, u[rows], z_t.expand(len(rows), -1, -1, -1),
            source.expand(len(rows), -1, -1, -1), params["decode_steps"],
        )  # fmt: skip
        f.append(class_score(probe.probabilities, source_class, params["score"]))
        s.append(probe.lpips)
    u, f_all, s_all = finite_samples(u, torch.cat(f).float(), torch.cat(s).float())
    fit = fit_proxy(u, torch.stack([f_all, s_all], 1), params, generator)
    found = directions_at(fit.proxy, u0, params["lam"], params["h_directions"])
    return Directions(
        source_id, source_class, u0, found["g"], found["h"], found["eigenvalues"],
        float(found["gradient_norm"]), u, f_all, s_all, fit,
        codec.nfe - nfe0, blackbox.queries - queries0,
    )  # fmt: skip


def discovery_nfe(params: dict[str, Any], encode_steps: int) -> int:
    """Diffusion-network evaluations to find one source image's directions (encoding the
    source, then decoding every proxy sample)."""
    params = with_defaults(params)
    return encode_steps + params["proxy_samples"] * params["decode_steps"]


# ---------------------------------------------------------------------------- transfer


def alpha_grid(params: dict[str, Any], dim: int) -> torch.Tensor:
    """α_0 = 0 < α_1 < … < α_K = alpha_max·√dim (K + 1,), in u-space units for codes of
    length ``dim``; α_0 is the path's start (BB-LIG)."""
    return torch.linspace(0.0, params["alpha_max"] * math.sqrt(dim), params["alpha_steps"] + 1)


@dataclass
class LineSearch:
    """Per image (N,): the chosen grid index (≥ 1; 0 where no point beyond α = 0 decoded to
    finite values: no CE), whether it flips, its CF loss, and the whole path: images
    (N, K + 1, C, H, W), probabilities (N, K + 1, classes), LPIPS (N, K + 1)."""

    index: torch.Tensor
    success: torch.Tensor
    cf_loss: torch.Tensor
    path: torch.Tensor
    probabilities: torch.Tensor  # (N, K + 1, classes)
    lpips: torch.Tensor  # (N, K + 1)

    @property
    def found(self) -> torch.Tensor:
        """(N,) bool: whether the image has a CE (flipped or not), a finite point beyond α = 0."""
        return self.index > 0


def finite_points(path: torch.Tensor, probabilities: torch.Tensor, lpips: torch.Tensor) -> torch.Tensor:
    """(N, K + 1) bool: the path points (N, K + 1, C, H, W) whose image, probabilities
    (N, K + 1, classes) and LPIPS (N, K + 1) are all finite (a diverged decode is not)."""
    return path.flatten(2).isfinite().all(2) & probabilities.isfinite().all(2) & lpips.isfinite()


def line_search(
    codec: DiffAECodec,
    blackbox: BlackBox,
    lpips,
    space: LatentSpace,
    images: torch.Tensor,
    u: torch.Tensor,
    z_t: torch.Tensor,
    direction: torch.Tensor,
    sources: torch.Tensor,
    params: dict[str, Any],
) -> LineSearch:
    """Eq. 5 for images (N, C, H, W) with codes u (N, dim), z_T (N, C, H, W) along unit
    directions (dim,) or one per image (N, dim): every α of :func:`alpha_grid` decoded in
    one batch; the CE is the flipped point of least CF loss f + λ s, else (no flip) the
    point of least f (f: probability of the image's own predicted class ``sources``), among
    the finite points beyond α = 0; without one, index 0 and no success."""
    alphas = alpha_grid(params, u.shape[1])
    n, k = len(images), len(alphas)
    per_image = direction.expand(n, -1)
    points = (u[:, None] + alphas[None, :, None] * per_image[:, None]).reshape(n * k, -1)
    repeat = lambda x: x[:, None].expand(n, k, *x.shape[1:]).reshape(n * k, *x.shape[1:])  # noqa: E731
    decoded, probe = decode_and_probe(
        codec, blackbox, lpips, space, points, repeat(z_t), repeat(images), params["decode_steps"]
    )
    probabilities = probe.probabilities.reshape(n, k, -1)
    s = probe.lpips.reshape(n, k)
    f = probabilities.gather(2, sources[:, None, None].expand(n, k, 1))[..., 0]
    loss = f + params["lam"] * s
    path = decoded.reshape(n, k, *images.shape[1:])
    usable = finite_points(path, probabilities, s)
    if not usable.all():  # a diverged decode: argmax of NaN probabilities would count as a flip
        log.warning("%d of %d line-search points decoded to non-finite values", (~usable).sum(), n * k)
    usable[:, 0] = False  # α = 0 is the reconstruction, never a CE
    found = usable.any(1)
    if not found.all():
        log.warning("%d of %d images have no finite line-search point beyond α = 0: no CE", (~found).sum(), n)
    flipped = (probabilities.argmax(2) != sources[:, None]) & usable
    candidate = torch.where(flipped, loss, torch.inf)
    fallback = torch.where(usable, f, torch.inf)
    least_f = torch.where(found, fallback.argmin(1), 0)
    index = torch.where(flipped.any(1), candidate.argmin(1), least_f)
    rows = torch.arange(n)
    return LineSearch(index, flipped[rows, index], loss[rows, index], path, probabilities, s)


def oriented(direction: torch.Tensor, sources: torch.Tensor, source_class: int) -> torch.Tensor:
    """One direction per image (N, dim): ``direction`` (found on an image of
    ``source_class``, so it lowers that class) for images predicted as that class, its
    opposite for the others (for a binary task: raising the source class lowers theirs)."""
    signs = torch.where(sources == source_class, 1.0, -1.0)
    return signs[:, None] * direction[None]


def transfer(
    codec: DiffAECodec,
    blackbox: BlackBox,
    lpips,
    space: LatentSpace,
    images: torch.Tensor,
    u: torch.Tensor,
    z_t: torch.Tensor,
    direction: torch.Tensor,
    source_class: int,
    sources: torch.Tensor,
    params: dict[str, Any],
) -> tuple[LineSearch, torch.Tensor]:
    """A direction (dim,) applied to images by :func:`line_search`, on the side(s) ``params.sides``
    says: ``both`` searches +d and −d and keeps, per image, the side whose CE flips with
    the least CF loss (else the lower source-class probability; a side without a CE loses
    to one with a CE); ``oriented`` searches +d for images of the source image's class and
    −d for the others. Returns the chosen searches and each image's side (N,) as ±1."""
    n = len(images)
    if params["sides"] == "oriented":
        per_image = oriented(direction, sources, source_class)
        signs = torch.where(sources == source_class, 1.0, -1.0)
        return line_search(codec, blackbox, lpips, space, images, u, z_t, per_image, sources, params), signs
    if params["sides"] != "both":
        raise ExplanationError(f"params.sides={params['sides']!r}: allowed both, oriented")
    two = lambda x: torch.cat([x, x])  # noqa: E731
    signs = torch.cat([torch.ones(n), -torch.ones(n)])
    search = line_search(
        codec,
        blackbox,
        lpips,
        space,
        two(images),
        two(u),
        two(z_t),
        signs[:, None] * direction,
        two(sources),
        params,
    )
    rows = torch.arange(2 * n)
    f = search.probabilities[rows, search.index, two(sources)]
    key = torch.where(search.success, search.cf_loss, f)  # compared only within flipped / unflipped
    key = torch.where(search.found, key, torch.inf)  # a side without a CE loses to one with a CE
    plus_ok, minus_ok = search.success[:n], search.success[n:]
    minus = (minus_ok & ~plus_ok) | ((minus_ok == plus_ok) & (key[n:] < key[:n]))
    chosen = torch.arange(n) + n * minus.long()
    picked = LineSearch(
        search.index[chosen], search.success[chosen], search.cf_loss[chosen], search.path[chosen],
        search.probabilities[chosen], search.lpips[chosen],
    )  # fmt: skip
    return picked, signs[chosen]


def finite_difference_ig(
    originals: torch.Tensor, path: torch.Tensor, scores: torch.Tensor, eps: float
) -> torch.Tensor:
    """Eq. 6 summed over channels: (1/m)(x − x') Σ_k (f_{k+1} − f_k) / (x̃_{k+1} − x̃_k), the
    quotient set to 0 where |x̃_{k+1} − x̃_k| ≤ eps. originals (N, C, H, W); path
    (N, m + 1, C, H, W) from x̃_0 to the baseline x̃_m = x'; scores (N, m + 1). → (N, H, W)."""
    m = path.shape[1] - 1
    if m < 1:
        return torch.zeros(len(path), *path.shape[-2:])
    step = path[:, 1:] - path[:, :-1]
    change = (scores[:, 1:] - scores[:, :-1]).reshape(*scores.shape[:1], m, 1, 1, 1)
    moved = step.abs() > eps
    quotient = torch.where(moved, change / torch.where(moved, step, torch.ones_like(step)), 0.0)
    maps = (originals - path[:, -1]) * quotient.sum(1) / m
    return maps.sum(1)


def baseline_index(f: torch.Tensor, usable: torch.Tensor, threshold: float) -> torch.Tensor:
    """BB-LIG's baseline per path (N,) from source probabilities f and finite points usable
    (N, K + 1), within the path's finite stretch from α = 0 (up to its first non-finite
    point): the first point beyond α = 0 with f ≤ ``threshold``, else the stretch's last;
    0 (no baseline) where the stretch has no point beyond α = 0."""
    stretch = usable.cumprod(1).bool()
    below = stretch & (f <= threshold)
    below[:, 0] = False
    last = (stretch.sum(1) - 1).clamp_min(0)
    return torch.where(below.any(1), below.float().argmax(1), last)


def bb_lig(
    originals: torch.Tensor, search: LineSearch, sources: torch.Tensor, params: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """BB-LIG maps (N, H, W) along each image's line-search path up to its baseline
    (:func:`baseline_index`, so through finite points only), and the baseline's grid index
    (N,). A path without a baseline (index 0) gets a zero map."""
    n, k = search.probabilities.shape[:2]
    f = search.probabilities.gather(2, sources[:, None, None].expand(n, k, 1))[..., 0]
    usable = finite_points(search.path, search.probabilities, search.lpips)
    end = baseline_index(f, usable, params["baseline_probability"])
    if (end == 0).any():
        log.warning("%d of %d images have no finite BB-LIG baseline: zero maps", (end == 0).sum(), n)
    maps = [
        finite_difference_ig(
            originals[i : i + 1],
            search.path[i : i + 1, : end[i] + 1],
            f[i : i + 1, : end[i] + 1],
            params["lig_eps"],
        )[0]
        for i in range(n)
    ]
    return torch.stack(maps), end


def bb_ig(
    blackbox: BlackBox, images: torch.Tensor, targets: torch.Tensor, steps: int, eps: float, batch: int = 32
) -> torch.Tensor:
    """BB-IG maps (N, H, W): eq. 6 on the straight path from a black image (−1) to each image,
    ``steps`` intervals, scores = black-box probability of ``targets``; ``batch`` images'
    paths at a time (a path is steps + 1 images, and the differences hold several copies)."""
    alphas = torch.linspace(0.0, 1.0, steps + 1)
    maps = []
    for chunk, chunk_targets in zip(images.split(batch), targets.split(batch), strict=True):
        baseline = -torch.ones_like(chunk)
        path = torch.stack([chunk + a * (baseline - chunk) for a in alphas], 1)  # x̃_0 = x … x̃_m = black
        n, k = path.shape[:2]
        probabilities = blackbox(path.reshape(n * k, *chunk.shape[1:])).reshape(n, k, -1)
        scores = probabilities.gather(2, chunk_targets[:, None, None].expand(n, k, 1))[..., 0]
        maps.append(finite_difference_ig(chunk, path, scores, eps))
    return torch.cat(maps) if maps else torch.zeros(0, *images.shape[2:])


# ---------------------------------------------------------------------------- explain


def latent_codes(
    codec: DiffAECodec,
    cached: dict[int, tuple[torch.Tensor, torch.Tensor]],
    images: torch.Tensor,
    sample_ids: np.ndarray,
    encode_steps: int,
    dim: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_sem (N, dim), z_T (N, C, H, W)) of images (N, C, H, W): the cached codes by sample
    id, the others encoded here (``encode_steps`` NFE each)."""
    missing = [i for i, s in enumerate(sample_ids) if int(s) not in cached]
    z_sem = torch.zeros(len(images), dim)
    z_t = torch.zeros_like(images)
    for i, s in enumerate(sample_ids):
        if int(s) in cached:
            z_sem[i], z_t[i] = cached[int(s)]
    if missing:
        rows = torch.tensor(missing)
        z_sem[rows], z_t[rows] = codec.encode(images[rows], encode_steps)
    return z_sem, z_t


@in_batches("GCD batches")
def explain(
    images: torch.Tensor,
    sample_ids: np.ndarray,
    models,
    params: dict[str, Any],
    seed: int,
) -> Explanations:
    """GCD counterfactuals of images (N, C, H, W) along this run's direction (``params.direction``),
    in batches of ``batch_size`` (each batch's whole line-search path is decoded at once).

    ``models.ddpm`` is the DiffAE; ``models.context`` holds ``directions`` (a
    :class:`Directions`), ``space`` (:class:`LatentSpace`), ``latents`` ({sample id: (z_sem,
    z_T)}, the cached codes; images without one are encoded here at ``encode_steps``),
    ``encode_steps`` and ``lpips``. Extras: alpha, cf_loss, lpips, bb_lig (N, H, W) and the
    baseline alpha of BB-LIG. An image whose search has no finite point beyond α = 0 gets no
    CE: the input itself as its counterfactual, alpha 0, NaN cf_loss and lpips, a zero BB-LIG
    map with baseline alpha 0.
    """
    params = with_defaults(params)
    images = images.cpu()  # the codec and the black box move their chunks to the models' device
    context = models.context
    codec = DiffAECodec(models.ddpm, models.scheduler_config)
    check_images(images, (models.ddpm.unet.config.in_channels, *images.shape[2:]), sample_ids)
    blackbox = BlackBox(models.classifier)
    directions: Directions = context["directions"]
    direction = directions.direction(params["direction"])
    space: LatentSpace = context["space"]
    z_sem, z_t = latent_codes(
        codec, context.get("latents", {}), images, sample_ids, context["encode_steps"], len(space.mean)
    )
    encode_nfe = context["encode_steps"]
    before = blackbox(images)
    sources = before.argmax(1)
    search, signs = transfer(
        codec, blackbox, context["lpips"], space, images, space.to_u(z_sem), z_t, direction,
        directions.source_class, sources, params,
    )  # fmt: skip
    rows = torch.arange(len(images))
    found = search.found  # else no CE: the input comes back unchanged, with no CF loss or LPIPS
    counterfactuals = torch.where(found[:, None, None, None], search.path[rows, search.index], images)
    after = torch.where(found[:, None], search.probabilities[rows, search.index], before)
    of_ce = lambda x: torch.where(found, x, torch.nan).numpy().astype(np.float32)  # noqa: E731
    maps, end = bb_lig(images, search, sources, params)
    alphas = alpha_grid(params, 1)  # in the configured units (multiples of √dim)
    sides = 2 if params["sides"] == "both" else 1
    n = len(images)
    k = len(alphas) - 1
    extras = {
        "alpha": (signs * alphas[search.index]).numpy().astype(np.float32),  # signed: the side taken
        "cf_loss": of_ce(search.cf_loss),
        "lpips": of_ce(search.lpips[rows, search.index]),
        "bb_lig": maps.numpy().astype(np.float32),
        "bb_lig_baseline_alpha": (signs * alphas[end]).numpy().astype(np.float32),
    }
    # the log of a probability is a logit up to a per-sample constant: argmax and softmax agree
    logits = lambda p: p.clamp_min(1e-12).log().numpy().astype(np.float32)  # noqa: E731
    runner_up = before.topk(2, dim=1).indices[:, 1]
    targets = torch.where(search.success, after.argmax(1), runner_up)
    return Explanations(
        counterfactuals=counterfactuals.numpy().astype(np.float32),
        sources=sources.numpy(),
        targets=targets.numpy(),
        logits_before=logits(before),
        logits_after=logits(after),
        nfe=np.full(n, encode_nfe + sides * (k + 1) * params["decode_steps"], np.int64),
        nfe_backward=np.zeros(n, np.int64),
        classifier_calls=np.full(n, sides * (k + 1) + 1, np.int64),
        classifier_gradients=np.zeros(n, np.int64),
        seconds=np.zeros(n, np.float32),
        extras=extras,
    )
