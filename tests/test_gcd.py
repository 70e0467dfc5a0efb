"""Global Counterfactual Directions: ball sampling, proxy directions, line search, BB-(L)IG.

Ground truth comes from a toy DiffAE whose semantic code is the image's mean brightness:
its ε depends on z_sem only, so DDIM decodes (z, z_T) exactly to z_T / r + z_0
(r = sqrt(ᾱ_T / ᾱ_0)) and encodes x to (mean(x), r (x − mean(x))). Moving the code by Δ
shifts every pixel by Δ; the classifier's class-1 probability rises with brightness.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from scipy import stats
from torch import nn

from diffxai.methods import gcd
from diffxai.methods.base import ExplanationError, Models
from diffxai.metrics import attribution as am
from diffxai.models.blackbox import BlackBox, GradientRefused
from diffxai.models.diffae import DiffAECodec

torch.set_num_threads(1)

SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
}
ALPHA_BAR = DDPMScheduler(**SCHEDULE).alphas_cumprod.double()
A_FIRST, A_LAST = ALPHA_BAR[0], ALPHA_BAR[-1]
RATIO = float((A_LAST / A_FIRST).sqrt())  # z_T = RATIO · (x − z_0)
SHAPE = (3, 4, 4)


class BrightnessDiffAE(nn.Module):
    """z_sem = (mean brightness, 0); ε = −z_0 / (sqrt(ᾱ_0) (σ_T − σ_0)), whatever x_t and t.

    Counts the image rows its network has seen, and the most it saw in one call."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)
        self.unet = SimpleNamespace(config=SimpleNamespace(in_channels=SHAPE[0]))
        sigma = lambda a: ((1 - a) / a).sqrt()  # noqa: E731
        self.scale = float(1 / (A_FIRST.sqrt() * (sigma(A_LAST) - sigma(A_FIRST))))
        self.rows = self.largest_call = 0

    def encode_semantic(self, images: torch.Tensor) -> torch.Tensor:
        brightness = images.mean(dim=(1, 2, 3))
        return torch.stack([brightness, torch.zeros_like(brightness)], 1)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, z_sem: torch.Tensor) -> torch.Tensor:
        self.rows += len(sample)
        self.largest_call = max(self.largest_call, len(sample))
        return (-self.scale * z_sem[:, 0])[:, None, None, None].expand_as(sample)


class BrightnessClassifier(nn.Module):
    """Logits (−10 m, 10 m) of the mean brightness m: p(class 1) = sigmoid(20 m)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled() and not x.requires_grad
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([-10 * m, 10 * m], 1)


def lpips(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Stand-in perceptual distance: mean absolute difference per sample (N,)."""
    return (a - b).abs().flatten(1).mean(1)


