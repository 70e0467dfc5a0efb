"""Noise and clean-image estimates from a UNet output, whatever it was trained to predict.

Methods built on the DDPM (DiME's clean-image gradients, FreeMCG's Tweedie particles,
ACE's filter) need both ε̂ and x̂0 at a noisy x_t = sqrt(ᾱ) x0 + sqrt(1 − ᾱ) ε; this is
the one place that converts from ε-, v- or x0-prediction.
"""

from __future__ import annotations

import torch


def eps_and_x0(
    model_output: torch.Tensor, x_t: torch.Tensor, alpha_bar_t: torch.Tensor, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ε̂, x̂0), each shaped like ``x_t``; ``alpha_bar_t`` is a scalar or (N,) tensor."""
    a = alpha_bar_t.reshape(-1, *([1] * (x_t.dim() - 1))) if alpha_bar_t.dim() else alpha_bar_t
    signal, noise = a.sqrt(), (1 - a).sqrt()
    if prediction_type == "epsilon":
        eps = model_output
        return eps, (x_t - noise * eps) / signal
    if prediction_type == "v_prediction":
        return noise * x_t + signal * model_output, signal * x_t - noise * model_output
    if prediction_type == "sample":
        x0 = model_output
        return (x_t - signal * x0) / noise, x0
    raise ValueError(f"unknown prediction_type {prediction_type!r}; allowed: epsilon, v_prediction, sample")
