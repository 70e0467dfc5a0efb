"""One-step clean-image (Tweedie) estimates and deterministic DDIM steps at any timestep.

FreeMCG's particles are Tweedie estimates x̂0(x_t) of many noised copies of an image, and
its counterfactual chain is DDIM (η = 0) on timesteps of its own choosing, so both are
written here on the training schedule's ᾱ_t for an integer timestep t ∈ [0, T).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from diffxai.diffusion.parameterization import eps_and_x0
from diffxai.models.ddpm import alphas_cumprod


class Tweedie:
    """x̂0(x_t, t) of a trained UNet, in chunks of ``batch`` images; counts network rows.

    Images are (N, C, H, W) in [-1, 1]; ``nfe`` is the total number of images the
    network has denoised (one network evaluation each).
    """

    def __init__(self, unet: nn.Module, scheduler_config: dict[str, Any], batch: int = 512) -> None:
        self.unet = unet
        self.prediction_type = scheduler_config.get("prediction_type", "epsilon")
        self.clip = bool(scheduler_config.get("clip_sample", True))
        self.alpha_bar = alphas_cumprod(scheduler_config).float()
        self.batch = batch
        self.nfe = 0

    @property
    def num_train_timesteps(self) -> int:
        return len(self.alpha_bar)

    def noised(self, x0: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε."""
        a = self.alpha_bar[t]
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    @torch.no_grad()
    def x0_and_eps(self, z: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x̂0 (clipped when the model samples clipped) and the network's ε̂, each (N, C, H, W),
        of z at timestep t."""
        device = next(self.unet.parameters()).device
        outputs = []
        for chunk in z.split(self.batch):
            timesteps = torch.full((len(chunk),), t, device=device, dtype=torch.long)
            outputs.append(self.unet(chunk.to(device), timesteps).sample.to(z.device))
        self.nfe += len(z)
        eps, x0 = eps_and_x0(torch.cat(outputs), z, self.alpha_bar[t], self.prediction_type)
        return (x0.clamp(-1, 1) if self.clip else x0), eps

    def x0(self, z: torch.Tensor, t: int) -> torch.Tensor:
        """x̂0 (N, C, H, W) of z at timestep t."""
        return self.x0_and_eps(z, t)[0]

    def ddim_step(self, x0: torch.Tensor, eps: torch.Tensor, t_prev: int) -> torch.Tensor:
        """Deterministic DDIM step to timestep ``t_prev`` from a clean estimate and the network's
        noise estimate (η = 0): sqrt(ᾱ_prev) x0 + sqrt(1 − ᾱ_prev) ε; t_prev = −1 gives x0.
        As in diffusers, ε is not re-derived from a clipped (or guided) x0, so an edit of x0
        is carried over whole."""
        if t_prev < 0:
            return x0
        a_prev = self.alpha_bar[t_prev]
        return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps

    def alpha_bar_at(self, t: int) -> torch.Tensor:
        """ᾱ_t, with ᾱ_{−1} = 1 (the clean end of a chain)."""
        return self.alpha_bar[t] if t >= 0 else torch.ones(())
