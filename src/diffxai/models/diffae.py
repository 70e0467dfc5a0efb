"""Diffusion autoencoder (Preechakul et al. 2022; seed 001 §3.2): a semantic encoder and
a noise predictor conditioned on its code, and the deterministic DDIM codec around them.

``E(x) → z_sem`` (N, latent_dim) is a small CNN. The denoiser is a diffusers
``UNet2DModel`` with ``class_embed_type="identity"``: a linear map of z_sem is added to
its timestep embedding, so every residual block sees the code through the same
scale/shift path as the timestep. ``DiffAECodec`` encodes x → z_T by DDIM inversion
given z_sem and decodes DAE(z_sem, z_T) by DDIM; both are deterministic (η = 0).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from diffusers import UNet2DModel
from torch import nn

from diffxai.diffusion.parameterization import eps_and_x0
from diffxai.diffusion.respaced import space_timesteps
from diffxai.models.ddpm import alphas_cumprod, build_unet


class SemanticEncoder(nn.Module):
    """Images (N, C, S, S) in [-1, 1] → semantic codes (N, latent_dim).

    One stride-2 convolution block per entry of ``widths`` (GroupNorm, SiLU), then a
    global average pool and a linear layer.
    """

    def __init__(self, in_channels: int, latent_dim: int, widths: tuple[int, ...], norm_groups: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        previous = widths[0]
        for width in widths:
            layers += [
                nn.GroupNorm(min(norm_groups, previous), previous),
                nn.SiLU(),
                nn.Conv2d(previous, width, 3, stride=2, padding=1),
                nn.GroupNorm(min(norm_groups, width), width),
                nn.SiLU(),
                nn.Conv2d(width, width, 3, padding=1),
            ]
            previous = width
        layers += [nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(previous, latent_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


class DiffAE(nn.Module):
    """Semantic encoder + z_sem-conditioned UNet. ``forward(x_t, t, z_sem)`` is the UNet
    output (ε, v or x0 as the schedule's ``prediction_type`` says), shaped like x_t."""

    def __init__(
        self,
        unet_config: dict[str, Any],
        latent_dim: int,
        encoder_widths: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.unet = UNet2DModel.from_config(unet_config)
        if self.unet.config.class_embed_type != "identity":
            raise ValueError(
                "the DiffAE UNet needs class_embed_type='identity' (z_sem joins the t-embedding)"
            )
        channels = self.unet.config.in_channels
        widths = tuple(encoder_widths)
        self.encoder = SemanticEncoder(channels, latent_dim, widths, self.unet.config.norm_num_groups)
        self.condition = nn.Linear(latent_dim, self.unet.config.block_out_channels[0] * 4)
        self.latent_dim = latent_dim

    def encode_semantic(self, images: torch.Tensor) -> torch.Tensor:
        """z_sem (N, latent_dim) of images (N, C, S, S) in [-1, 1]."""
        return self.encoder(images)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, z_sem: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, class_labels=self.condition(z_sem)).sample


def build_diffae(params: dict[str, Any], channels: int, image_size: int) -> tuple[DiffAE, dict[str, Any]]:
    """A fresh DiffAE from the ``diffae`` model config and the config.json fields that rebuild it."""
    # private keys (diffusers' record of which values were defaults) would reset the override
    base = build_unet(params["unet"], channels, image_size).config
    unet_config = {k: v for k, v in base.items() if not k.startswith("_")}
    unet_config["class_embed_type"] = "identity"
    spec = {
        "unet_config": unet_config,
        "latent_dim": params["latent_dim"],
        "encoder_widths": list(params["encoder_widths"]),
    }
    return diffae_from_info(spec), spec


def diffae_from_info(info: dict[str, Any]) -> DiffAE:
    """The (untrained) DiffAE a config.json describes."""
    return DiffAE(info["unet_config"], info["latent_dim"], tuple(info["encoder_widths"]))


class DiffAECodec:
    """Deterministic DDIM encode/decode of a trained DiffAE, in chunks of ``batch`` rows.

    Images are (N, C, H, W) in [-1, 1]; ``nfe`` counts images the UNet has processed.
    A chain of S steps runs on S + 1 respaced timesteps t_0 = 0 < … < t_S = T − 1 and
    costs S network evaluations per image each way.
    """

    def __init__(self, model: DiffAE, scheduler_config: dict[str, Any], batch: int = 256) -> None:
        self.model = model
        self.prediction_type = scheduler_config.get("prediction_type", "epsilon")
        self.alpha_bar = alphas_cumprod(scheduler_config)
        self.batch = batch
        self.nfe = 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def semantic(self, images: torch.Tensor) -> torch.Tensor:
        """z_sem (N, latent_dim), float32 on the images' device (no UNet evaluation)."""
        codes = [
            self.model.encode_semantic(c.to(self.device).float()).float().to(images.device)
            for c in images.split(self.batch)
        ]
        return torch.cat(codes)

    def _timesteps(self, steps: int) -> list[int]:
        return space_timesteps(len(self.alpha_bar), steps + 1)

    @torch.no_grad()
    def _eps_x0(self, x: torch.Tensor, t: int, z_sem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = []
        for chunk, code in zip(x.split(self.batch), z_sem.split(self.batch), strict=True):
            timesteps = torch.full((len(chunk),), t, device=self.device, dtype=torch.long)
            out = self.model(chunk.to(self.device).float(), timesteps, code.to(self.device).float())
            outputs.append(out.to(x.device, x.dtype))
        self.nfe += len(x)
        return eps_and_x0(torch.cat(outputs), x, self.alpha_bar[t].to(x.dtype), self.prediction_type)

    def _move(self, x0: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
        a = self.alpha_bar[t].to(x0.dtype)
        return a.sqrt() * x0 + (1 - a).sqrt() * eps

    def encode_noise(self, images: torch.Tensor, z_sem: torch.Tensor, steps: int) -> torch.Tensor:
        """z_T (N, C, H, W): DDIM inversion of ``images`` given z_sem over ``steps`` timesteps."""
        ts = self._timesteps(steps)
        x = images
        for current, following in itertools.pairwise(ts):
            eps, x0 = self._eps_x0(x, current, z_sem)
            x = self._move(x0, eps, following)
        return x

    def decode(self, z_sem: torch.Tensor, z_t: torch.Tensor, steps: int) -> torch.Tensor:
        """DAE(z_sem, z_T) (N, C, H, W): DDIM from T − 1 to 0, not clipped (exact inverse of
        :meth:`encode_noise` as steps grow). Clip for display or classification."""
        ts = self._timesteps(steps)
        x = z_t
        for current, following in zip(ts[:0:-1], ts[-2::-1], strict=True):
            eps, x0 = self._eps_x0(x, current, z_sem)
            x = self._move(x0, eps, following)
        return x

    def encode(self, images: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_sem, z_T) of images (N, C, H, W)."""
        z_sem = self.semantic(images)
        return z_sem, self.encode_noise(images, z_sem, steps)