def p_class1(images: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(20 * images.mean(dim=(1, 2, 3)))


SPACE = gcd.LatentSpace(mean=torch.tensor([0.1, 0.0]), std=torch.tensor([0.5, 1.0]))


def toy_images(means: tuple[float, ...] = (-0.2, 0.3)) -> torch.Tensor:
    """Textured images (N, C, H, W) of the given mean brightness (default: dark, class 0; bright, class 1)."""
    texture = 0.1 * torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(2, 2)
    return torch.tensor(means)[:, None, None, None] + texture.expand(SHAPE)


def exact_latents(
    images: torch.Tensor, offsets: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_sem, z_T) the toy DiffAE's codec encodes images to, in closed form; ``offsets`` (N,)
    added to z_0 make the reconstruction brighter by that much (an imperfect autoencoder)."""
    z = BrightnessDiffAE().encode_semantic(images)
    z_t = RATIO * (images - z[:, 0, None, None, None])
    if offsets is not None:
        z[:, 0] += offsets
    return z, z_t


ROOT_DIM = math.sqrt(len(SPACE.std))  # step sizes are in units of sqrt(latent_dim)


def transfer_params(**overrides) -> dict:
    """A grid of 8 steps up to α = 2 in u-space."""
    params = {"alpha_max": 2.0 / ROOT_DIM, "alpha_steps": 8, "decode_steps": 3, "lam": 0.5, **overrides}
    return gcd.with_defaults(params)


def brute_force(
    images: torch.Tensor,
    offsets: torch.Tensor,
    direction: torch.Tensor,
    sources: torch.Tensor,
    params: dict,
    signs: torch.Tensor | None = None,
) -> dict:
    """The line search recomputed point by point from the closed-form path; ``signs`` (N,)
    orient the direction per image (default +1)."""
    signs = torch.ones(len(images)) if signs is None else signs
    alphas = torch.linspace(0, params["alpha_max"] * ROOT_DIM, params["alpha_steps"] + 1)
    shift = offsets[:, None] + signs[:, None] * alphas * float(direction[0] * SPACE.std[0])  # (N, K+1): Δz_0
    path = (images[:, None] + shift[:, :, None, None, None]).clamp(-1, 1)  # (N, K + 1, C, H, W)
    index, success = [], []
    for n in range(len(images)):
        p1 = p_class1(path[n])
        f = p1 if sources[n] == 1 else 1 - p1
        loss = f + params["lam"] * lpips(images[n].expand_as(path[n]), path[n])
        flipped = [k for k in range(1, len(alphas)) if (p1[k] > 0.5) != bool(sources[n])]
        pool = flipped or list(range(1, len(alphas)))
        score = loss if flipped else f
        index.append(min(pool, key=lambda k: float(score[k])))
        success.append(bool(flipped))
    index_t, success_t = torch.tensor(index), torch.tensor(success)
    return {"path": path, "index": index_t, "success": success_t, "alphas": alphas / ROOT_DIM}


# --- sampling and parameters ------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [3, 16])
def test_sample_ball_is_uniform_in_the_ball(dim):
    """Norms ≤ r, (‖δ‖ / r)^dim ~ Uniform(0, 1) (KS test), isotropic directions."""
    radius, n = 2.5, 4000
    points = gcd.sample_ball(n, dim, radius, torch.Generator().manual_seed(dim))
    assert points.shape == (n, dim) and points.dtype == torch.float32
    norms = points.double().norm(dim=1)
    assert norms.max() <= radius * (1 + 1e-6)
    assert stats.kstest((norms / radius).pow(dim).numpy(), "uniform").pvalue > 0.01
    mean_direction = (points.double() / norms[:, None]).mean(0)
    assert mean_direction.abs().max() < 5 / (dim * n) ** 0.5  # 5 standard errors per coordinate
    again = gcd.sample_ball(n, dim, radius, torch.Generator().manual_seed(dim))
    assert torch.equal(again, points)


def test_with_defaults_refuses_unknown_parameters_and_fills_the_rest():
    params = gcd.with_defaults({"radius": 3.0})
    assert params["radius"] == 3.0 and set(params) == set(gcd.PARAMS)
    with pytest.raises(ExplanationError, match="radius_max"):
        gcd.with_defaults({"radius_max": 3.0})


def test_alpha_grid_runs_from_zero_to_alpha_max_in_alpha_steps():
    grid = gcd.alpha_grid({"alpha_max": 6.0, "alpha_steps": 4}, 1)
    torch.testing.assert_close(grid, torch.tensor([0.0, 1.5, 3.0, 4.5, 6.0]))
    in_u_space = gcd.alpha_grid({"alpha_max": 6.0, "alpha_steps": 4}, 16)  # × sqrt(16)
    torch.testing.assert_close(in_u_space, 4 * grid)


def directions(h: torch.Tensor) -> gcd.Directions:
    dim = h.shape[1]
    return gcd.Directions(
        source_id=7, source_class=0, u0=torch.zeros(dim), g=torch.eye(dim)[0], h=h,
        eigenvalues=torch.ones(len(h)), gradient_norm=1.0, proxy_u=torch.zeros(1, dim),
        proxy_f=torch.zeros(1), proxy_s=torch.zeros(1), fit=None, nfe=0, queries=0,
    )  # fmt: skip


def test_direction_names_g_and_h1_to_hk_only():
    h = torch.eye(4)[1:]  # k = 3
    found = directions(h)
    assert torch.equal(found.direction("g"), torch.eye(4)[0])
    for i in range(1, 4):
        assert torch.equal(found.direction(f"h{i}"), h[i - 1])
    for bad in ["h0", "h4", "x", "h", "g1", "h-1"]:
        with pytest.raises(ExplanationError, match=r"h1\.\.h3"):
            found.direction(bad)


# --- the proxy and its directions -------------------------------------------------------------------

DIM = 8
PROXY = {"proxy_hidden": 64, "proxy_patience": 60, "proxy_batch": 128, "proxy_lr": 0.003}


def ball_around(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the proxy's initial weights
    u0 = torch.randn(DIM, generator=g)
    return u0, u0 + gcd.sample_ball(512, DIM, 2.0, g), g


def test_g_direction_recovers_the_negative_gradient_of_the_true_cf_loss():
    """f = sigmoid(w·(u − u0)), s = 0.1 ‖u − u0‖² (stationary at u0): g ≈ −w, ‖∇‖ ≈ |f'(0)| = 1/4."""
    u0, u, g = ball_around(0)
    w = torch.randn(DIM, generator=g)
    w /= w.norm()
    d = u - u0
    targets = torch.stack([torch.sigmoid(d @ w), 0.1 * d.pow(2).sum(1)], 1)
    fit = gcd.fit_proxy(
        u, targets, gcd.with_defaults({**PROXY, "proxy_epochs": 150, "proxy_patience": 30}), g
    )
    found = gcd.directions_at(fit.proxy, u0, 1.0, DIM)
    assert float(found["g"] @ -w) > 0.9
    assert abs(float(found["gradient_norm"]) - 0.25) < 0.05
    assert abs(float(found["g"].norm()) - 1) < 1e-5
    h = found["h"]
    torch.testing.assert_close(h @ h.T, torch.eye(DIM), rtol=0, atol=1e-5)
    assert (h @ found["g"] >= -1e-6).all()  # every h is downhill: h·∇ ≤ 0
    assert (found["eigenvalues"].abs().diff() <= 0).all()
    assert next(fit.proxy.parameters()).dtype == torch.float32  # restored after the float64 Hessian


def test_first_h_direction_recovers_the_dominant_curvature_axis_signed_downhill():
    """f = 0.5 + 0.2 d_0 + 0.3 dᵀ diag(2, 0.2, 0, …) d, s = 0, λ = 0: h1 = −e_0 (largest |eigenvalue|,
    1.2; signed against ∇ = 0.2 e_0)."""
    u0, u, g = ball_around(1)
    d = u - u0
    curvature = torch.zeros(DIM)
    curvature[:2] = torch.tensor([2.0, 0.2])
    f = 0.5 + 0.2 * d[:, 0] + 0.3 * (d.pow(2) * curvature).sum(1)
    targets = torch.stack([f, torch.zeros_like(f)], 1)
    fit = gcd.fit_proxy(u, targets, gcd.with_defaults({**PROXY, "proxy_epochs": 200}), g)
    found = gcd.directions_at(fit.proxy, u0, 0.0, 3)
    h = found["h"]
    assert h.shape == (3, DIM)
    assert float(h[0, 0]) < -0.9
    assert 0.6 < float(found["eigenvalues"][0]) < 1.8  # true 1.2
    torch.testing.assert_close(h @ h.T, torch.eye(3), rtol=0, atol=1e-5)
    assert float(found["g"][0]) < -0.9  # and g = −∇/‖∇‖ ≈ −e_0


def test_fit_proxy_returns_the_best_validation_epoch_and_stops_patience_epochs_later():
    """Noise targets: the proxy overfits, validation stops improving. The returned weights give
    the reported losses on the same split; the generator shows exactly best + patience epochs ran;
    the first epoch alone is no better."""
    n, patience = 200, 5
    data = torch.Generator().manual_seed(3)
    u = torch.randn(n, 4, generator=data)
    targets = torch.randn(n, 2, generator=data)
    params = gcd.with_defaults({"proxy_hidden": 64, "proxy_epochs": 400, "proxy_patience": patience,
                                "proxy_batch": 32, "proxy_lr": 0.01})  # fmt: skip
    g = torch.Generator().manual_seed(4)
    start = g.get_state()
    fit = gcd.fit_proxy(u, targets, params, g)
    assert 1 <= fit.epochs < 400 - patience

    replay = torch.Generator().set_state(start)
    order = torch.randperm(n, generator=replay)
    val, train = order[:40], order[40:]
    torch.randint(0, 2**62, (1,), generator=replay)  # the seed of the initial weights
    for _ in range(fit.epochs + patience):
        torch.randperm(len(train), generator=replay)
    assert torch.equal(replay.get_state(), g.get_state())

    def loss(rows: torch.Tensor) -> float:
        return float((((fit.proxy(u[rows]) - targets[rows]) / fit.proxy.target_std) ** 2).mean())

    assert loss(val) == pytest.approx(fit.val_loss, rel=1e-5)
    assert loss(train) == pytest.approx(fit.train_loss, rel=1e-5)
    torch.testing.assert_close(fit.proxy.target_mean, targets[train].mean(0))
    first = gcd.fit_proxy(u, targets, {**params, "proxy_epochs": 1}, torch.Generator().set_state(start))
    assert first.epochs == 1 and first.val_loss >= fit.val_loss


def test_fit_proxy_depends_on_its_generator_only_not_on_torchs_global_state():
    u, targets = torch.randn(64, 4), torch.randn(64, 2)
    params = gcd.with_defaults({"proxy_hidden": 16, "proxy_epochs": 3})
    fits = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        fits.append(gcd.fit_proxy(u, targets, params, torch.Generator().manual_seed(7)).proxy.state_dict())
        after = torch.rand(1)
        torch.manual_seed(global_seed)
        assert torch.equal(after, torch.rand(1))  # and the global state is left as it was
    for name, value in fits[0].items():
        assert torch.equal(value, fits[1][name]), name


def test_fit_proxy_refuses_a_split_without_training_rows_and_targets_it_cannot_fit():
    """val_fraction 0.9 of 4 samples leaves none to train on (the targets' mean and std would be
    NaN); a NaN target makes every validation loss NaN, so no epoch improves and the initial
    weights would come back as the fit."""
    u, targets = torch.randn(4, 3), torch.randn(4, 2)
    params = gcd.with_defaults({"proxy_hidden": 8, "proxy_epochs": 3, "val_fraction": 0.9})
    with pytest.raises(ExplanationError, match="leave 0 for training and 4 for validation"):
        gcd.fit_proxy(u, targets, params, torch.Generator().manual_seed(0))
    u, targets = torch.randn(20, 3), torch.randn(20, 2)
    targets[3, 0] = float("nan")
    with pytest.raises(ExplanationError, match="validation loss was never finite"):
        gcd.fit_proxy(u, targets, {**params, "val_fraction": 0.2}, torch.Generator().manual_seed(0))


def test_a_proxy_with_a_non_finite_gradient_gives_no_directions():
    proxy = gcd.ProxyMLP(3, 4)
    with torch.no_grad():
        proxy.net[0].weight[0, 0] = float("nan")
    with pytest.raises(ExplanationError, match="non-finite gradient"):
        gcd.directions_at(proxy, torch.zeros(3), 0.5, 2)


# --- finite-difference integrated gradients ---------------------------------------------------------


def test_finite_difference_ig_on_a_straight_path_telescopes_to_the_score_change():
    """x̃_k = x + (k/m)(x' − x): each moved channel contributes f_0 − f_m; unmoved pixels give 0."""
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 4, 5, generator=g, dtype=torch.float64)
    baseline = x + 0.5
    baseline[0, :, 0, 0] = x[0, :, 0, 0]  # pixel (0, 0) of image 0 never moves
    baseline[1, :2, 1, 1] = x[1, :2, 1, 1]  # pixel (1, 1) of image 1 moves in one channel only
    m = 6
    t = torch.linspace(0, 1, m + 1, dtype=torch.float64)[None, :, None, None, None]
    path = x[:, None] + t * (baseline - x)[:, None]
    scores = torch.rand(2, m + 1, generator=g, dtype=torch.float64)
    maps = gcd.finite_difference_ig(x, path, scores, 1e-3)
    assert maps.shape == (2, 4, 5)
    moved = torch.full((2, 4, 5), 3.0, dtype=torch.float64)
    moved[0, 0, 0], moved[1, 1, 1] = 0.0, 1.0
    expected = moved * (scores[:, 0] - scores[:, -1])[:, None, None]
    torch.testing.assert_close(maps, expected, rtol=1e-10, atol=1e-12)
    assert maps[0, 0, 0] == 0.0


