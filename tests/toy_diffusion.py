"""A toy diffusion model with an exact denoiser and a linear classifier: ground truth for CE methods.

The data distribution is an equal-weight mixture of isotropic Gaussians N(μ_k, σ0² I) on
1×8×8 images (σ0 = 0: Dirac points). For z_t = sqrt(ᾱ) x0 + sqrt(1 − ᾱ) ε the exact
posterior mean is

    E[x0 | z] = Σ_k w_k (μ_k + c (z − sqrt(ᾱ) μ_k)),   c = σ0² sqrt(ᾱ) / v,   v = ᾱ σ0² + 1 − ᾱ,
    w = softmax_k(−||z − sqrt(ᾱ) μ_k||² / (2 v)),

and the network returns ε̂ = (z − sqrt(ᾱ) x̂0) / sqrt(1 − ᾱ) (``prediction_type: epsilon``).
The softmax logits are taken relative to μ_0 (the ||z||² term cancels), so the gradient of
x̂0 w.r.t. z is exactly zero on pixels where all means agree.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from diffusers import DDPMScheduler
from torch import nn

SIZE = 8
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "clip_sample": True,
}


def bar_images() -> tuple[torch.Tensor, torch.Tensor]:
    """A: a horizontal bar (row 3, columns 1..6); B: a vertical bar (column 4, rows 1..6).
    Both (1, 8, 8), background −1, bar +1; they agree at the crossing (3, 4)."""
    a = -torch.ones(1, SIZE, SIZE)
    a[0, 3, 1:7] = 1.0
    b = -torch.ones(1, SIZE, SIZE)
    b[0, 1:7, 4] = 1.0
    return a, b


class ExactDenoiser(nn.Module):
    """``unet(x, t).sample`` = the exact ε̂ of the Gaussian/Dirac mixture; counts its calls."""

    def __init__(self, means: torch.Tensor, std: float = 0.0, scheduler_config: dict | None = None) -> None:
        super().__init__()
        config = scheduler_config or SCHEDULER_CONFIG
        self.register_buffer("means", means.double().flatten(1))  # (K, D)
        self.std = float(std)
        self.register_buffer("alphas_cumprod", DDPMScheduler(**config).alphas_cumprod.double())
        # a frozen parameter, so that next(unet.parameters()) gives the device
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)
        self.config = {"in_channels": means.shape[1], "sample_size": means.shape[-1]}
        self.forward_samples = 0  # total batch rows seen by forward (= per-sample NFE summed)
        self.forward_calls = 0
        self.backward_samples = 0  # batch rows of gradients that reached an input z

    def x0(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Exact E[x0 | z_t] (float64, shaped like z)."""
        a = self.alphas_cumprod[t].view(-1, 1)
        flat = z.double().flatten(1)
        mu = self.means
        v = a * self.std**2 + 1 - a
        # −||z − √a μ_k||²/(2v) up to a k-independent term, relative to k = 0
        rel = mu - mu[:1]  # (K, D)
        logits = (a.sqrt() * flat @ rel.T - a * (mu.pow(2).sum(1) - mu[0].pow(2).sum()) / 2) / v
        w = torch.softmax(logits, dim=1)  # (N, K)
        c = self.std**2 * a.sqrt() / v
        x0 = w @ mu + c * (flat - a.sqrt() * (w @ mu))
        return x0.view(z.shape)

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> SimpleNamespace:
        t = torch.as_tensor(t, device=z.device).long().expand(len(z))
        self.forward_calls += 1
        self.forward_samples += len(z)
        if z.requires_grad:
            z.register_hook(self._count_backward)
        a = self.alphas_cumprod[t].view(-1, *([1] * (z.dim() - 1)))
        eps = (z.double() - a.sqrt() * self.x0(z, t)) / (1 - a).sqrt()
        return SimpleNamespace(sample=eps.to(z.dtype))

    def _count_backward(self, grad: torch.Tensor) -> None:
        self.backward_samples += len(grad)


class BarClassifier(nn.Module):
    """Two classes with logit_1 − logit_0 = s (<x, B − A> − <mid, B − A>) / ||B − A||²; counts rows."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, scale: float = 8.0) -> None:
        super().__init__()
        d = (b - a).flatten()
        mid = ((a + b) / 2).flatten()
        half = scale / 2 / d.pow(2).sum()
        self.linear = nn.Linear(d.numel(), 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.stack([-half * d, half * d]))
            bias = half * (d @ mid)
            self.linear.bias.copy_(torch.stack([bias, -bias]))
        self.requires_grad_(False)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += len(x)
        return self.linear(x.flatten(1))
