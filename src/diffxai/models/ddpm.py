"""DDPM: a diffusers ``UNet2DModel`` noise predictor and its noise schedule.

Parameters come from the ``ddpm`` model config; ``attention`` lists, per
resolution level, whether that level has self-attention.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel


def build_unet(params: dict[str, Any], channels: int, image_size: int) -> UNet2DModel:
    """The noise-prediction UNet for (channels, image_size, image_size) images."""
    widths = tuple(params["block_out_channels"])
    attention = list(params["attention"])
    if len(attention) != len(widths):
        raise ValueError(f"attention has {len(attention)} levels, block_out_channels {len(widths)}")
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention))
    return UNet2DModel(
        sample_size=image_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=widths,
        down_block_types=down,
        up_block_types=up,
        layers_per_block=params["layers_per_block"],
        norm_num_groups=params["norm_num_groups"],
        attention_head_dim=params.get("attention_head_dim", 8),
        dropout=params.get("dropout", 0.0),
    )


def scheduler_config(params: dict[str, Any]) -> dict[str, Any]:
    """Config shared by the DDPM and DDIM schedulers (linear β by default).

    ``prediction_type``: what the UNet outputs, ``epsilon`` (noise), ``v_prediction``
    (v = sqrt(ᾱ) ε − sqrt(1 − ᾱ) x0) or ``sample`` (x0).
    """
    return {
        "num_train_timesteps": params["num_train_timesteps"],
        "beta_start": params["beta_start"],
        "beta_end": params["beta_end"],
        "beta_schedule": params["beta_schedule"],
        "prediction_type": params.get("prediction_type", "epsilon"),
        # clip predicted clean images to the data range at every sampling step (as Ho et
        # al. 2020 do): without it, early high-noise steps of a briefly trained model
        # amplify ε errors by 1/sqrt(ᾱ_t) into saturated, noisy samples
        "clip_sample": params.get("clip_sample", True),
    }


SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}


def build_scheduler(config: dict[str, Any], kind: str = "ddpm") -> DDPMScheduler | DDIMScheduler:
    """A fresh ``ddpm`` (ancestral) or ``ddim`` scheduler for ``config``.

    ``config`` is ours (:func:`scheduler_config`) or a diffusers ``scheduler_config.json``
    of any scheduler class (a user's checkpoint: DDPM, DDIM, PNDM, ...): the keys that
    ``kind``'s scheduler does not take (``_class_name``, ``variance_type`` for DDIM,
    ``skip_prk_steps``, ...) do not describe the noise schedule and are dropped. DDIM
    always ends at ᾱ = 1.
    """
    if kind not in SCHEDULERS:
        raise ValueError(f"unknown sampler {kind!r}; allowed: {', '.join(SCHEDULERS)}")
    scheduler_class = SCHEDULERS[kind]
    accepted = inspect.signature(scheduler_class.__init__).parameters
    kwargs = {key: value for key, value in config.items() if key in accepted}
    if kind == "ddim":
        kwargs["set_alpha_to_one"] = True
    return scheduler_class(**kwargs)


def alphas_cumprod(config: dict[str, Any]) -> torch.Tensor:
    """ᾱ_t (T,) float64 of the noise schedule in ``config`` (any scheduler config, as
    :func:`build_scheduler` takes it)."""
    return build_scheduler(config).alphas_cumprod.double()