def test_finite_difference_ig_by_hand_with_a_step_below_eps():
    """One pixel, m = 2: (x − x') Σ Δf/Δx / m, the quotient of a step |Δx| ≤ eps set to 0."""
    scores = torch.tensor([[1.0, 0.4, 0.2]], dtype=torch.float64)
    x = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    path = torch.tensor([0.0, 0.5, 0.6], dtype=torch.float64).view(1, 3, 1, 1, 1)
    # (0 − 0.6) (−0.6 / 0.5 − 0.2 / 0.1) / 2 = 0.96
    assert float(gcd.finite_difference_ig(x, path, scores, 1e-3)) == pytest.approx(0.96, rel=1e-12)
    path[0, 2] = 0.5005
    # the last step (5e-4) is below eps: (0 − 0.5005) (−1.2) / 2 = 0.3003
    assert float(gcd.finite_difference_ig(x, path, scores, 1e-3)) == pytest.approx(0.3003, rel=1e-12)
    assert torch.equal(gcd.finite_difference_ig(x, path[:, :1], scores[:, :1], 1e-3), torch.zeros(1, 1, 1))


class TinyConvClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(64, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled() and not x.requires_grad
        return self.net(x)


def test_bb_ig_is_the_probability_drop_to_black_times_the_moved_channels():
    g = torch.Generator().manual_seed(7)
    images = torch.rand(2, 3, 4, 4, generator=g) * 1.5 - 0.5  # ≥ −0.5: every channel moves
    images[0, :, 0, 0] = -1.0  # already black
    images[1, 0, 2, 3] = -1.0  # black in one channel
    images[1, 1:, 3, 0] = -1.0  # black in two channels
    targets = torch.tensor([2, 0])
    classifier = TinyConvClassifier()
    blackbox = BlackBox(classifier)
    steps = 8
    maps = gcd.bb_ig(blackbox, images, targets, steps, 1e-3)
    assert blackbox.queries == 2 * (steps + 1)
    with torch.no_grad():
        probabilities = torch.softmax(classifier(torch.cat([images, -torch.ones_like(images)])), 1)
    target_p = probabilities.gather(1, targets.repeat(2)[:, None])[:, 0]
    drop = target_p[:2] - target_p[2:]  # f(x) − f(black)
    channels = (images != -1).sum(1).float()
    assert channels[0, 0, 0] == 0 and channels[1, 2, 3] == 2 and channels[1, 3, 0] == 1
    torch.testing.assert_close(maps, channels * drop[:, None, None], rtol=1e-4, atol=1e-5)
    assert maps[0, 0, 0] == 0.0
    torch.testing.assert_close(gcd.bb_ig(blackbox, images, targets, steps, 1e-3, batch=1), maps)
    with pytest.raises(GradientRefused):
        gcd.bb_ig(blackbox, images.clone().requires_grad_(True), targets, steps, 1e-3)


def search_of(path: torch.Tensor, f_source: torch.Tensor) -> gcd.LineSearch:
    """A LineSearch over ``path`` (N, K + 1, C, H, W) with source (class 0) probabilities (N, K + 1)."""
    probabilities = torch.stack([f_source, 1 - f_source], 2)
    n = len(path)
    zeros = torch.zeros(n, dtype=torch.long)
    return gcd.LineSearch(zeros, zeros.bool(), zeros.float(), path, probabilities, torch.zeros_like(f_source))


def test_bb_lig_integrates_up_to_the_first_point_at_or_below_the_baseline_probability():
    """Baseline: first k ≥ 1 with f ≤ 0.05 (not k = 0), else the last point. On a straight path
    the map is (moved channels) × (f_0 − f_baseline); pixels that never change get 0."""
    x = torch.full((3, 2, 2, 2), -0.5)
    step = torch.ones(2, 2, 2)
    step[:, 0, 0] = 0.0  # pixel (0, 0) never changes
    step[1, 1, 1] = 0.0  # pixel (1, 1) changes in channel 0 only
    k = torch.arange(5.0)[None, :, None, None, None]
    path = x[:, None] + 0.1 * k * step  # (3, 5, 2, 2, 2)
    f = torch.tensor([
        [0.9, 0.5, 0.04, 0.01, 0.0],  # first below at k = 2
        [0.9, 0.5, 0.3, 0.2, 0.1],  # never below: the end
        [0.01, 0.6, 0.3, 0.05, 0.0],  # k = 0 does not count; 0.05 is "at most"
    ])  # fmt: skip
    params = {"baseline_probability": 0.05, "lig_eps": 1e-3}
    maps, end = gcd.bb_lig(x, search_of(path, f), torch.zeros(3, dtype=torch.long), params)
    assert end.tolist() == [2, 4, 3]
    channels = step.sum(0)
    expected = torch.stack([channels * (f[i, 0] - f[i, end[i]]) for i in range(3)])
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-6)
    assert (maps[:, 0, 0] == 0).all()


