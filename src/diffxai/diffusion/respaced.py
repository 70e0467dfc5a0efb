"""A trained noise predictor's reverse process on a respaced subsequence of timesteps.

Guided-diffusion respacing (Nichol & Dhariwal 2021): S of the T training timesteps,
evenly spaced and including 0 and T − 1, define a shorter Markov chain with
β_i = 1 − ᾱ_{t_i} / ᾱ_{t_{i−1}}. Index i = S − 1 is the noisiest step, i = 0 the last.
Every operation is a plain torch expression, so gradients flow through the chain
when the caller enables them (ACE's filter) and guidance can shift the mean (DiME).
"""

from __future__ import annotations

from typing import Any

import torch

from diffxai.diffusion.parameterization import eps_and_x0


def space_timesteps(num_train_timesteps: int, num_steps: int) -> list[int]:
    """``num_steps`` timesteps of ``range(num_train_timesteps)``, evenly spaced, ascending."""
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"steps must be in [1, {num_train_timesteps}], got {num_steps}")
    if num_steps == 1:
        return [num_train_timesteps - 1]
    stride = (num_train_timesteps - 1) / (num_steps - 1)
    return [round(i * stride) for i in range(num_steps)]


class RespacedDiffusion:
    """The UNet's reverse chain on ``num_steps`` respaced steps (fixed-small variances).

    Images are (N, C, H, W) in [-1, 1]; index ``i`` ∈ [0, num_steps) names a step.
    """

    def __init__(self, unet: torch.nn.Module, scheduler_config: dict[str, Any], num_steps: int) -> None:
        self.unet = unet
        self.prediction_type = scheduler_config.get("prediction_type", "epsilon")
        self.clip = bool(scheduler_config.get("clip_sample", True))
        # imported here: jobs that only import methods.base (attribution baselines, metrics) skip
        # diffusers' seconds of imports
        from diffxai.models.ddpm import alphas_cumprod

        schedule = alphas_cumprod(scheduler_config)
        self.timesteps = space_timesteps(len(schedule), num_steps)
        alpha_bar = schedule[self.timesteps]
        previous = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        betas = 1 - alpha_bar / previous
        variance = betas * (1 - previous) / (1 - alpha_bar)
        self.alpha_bar = alpha_bar.float()
        self.mean_x0 = (previous.sqrt() * betas / (1 - alpha_bar)).float()
        self.mean_xt = ((1 - betas).sqrt() * (1 - previous) / (1 - alpha_bar)).float()
        self.variance = variance.float()
        # the last step adds no noise; its guidance scale uses the next variance (as
        # guided-diffusion clips the log-variance at t = 0)
        self.guidance_variance = (
            torch.cat([variance[1:2], variance[1:]]).float() if num_steps > 1 else (betas.float())
        )

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def _device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def q_sample(self, x0: torch.Tensor, i: int, noise: torch.Tensor) -> torch.Tensor:
        """z_i = sqrt(ᾱ_i) x0 + sqrt(1 − ᾱ_i) ε."""
        a = self.alpha_bar[i]
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def predict_x0(self, z: torch.Tensor, i: int) -> torch.Tensor:
        """The network's clean-image estimate x̂0(z_i) (clipped when the model samples clipped). 1 NFE."""
        t = torch.full((len(z),), self.timesteps[i], device=self._device(), dtype=torch.long)
        output = self.unet(z.to(t.device), t).sample.to(z.device)
        _, x0 = eps_and_x0(output, z, self.alpha_bar[i], self.prediction_type)
        return x0.clamp(-1, 1) if self.clip else x0

    def posterior_mean(self, x0: torch.Tensor, z: torch.Tensor, i: int) -> torch.Tensor:
        """Mean of q(z_{i−1} | z_i, x0)."""
        return self.mean_x0[i] * x0 + self.mean_xt[i] * z

    def step(
        self,
        z: torch.Tensor,
        i: int,
        noise: torch.Tensor,
        shift: torch.Tensor | None = None,
        x0: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """z_{i−1} ~ N(μ(z_i) − Σ_i·shift, Σ_i): one ancestral step, optionally guided by ``shift``
        (a loss gradient w.r.t. z_i). Pass ``x0`` to reuse an estimate already computed at z_i."""
        mean = self.posterior_mean(self.predict_x0(z, i) if x0 is None else x0, z, i)
        if shift is not None:
            mean = mean - self.guidance_variance[i] * shift
        return mean + self.variance[i].sqrt() * noise if i > 0 else mean

    def denoise(self, z: torch.Tensor, start: int, noises: list[torch.Tensor]) -> torch.Tensor:
        """Unguided ancestral chain from z_start down to a clean image: start + 1 NFE.

        ``noises[k]`` is the noise of the step at index ``start − k``.
        """
        for k, i in enumerate(range(start, -1, -1)):
            z = self.step(z, i, noises[k])
        return z