def test_bb_lig_baseline_is_never_a_diverged_point_and_a_path_without_one_gets_a_zero_map():
    """NaN points (a diverged decode) end a path's finite stretch. Row 0 never reaches 0.05 and
    diverges from k = 3: baseline k = 2, not the NaN end; row 1 reaches 0.05 only past a NaN point
    at k = 2: baseline k = 1; row 2 diverges at every k ≥ 1 and row 3's reconstruction diverged:
    no baseline (0), zero maps. The attribution metrics then take every map."""
    x = torch.full((4, 2, 2, 2), -0.5)
    path = x[:, None] + 0.1 * torch.arange(5.0)[None, :, None, None, None] * torch.ones(2, 2, 2)
    f = torch.tensor([
        [0.9, 0.5, 0.3, 0.2, 0.1],
        [0.9, 0.5, 0.3, 0.01, 0.0],
        [0.9, 0.5, 0.3, 0.01, 0.0],
        [0.9, 0.5, 0.3, 0.01, 0.0],
    ])  # fmt: skip
    diverged = torch.zeros(4, 5, dtype=torch.bool)
    diverged[0, 3:], diverged[1, 2], diverged[2, 1:], diverged[3, 0] = True, True, True, True
    path[diverged], f[diverged] = float("nan"), float("nan")
    params = {"baseline_probability": 0.05, "lig_eps": 1e-3}
    maps, end = gcd.bb_lig(x, search_of(path, f), torch.zeros(4, dtype=torch.long), params)
    assert end.tolist() == [2, 1, 0, 0]
    expected = torch.stack([torch.full((2, 2), 2 * float(f[i, 0] - f[i, e])) for i, e in [(0, 2), (1, 1)]])
    torch.testing.assert_close(maps[:2], expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(maps[2:], torch.zeros(2, 2, 2))
    region = torch.zeros(4, 2, 2, dtype=torch.bool)
    region[:, 0] = True
    assert (
        np.isfinite(am.mask_auroc(maps, region)).all() and np.isfinite(am.pointing_game(maps, region)).all()
    )


# --- line search, explain and discovery on the brightness toy ---------------------------------------


def test_line_search_picks_the_flipped_point_of_least_cf_loss_else_the_least_probability():
    """Along +e_0 (brighter): image 0 (dark) flips and its least CF loss is inside the path;
    image 1 (bright) never flips: the least source probability beyond α = 0; image 2's
    reconstruction (α = 0) is already of the other class but is no CE; image 3 (very dark,
    darker reconstruction) never flips and its least f (far) is not its least CF loss (near)."""
    images = toy_images((-0.2, 0.3, 0.03, -0.8))
    offsets = torch.tensor([0.0, 0.0, -0.1, -0.3])
    sources = torch.tensor([0, 1, 1, 0])
    params = transfer_params()
    codec = DiffAECodec(BrightnessDiffAE(), SCHEDULE)
    blackbox = BlackBox(BrightnessClassifier())
    z, z_t = exact_latents(images, offsets)
    direction = torch.tensor([1.0, 0.0])
    search = gcd.line_search(
        codec, blackbox, lpips, SPACE, images, SPACE.to_u(z), z_t, direction, sources, params
    )
    expected = brute_force(images, offsets, direction, sources, params)
    torch.testing.assert_close(search.path, expected["path"], rtol=0, atol=1e-5)
    assert search.index.tolist() == expected["index"].tolist()
    assert search.success.tolist() == expected["success"].tolist() == [True, False, False, False]
    assert 1 < int(search.index[0]) < params["alpha_steps"]  # an interior optimum, not the first flip
    assert int(search.index[1]) == 1 and int(search.index[2]) == 1  # never α = 0
    assert int(search.index[3]) == params["alpha_steps"]
    assert int(search.probabilities[2, 0].argmax()) != 1  # the reconstruction is flipped
    rows = torch.arange(4)
    f = search.probabilities[rows, search.index, sources]
    torch.testing.assert_close(search.cf_loss, f + 0.5 * search.lpips[rows, search.index])
    loss_3 = search.probabilities[3, 1:, 0] + 0.5 * search.lpips[3, 1:]
    assert int(loss_3.argmin()) + 1 < params["alpha_steps"]  # the least CF loss is elsewhere
    assert codec.nfe == 4 * (params["alpha_steps"] + 1) * params["decode_steps"]
    assert blackbox.queries == 4 * (params["alpha_steps"] + 1)


class DivergingCodec(DiffAECodec):
    """The toy codec, but codes darker than ``limit`` decode to NaN (a DiffAE pushed too far)."""

    limit = -0.1

    def decode(self, z_sem: torch.Tensor, z_t: torch.Tensor, steps: int) -> torch.Tensor:
        images = super().decode(z_sem, z_t, steps)
        images[z_sem[:, 0] < self.limit] = float("nan")
        return images


def test_line_search_never_takes_a_point_that_decoded_to_nan(monkeypatch):
    """A bright image darkened along −e_0 flips from brightness < 0; beyond −0.1 its decodes
    are NaN, whose probabilities argmax would count as flipped and whose loss argmin would pick.
    The CE is the least-loss flipped point among the finite ones; BB-LIG's path stops before
    the NaN points (it never reaches p ≤ 0.05); explain (the same one-sided search) reports it."""
    images, sources = toy_images((0.3,)), torch.tensor([1])
    z, z_t = exact_latents(images)
    direction, params = torch.tensor([-1.0, 0.0]), transfer_params()
    blackbox = BlackBox(BrightnessClassifier())
    searches = [
        gcd.line_search(codec, blackbox, lpips, SPACE, images, SPACE.to_u(z), z_t, direction, sources, params)
        for codec in (DiffAECodec(BrightnessDiffAE(), SCHEDULE), DivergingCodec(BrightnessDiffAE(), SCHEDULE))
    ]
    clean, diverged = searches
    finite = clean.path[0].mean(dim=(1, 2, 3)) >= DivergingCodec.limit
    assert not finite.all() and diverged.path[0, ~finite].isnan().all()
    loss = clean.probabilities[0, :, 1] + params["lam"] * clean.lpips[0]
    flipped = clean.probabilities[0].argmax(1) != 1
    expected = int(torch.where(flipped & finite, loss, torch.inf).argmin())
    assert int(clean.index[0]) != expected  # the clean search goes further
    assert int(diverged.index[0]) == expected and bool(diverged.success[0])
    assert diverged.path[0, expected].isfinite().all() and diverged.cf_loss.isfinite().all()
    maps, end = gcd.bb_lig(images, diverged, sources, params)
    assert maps.isfinite().all() and finite[: int(end[0]) + 1].all() and int(end[0]) >= expected
    monkeypatch.setattr(gcd, "DiffAECodec", DivergingCodec)
    context = {"directions": directions(torch.eye(2)[1:]), "space": SPACE, "encode_steps": 4,
               "latents": {0: (z[0], z_t[0])}, "lpips": lpips}  # fmt: skip
    models = Models(BrightnessClassifier(), BrightnessDiffAE(), SCHEDULE, context=context)
    result = gcd.explain(images, np.array([0]), models, transfer_params(sides="oriented"), seed=0)
    assert result.success.tolist() == [True] and result.targets.tolist() == [0]
    np.testing.assert_allclose(result.counterfactuals[0], diverged.path[0, expected].numpy(), atol=1e-6)
    np.testing.assert_allclose(result.extras["bb_lig"], maps.numpy(), atol=1e-6)


def test_an_image_without_a_finite_point_beyond_alpha_0_gets_no_ce(monkeypatch):
    """Image 0 (class 1, mean 0.03) reconstructs darker, as class 0 (an imperfect autoencoder);
    darkened (−e_0), every decode beyond α = 0 diverges; brightened it stays class 1. That side
    with no CE must not win on its reconstruction's low f, nor count as a flip. Image 1 (0.3)
    flips when darkened, before its decodes diverge. One-sided, image 0 searches −e_0 only:
    no CE at all, the input comes back unchanged and unflipped, with a zero BB-LIG map."""
    images = toy_images((0.03, 0.3))
    z, z_t = exact_latents(images, torch.tensor([-0.1, 0.0]))
    monkeypatch.setattr(gcd, "DiffAECodec", DivergingCodec)
    context = {"directions": directions(torch.eye(2)[1:]), "space": SPACE, "encode_steps": 4,
               "latents": {0: (z[0], z_t[0]), 1: (z[1], z_t[1])}, "lpips": lpips}  # fmt: skip
    models = Models(BrightnessClassifier(), BrightnessDiffAE(), SCHEDULE, context=context)
    darkened = gcd.line_search(
        DivergingCodec(BrightnessDiffAE(), SCHEDULE), BlackBox(BrightnessClassifier()), lpips, SPACE,
        images[:1], SPACE.to_u(z[:1]), z_t[:1], -torch.eye(2)[0], torch.tensor([1]), transfer_params(),
    )  # fmt: skip
    assert darkened.path[0, 1:].isnan().all() and int(darkened.probabilities[0, 0].argmax()) == 0
    assert darkened.index.tolist() == [0] and darkened.success.tolist() == [False]

    both = gcd.explain(images, np.array([0, 1]), models, transfer_params(), seed=0)
    assert both.sources.tolist() == [1, 1] and both.success.tolist() == [False, True]
    assert both.extras["alpha"][0] > 0 > both.extras["alpha"][1]  # image 0: the brightened side
    assert np.isfinite(both.counterfactuals).all() and np.isfinite(both.extras["bb_lig"]).all()

    one_side = gcd.explain(images[:1], np.array([0]), models, transfer_params(sides="oriented"), seed=0)
    assert one_side.success.tolist() == [False] and one_side.targets.tolist() == [0]
    np.testing.assert_array_equal(one_side.counterfactuals, images[:1].numpy())
    np.testing.assert_allclose(one_side.logits_after, one_side.logits_before)
    extras = one_side.extras
    assert extras["alpha"].tolist() == extras["bb_lig_baseline_alpha"].tolist() == [0.0]
    assert np.isnan(extras["cf_loss"]).all() and np.isnan(extras["lpips"]).all()
    assert (extras["bb_lig"] == 0).all()


def test_two_sided_transfer_keeps_the_side_that_flips_with_the_least_cf_loss():
    """Along ±e_0: dark images (class 0) flip only when brightened (+), bright ones (class 1)
    only when darkened (−); both sides cost a search each; the one-sided ``oriented``
    search reaches the same CEs here for half the evaluations."""
    images = toy_images((-0.2, 0.3, -0.4, 0.5))
    sources = torch.tensor([0, 1, 0, 1])
    z, z_t = exact_latents(images)
    direction = torch.tensor([1.0, 0.0])
    blackbox = BlackBox(BrightnessClassifier())
    codec = DiffAECodec(BrightnessDiffAE(), SCHEDULE)
    args = (codec, blackbox, lpips, SPACE, images, SPACE.to_u(z), z_t, direction, 0, sources)
    both, signs = gcd.transfer(*args, transfer_params(sides="both"))
    assert signs.tolist() == [1.0, -1.0, 1.0, -1.0] and both.success.all()
    plus = brute_force(images, torch.zeros(4), direction, sources, transfer_params())
    minus = brute_force(images, torch.zeros(4), -direction, sources, transfer_params())
    side = [plus, minus, plus, minus]
    assert both.index.tolist() == [int(side[i]["index"][i]) for i in range(4)]
    expected = torch.stack([side[i]["path"][i, side[i]["index"][i]] for i in range(4)])
    chosen = both.path[torch.arange(4), both.index]
    torch.testing.assert_close(chosen, expected, rtol=0, atol=1e-5)
    points = transfer_params()["alpha_steps"] + 1
    assert codec.nfe == 2 * 4 * points * 3 and blackbox.queries == 2 * 4 * points
    one_side, one_signs = gcd.transfer(*args, transfer_params(sides="oriented"))
    assert torch.equal(one_signs, signs) and torch.equal(one_side.index, both.index)
    assert codec.nfe == 3 * 4 * points * 3
    with pytest.raises(ExplanationError, match="sides"):
        gcd.transfer(*args, {**transfer_params(), "sides": "left"})


def test_where_both_sides_flip_the_lower_cf_loss_wins_and_where_neither_does_the_lower_f(monkeypatch):
    """Rows 0..2 are the +d searches of three images, rows 3..5 their −d searches."""
    success = torch.tensor([True, True, False, True, True, False])
    cf_loss = torch.tensor([0.5, 0.1, 0.9, 0.2, 0.3, 0.8])
    probabilities = torch.zeros(6, 2, 2)
    probabilities[:, 1, 0] = torch.tensor([0.3, 0.3, 0.7, 0.3, 0.3, 0.4])  # source class 0 at index 1
    search = gcd.LineSearch(torch.ones(6, dtype=torch.long), success, cf_loss, torch.arange(6.0).view(6, 1),
                            probabilities, torch.zeros(6, 2))  # fmt: skip
    monkeypatch.setattr(gcd, "line_search", lambda *args: search)
    images, u = torch.zeros(3, 1, 2, 2), torch.zeros(3, 2)
    args = (
        None,
        None,
        None,
        SPACE,
        images,
        u,
        u,
        torch.tensor([1.0, 0.0]),
        0,
        torch.zeros(3, dtype=torch.long),
    )
    picked, signs = gcd.transfer(*args, transfer_params(sides="both"))
    assert signs.tolist() == [-1.0, 1.0, -1.0]  # 0.2 < 0.5; 0.1 < 0.3; neither flips: f 0.4 < 0.7
    assert picked.path[:, 0].tolist() == [3.0, 1.0, 5.0]
    assert picked.cf_loss.tolist() == pytest.approx([0.2, 0.1, 0.8])


def test_explain_returns_the_line_search_counterfactual_and_counts_its_cost():
    """Image 10 has cached latents, image 11 is encoded in explain (encode_steps NFE)."""
    images = toy_images()
    params = transfer_params(direction="h2", sides="oriented")
    h = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # h2 = +e_0
    z, z_t = exact_latents(images)
    model = BrightnessDiffAE()
    context = {"directions": directions(h), "space": SPACE, "latents": {10: (z[0], z_t[0])},
               "encode_steps": 4, "lpips": lpips}  # fmt: skip
    models = Models(BrightnessClassifier(), model, SCHEDULE, context=context)
    result = gcd.explain(images, np.array([10, 11]), models, params, seed=0)

    points = params["alpha_steps"] + 1
    assert model.rows == 4 * 1 + points * params["decode_steps"] * 2
    # image 11 is not of the source image's class (0): it moves along −h2
    expected = brute_force(
        images, torch.zeros(2), h[1], torch.tensor([0, 1]), params, torch.tensor([1.0, -1.0])
    )
    index = expected["index"]
    counterfactuals = expected["path"][torch.arange(2), index]
    np.testing.assert_allclose(result.counterfactuals, counterfactuals.numpy(), atol=1e-5)
    assert result.sources.tolist() == [0, 1]
    assert result.targets.tolist() == [1, 0]  # both flipped: their new classes
    assert result.success.tolist() == expected["success"].tolist() == [True, True]
    p1 = p_class1(counterfactuals)
    np.testing.assert_allclose(np.exp(result.logits_after), torch.stack([1 - p1, p1], 1).numpy(), rtol=1e-4)
    side = np.array([1.0, -1.0])  # the alphas are signed by the side taken
    np.testing.assert_allclose(result.extras["alpha"], side * expected["alphas"][index].numpy(), rtol=1e-6)
    assert result.nfe.tolist() == [4 + points * 3] * 2
    assert result.classifier_calls.tolist() == [points + 1] * 2
    assert result.nfe_backward.tolist() == [0, 0] and result.classifier_gradients.tolist() == [0, 0]
    # image 0 reaches p(class 0) ≤ 0.05 at α_3 on a straight, unclipped path: 3 channels × (f_0 − f_3);
    # image 1's baseline is its first grid point with p(class 1) ≤ 0.05
    p1_path = p_class1(expected["path"][1])
    first = next(k for k in range(1, len(p1_path)) if p1_path[k] <= 0.05)
    np.testing.assert_allclose(
        result.extras["bb_lig_baseline_alpha"],
        [0.75 / ROOT_DIM, -float(expected["alphas"][first])],
        rtol=1e-6,
    )
    f_0 = 1 - p_class1(expected["path"][0, [0, 3]])
    np.testing.assert_allclose(
        result.extras["bb_lig"][0], np.full((4, 4), 3 * float(f_0[0] - f_0[1])), rtol=1e-4
    )
    assert result.extras["bb_lig"].shape == (2, 4, 4)
    with pytest.raises(ExplanationError, match=r"h1\.\.h2"):
        gcd.explain(images, np.array([10, 11]), models, transfer_params(direction="h3"), seed=0)


def test_explain_in_batches_bounds_each_decode_and_changes_no_result():
    """batch_size caps the rows of every network call (sides × images × grid points), so a large
    shard does not build its whole line-search path at once; the CEs are those of one batch."""
    images = toy_images((-0.4, -0.2, 0.1, 0.3, 0.5))
    z, z_t = exact_latents(images)
    context = {"directions": directions(torch.eye(2)[1:]), "space": SPACE, "encode_steps": 4,
               "latents": {i: (z[i], z_t[i]) for i in range(5)}, "lpips": lpips}  # fmt: skip
    params = transfer_params()
    points = params["alpha_steps"] + 1
    results = {}
    for batch_size in (None, 2):
        model = BrightnessDiffAE()
        models = Models(BrightnessClassifier(), model, SCHEDULE, context=context)
        results[batch_size] = gcd.explain(images, np.arange(5), models, params, seed=0, batch_size=batch_size)
        assert model.largest_call == 2 * (5 if batch_size is None else 2) * points
    whole, batched = results[None], results[2]
    np.testing.assert_allclose(batched.counterfactuals, whole.counterfactuals, atol=1e-6)
    for name in ("alpha", "bb_lig", "bb_lig_baseline_alpha"):
        np.testing.assert_allclose(batched.extras[name], whole.extras[name], atol=1e-6)
    np.testing.assert_array_equal(batched.nfe, whole.nfe)


DISCOVERY = {"proxy_samples": 128, "decode_steps": 2, "radius": 1.0, "lam": 0.1, "h_directions": 2,
             "score": "probability", "proxy_hidden": 32, "proxy_epochs": 150, "proxy_patience": 60,
             "proxy_batch": 16}  # fmt: skip


def test_discover_finds_the_brightening_direction_and_counts_decode_nfe_only():
    """Source: dark (class 0). Only z_0 changes the image, brightening lowers f, so g ≈ +e_0.
    The source's encoding is the caller's: discover costs proxy_samples × decode_steps NFE."""
    source = toy_images()[:1] + 0.1  # mean −0.1: p(class 0) = sigmoid(2)
    params = DISCOVERY
    codec = DiffAECodec(BrightnessDiffAE(), SCHEDULE, batch=50)
    blackbox = BlackBox(BrightnessClassifier())
    _, z_t = codec.encode(source, 5)
    assert codec.nfe == 5
    torch.manual_seed(8)
    found = gcd.discover(
        codec, blackbox, lpips, SPACE, source, 42, z_t, params, torch.Generator().manual_seed(9)
    )
    assert codec.nfe == gcd.discovery_nfe(params, 5) == 5 + 128 * 2
    assert found.nfe == 128 * 2 and found.queries == 128 + 1
    assert found.source_id == 42 and found.source_class == 0
    torch.testing.assert_close(found.u0, SPACE.to_u(torch.tensor([-0.1, 0.0])), atol=1e-6, rtol=0)
    assert found.proxy_u.shape == (128, 2) and found.h.shape == (2, 2)
    spread = (found.proxy_u - found.u0).norm(dim=1)
    assert 1.2 < spread.max() <= ROOT_DIM + 1e-5  # radius 1 × sqrt(dim), not 1: P(all 128 ≤ 1.2) = 0.72^128
    shift = (found.proxy_u[:, 0] - found.u0[0]) * SPACE.std[0]
    decoded = (source + shift[:, None, None, None]).clamp(-1, 1)
    torch.testing.assert_close(found.proxy_f, 1 - p_class1(decoded), atol=1e-4, rtol=0)
    torch.testing.assert_close(found.proxy_s, lpips(source.expand_as(decoded), decoded), atol=1e-4, rtol=0)
    assert float(found.g[0]) > 0.9


class RarelyDivergingCodec(DivergingCodec):
    """Diverges for codes darker than −0.32 only: some of the proxy samples around a −0.1 source."""

    limit = -0.32


def test_discover_leaves_out_the_proxy_samples_that_diverged_and_refuses_when_none_is_left(caplog):
    """Codes darker than −0.32 decode to NaN: those samples (their f and s NaN) are left out
    of the proxy data and fit, with a warning, and the direction is still found (g ≈ +e_0);
    every decode counts towards the NFE. Where every sample diverges, discover refuses."""
    source = toy_images()[:1] + 0.1
    codec = RarelyDivergingCodec(BrightnessDiffAE(), SCHEDULE, batch=50)
    blackbox = BlackBox(BrightnessClassifier())
    _, z_t = codec.encode(source, 5)
    torch.manual_seed(8)
    found = gcd.discover(
        codec, blackbox, lpips, SPACE, source, 42, z_t, DISCOVERY, torch.Generator().manual_seed(9)
    )
    kept = len(found.proxy_u)
    assert 0 < kept < 128 and f"{128 - kept} of 128 proxy samples decoded to non-finite values" in caplog.text
    assert (SPACE.to_z(found.proxy_u)[:, 0] >= RarelyDivergingCodec.limit).all()
    assert found.proxy_f.isfinite().all() and found.proxy_s.isfinite().all() and len(found.proxy_f) == kept
    assert found.fit.epochs >= 1 and math.isfinite(found.fit.val_loss)
    assert float(found.g[0]) > 0.9 and found.nfe == 128 * 2
    codec.limit = 10.0  # every code diverges
    with pytest.raises(ExplanationError, match="0 proxy samples"):
        gcd.discover(
            codec, blackbox, lpips, SPACE, source, 42, z_t, DISCOVERY, torch.Generator().manual_seed(9)
        )


def test_globality_measures_what_each_directions_flipped_counterfactuals_change():
    """g = e_0 moves the brightness code: every image flips, and the measure sees exactly the
    two-sided search's CEs; h1 = e_1 is a code the toy decoder ignores: nothing flips or is
    measured."""
    from diffxai.jobs.gcd_globality import globality

    images = toy_images((-0.2, 0.3, -0.4, 0.5))
    z, z_t = exact_latents(images)
    blackbox = BlackBox(BrightnessClassifier())
    codec = DiffAECodec(BrightnessDiffAE(), SCHEDULE)
    seen = []

    def brightness_change(x: torch.Tensor, cf: torch.Tensor) -> dict:
        seen.append((x, cf))
        change = (cf - x).mean(dim=(1, 2, 3)).abs().mean()
        return {"brightness": {"mean_abs_change_in_std": float(change)}}

    found = directions(torch.eye(2)[1:])
    args = (codec, blackbox, lpips, SPACE, images, SPACE.to_u(z), z_t, transfer_params())
    result = globality(*args[:4], found, *args[4:], n_h=1, measure=brightness_change)
    assert result["flip_rate"] == {"g": 1.0, "h1": 0.0}
    assert result["factor_changes"]["h1"] == {} and len(seen) == 1  # measured for g only
    search, _ = gcd.transfer(*args[:7], found.g, 0, blackbox(images).argmax(1), transfer_params())
    x, cf = seen[0]
    torch.testing.assert_close(x, images)
    torch.testing.assert_close(cf, search.path[torch.arange(4), search.index])
    assert result["factor_changes"]["g"]["brightness"]["mean_abs_change_in_std"] > 0
    assert "factor_changes" not in globality(*args[:4], found, *args[4:], n_h=1)
    # in batches of 3: no network call sees more than 2 sides × 3 images × the grid; same record
    model = BrightnessDiffAE()
    seen.clear()
    batched = globality(
        DiffAECodec(model, SCHEDULE), *args[1:4], found, *args[4:], n_h=1, measure=brightness_change,
        batch_size=3,
    )  # fmt: skip
    assert model.largest_call == 2 * 3 * (transfer_params()["alpha_steps"] + 1)
    assert batched == result
    torch.testing.assert_close(seen[0][1], cf)


def test_class_score_log_odds_is_the_logit_margin_against_the_other_classes():
    """log p_c − log Σ_{j≠c} p_j = z_c − logsumexp_{j≠c} z_j, also where p_c rounds to 1 in float32."""
    logits = torch.tensor([[2.0, -1.0, 0.5], [30.0, 0.0, -2.0], [-3.0, 1.0, 4.0]])
    probabilities = logits.softmax(1)
    assert probabilities[1, 0] == 1.0  # saturated: the probability score cannot tell it from 31
    for c in range(3):
        others = torch.cat([logits[:, :c], logits[:, c + 1 :]], 1)
        expected = logits[:, c] - others.logsumexp(1)
        torch.testing.assert_close(
            gcd.class_score(probabilities, c, "log_odds"), expected, rtol=1e-4, atol=1e-4
        )
        torch.testing.assert_close(gcd.class_score(probabilities, c, "probability"), probabilities[:, c])


def test_g_is_the_unit_descent_direction_of_the_proxys_f_plus_lambda_s():
    """A linear proxy f = <a, u>, s = <b, u>: the CF loss f + λ s has gradient a + λ b everywhere,
    so g = −(a + λ b) / |a + λ b| (seed 001 eq. 3: lower the class, weighted by the distance)."""
    a, b = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 4.0, -1.0])

    class LinearProxy(nn.Module):
        def forward(self, u):
            return torch.stack([u @ a.to(u), u @ b.to(u)], 1)

    found = gcd.directions_at(LinearProxy(), torch.zeros(3), 0.5, 2)
    expected = -(a + 0.5 * b) / (a + 0.5 * b).norm()
    torch.testing.assert_close(found["g"], expected)


def test_the_runs_draw_distinct_source_images_and_refuse_more_runs_than_images():
    from diffxai.jobs.gcd_directions import source_index

    data = SimpleNamespace(indices=lambda split: np.array([4, 9, 12]))
    seeds = list(range(40))
    first_draws = [int(data.indices("val")[np.random.default_rng(s).integers(3)]) for s in seeds]
    assert len(set(first_draws[:3])) < 3  # seeds 0..2 alone would give two runs one source
    sources = [source_index(data, "val", seeds[k], seeds[:k]) for k in range(3)]
    assert sorted(sources) == [4, 9, 12]
    assert sources[0] == first_draws[0]
    assert all(source_index(data, "val", s) == first for s, first in zip(seeds, first_draws, strict=True))
    with pytest.raises(ValueError, match="4 GCD runs need as many val images, it has 3"):
        source_index(data, "val", seeds[3], seeds[:3])


def test_a_flat_proxy_gives_no_g_direction_instead_of_a_zero_one():
    proxy = gcd.ProxyMLP(3, 4)
    torch.nn.init.zeros_(proxy.net[-1].weight)  # output = bias, whatever u
    with pytest.raises(ExplanationError, match="flat at the source"):
        gcd.directions_at(proxy, torch.zeros(3), 0.5, 2)


def test_the_directions_store_records_the_direction_settings_in_effect_only(tmp_path, monkeypatch):
    """Rule gcd_directions passes the config's direction settings only: the store (and its
    provenance) records them with the defaults of the others, and no line-search setting, which
    the job never sees (its default there would claim a value the CEs may not use)."""
    from diffxai.jobs import gcd_directions as job
    from diffxai.methods.gcd_params import DIRECTION_PARAMS
    from diffxai.store import open_store

    pixels = np.full((1, *SHAPE), 115, np.uint8)  # brightness −0.1 in [−1, 1]
    data = SimpleNamespace(indices=lambda split: np.array([3]), rows=lambda name, ids: pixels)
    monkeypatch.setattr(job, "PreparedData", lambda path: data)
    monkeypatch.setattr(job, "load_codec", lambda path, device: DiffAECodec(BrightnessDiffAE(), SCHEDULE))
    monkeypatch.setattr(job, "load_blackbox", lambda path, device: BlackBox(BrightnessClassifier()))
    monkeypatch.setattr(job, "latent_space", lambda path: (SPACE, 4))
    monkeypatch.setattr(job, "Lpips", lambda weights, device: lpips)
    configured = {**DISCOVERY, "proxy_samples": 32, "proxy_epochs": 5}
    cpu = torch.device("cpu")
    found = job.run("data", "classifier", "diffae", "latents", tmp_path / "d.zarr", configured, None, 0, cpu)
    store = open_store(tmp_path / "d.zarr", job.STORE_KIND)
    assert store.attrs["params"] == {**DIRECTION_PARAMS, **configured}
    assert store.attrs["provenance"]["config"] == store.attrs["params"]
    assert store.attrs["source_id"] == found.source_id == 3
    np.testing.assert_array_equal(store.read("g"), found.g.numpy())


def test_across_runs_counts_only_the_runs_a_metric_is_finite_in():
    """A NaN metric (e.g. no successful CE in that run) is left out of the mean, the std and
    the count, and the CSV's n is that count."""
    from diffxai.jobs.common import COUNTS_KEY
    from diffxai.jobs.gcd_summary import _csv_rows, across_runs

    table = across_runs([{"fid": 2.0, "flip_rate": 0.5}, {"fid": math.nan, "flip_rate": 0.7}, {"fid": 4.0}])
    assert table == {"fid": {"mean": 3.0, "std": 1.0, "n_runs": 2}}
    none = across_runs([{"fid": math.nan}])["fid"]
    assert math.isnan(none["mean"]) and math.isnan(none["std"]) and none["n_runs"] == 0
    summary = {"sources": {"across_runs": table}, "globality": {"flip_rate": {}}, "attribution": {},
               "efficiency": {}, COUNTS_KEY: {"globality": 0, "attribution": 0, "efficiency": 3}}  # fmt: skip
    rows = _csv_rows(summary, {}, "tag")
    assert [(row["metric"], row["n"]) for row in rows] == [
        ("fid_mean_over_sources", 2),
        ("fid_std_over_sources", 2),
    ]
