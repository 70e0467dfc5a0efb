"""The diffusion autoencoder: architecture, checkpoints, the DDIM codec and joint training.

The codec is checked against closed forms. A network whose ε is a constant b (output layer
zeroed but for its bias) makes DDIM an exact Euler integrator of x̄ = x / sqrt(ᾱ) in
σ = sqrt((1 − ᾱ) / ᾱ): z_T = sqrt(ᾱ_T) (x / sqrt(ᾱ_0) + b (σ_T − σ_0)) for any number of
steps. A v-prediction network that outputs 0 rotates x by cos(θ_{k+1} − θ_k) per step
(θ = arccos sqrt(ᾱ)). For a generic smooth network, encode → decode is first-order DDIM:
the reconstruction error falls like 1/S.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
from diffusers import DDPMScheduler

from diffxai.diffusion.respaced import space_timesteps
from diffxai.jobs.train_diffae import conditioned_output
from diffxai.models.diffae import DiffAE, DiffAECodec, build_diffae, diffae_from_info
from diffxai.models.io import load_model, save_model
from diffxai.training.diffusion import train_ddpm

torch.set_num_threads(1)

PARAMS = {
    "latent_dim": 8,
    "encoder_widths": [8, 16],
    "unet": {
        "block_out_channels": [8, 16],
        "attention": [False, False],
        "layers_per_block": 1,
        "norm_num_groups": 4,
    },
}
CHANNELS, SIZE = 3, 8
SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear"}


def schedule(prediction_type: str) -> dict[str, Any]:
    return {**SCHEDULE, "prediction_type": prediction_type}


def fresh_model(seed: int = 0, channels: int = CHANNELS) -> tuple[DiffAE, dict[str, Any]]:
    torch.manual_seed(seed)
    return build_diffae(PARAMS, channels, SIZE)


def images(n: int, seed: int = 1, channels: int = CHANNELS) -> torch.Tensor:
    return torch.rand(n, channels, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def alpha_bar(steps: int) -> torch.Tensor:
    """ᾱ (S + 1,) float64 on the codec's respaced timesteps t_0 = 0 < … < t_S = T − 1."""
    full = DDPMScheduler(**SCHEDULE).alphas_cumprod.double()
    return full[space_timesteps(len(full), steps + 1)]


# --- architecture -----------------------------------------------------------------------------------


def test_build_diffae_conditions_the_unet_on_z_sem_through_the_timestep_embedding():
    """Identity class embedding; z_sem (N, latent_dim); output shaped like x_t and moved by z_sem."""
    model, spec = fresh_model()
    assert model.unet.config.class_embed_type == "identity"
    assert spec["unet_config"]["class_embed_type"] == "identity"
    assert spec["latent_dim"] == 8 and spec["encoder_widths"] == [8, 16]
    x = images(3)
    t = torch.tensor([0, 500, 999])
    with torch.no_grad():
        z = model.encode_semantic(x)
        out = model(x, t, z)
        same = model(x, t, z.clone())
        moved = model(x, t, z + 1.0)
    assert z.shape == (3, 8)
    assert out.shape == x.shape
    torch.testing.assert_close(same, out, rtol=0, atol=0)
    assert (moved - out).abs().amax(dim=(1, 2, 3)).min() > 1e-3


def test_diffae_refuses_a_unet_without_the_identity_class_embedding():
    _, spec = fresh_model()
    with pytest.raises(ValueError, match="class_embed_type"):
        diffae_from_info({**spec, "unet_config": {**spec["unet_config"], "class_embed_type": None}})


def test_diffae_from_info_rebuilds_the_architecture_from_its_json_spec():
    """The spec survives JSON; the rebuilt module takes the weights strictly and computes the same."""
    model, spec = fresh_model(seed=0)
    torch.manual_seed(123)
    rebuilt = diffae_from_info(json.loads(json.dumps(spec)))
    x, t = images(2), torch.tensor([10, 700])
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert not torch.allclose(rebuilt(x, t, z), model(x, t, z))  # different random weights
        rebuilt.load_state_dict(model.state_dict(), strict=True)
        torch.testing.assert_close(rebuilt(x, t, z), model(x, t, z), rtol=0, atol=0)
        torch.testing.assert_close(rebuilt.encode_semantic(x), model.encode_semantic(x), rtol=0, atol=0)


def test_save_and_load_model_round_trip_the_weights_exactly(tmp_path):
    model, spec = fresh_model(seed=3)
    info = {"kind": "diffae", "in_channels": CHANNELS, "image_size": SIZE, **spec,
            "scheduler_config": schedule("v_prediction")}  # fmt: skip
    save_model(tmp_path / "diffae", model, info)
    loaded, loaded_info = load_model(tmp_path / "diffae")
    assert isinstance(loaded, DiffAE) and not loaded.training
    assert loaded_info["kind"] == "diffae"
    assert loaded_info["scheduler_config"] == schedule("v_prediction")
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key, value in original.items():
        assert torch.equal(value, restored[key]), key
    x, t, z = images(2), torch.tensor([3, 999]), torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, z), model.eval()(x, t, z), rtol=0, atol=0)


# --- the DDIM codec ---------------------------------------------------------------------------------


def constant_output_model(bias: list[float]) -> DiffAE:
    """A DiffAE whose UNet outputs the per-channel constant ``bias`` whatever x_t, t and z_sem."""
    model, _ = fresh_model()
    with torch.no_grad():
        model.unet.conv_out.weight.zero_()
        model.unet.conv_out.bias.copy_(torch.tensor(bias))
    return model.eval()


@pytest.mark.parametrize("steps", [1, 7, 40])
def test_encode_noise_with_constant_eps_is_the_exact_euler_step_in_sigma(steps):
    """ε ≡ b: z_T = sqrt(ᾱ_T) (x / sqrt(ᾱ_0) + b (σ_T − σ_0)) and decode inverts it exactly."""
    bias = [0.25, -0.5, 0.125]
    codec = DiffAECodec(constant_output_model(bias), schedule("epsilon"))
    x = images(2).double()
    z = codec.semantic(x.float())
    a = alpha_bar(steps)
    sigma = ((1 - a) / a).sqrt()
    b = torch.tensor(bias, dtype=torch.float64)[None, :, None, None]
    expected = a[-1].sqrt() * (x / a[0].sqrt() + b * (sigma[-1] - sigma[0]))
    z_t = codec.encode_noise(x, z, steps)
    assert z_t.dtype == torch.float64
    torch.testing.assert_close(z_t, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(codec.decode(z, z_t, steps), x, rtol=0, atol=1e-12)


def test_v_prediction_with_zero_output_rotates_by_the_angle_between_timesteps():
    """v ≡ 0: each DDIM step multiplies x by cos(θ' − θ); encode and decode each by the product."""
    steps = 12
    codec = DiffAECodec(constant_output_model([0.0, 0.0, 0.0]), schedule("v_prediction"))
    x = images(2).double()
    z = codec.semantic(x.float())
    theta = alpha_bar(steps).sqrt().acos()
    factor = torch.cos(theta[1:] - theta[:-1]).prod()
    z_t = codec.encode_noise(x, z, steps)
    torch.testing.assert_close(z_t, factor * x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(codec.decode(z, z_t, steps), factor**2 * x, rtol=1e-12, atol=1e-12)
    assert factor**2 < 0.9  # the rotation is visible: this is DDIM's first-order error, not a no-op


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_reconstruction_error_falls_like_one_over_steps(prediction_type):
    """decode(z, encode_noise(x, z, S), S) → x as S grows, first order, in float64 chain arithmetic.

    The network is random but smooth in t (first time-embedding layer zeroed) and its output
    small, like a trained denoiser's ε. Measured max |error| at S = 16, 64, 256:
    ε: 0.24, 0.059, 0.015; v: 0.20, 0.056, 0.014 (ratio ≈ 4 per 4× steps).
    """
    model, _ = fresh_model(seed=0)
    with torch.no_grad():
        model.unet.time_embedding.linear_1.weight.zero_()
        model.unet.conv_out.weight.mul_(0.01)
        model.unet.conv_out.bias.mul_(0.01)
    codec = DiffAECodec(model.eval(), schedule(prediction_type))
    x = images(2).double()
    z = codec.semantic(x.float())
    errors = []
    for steps in (16, 64, 256):
        z_t = codec.encode_noise(x, z, steps)
        errors.append(float((codec.decode(z, z_t, steps) - x).abs().max()))
    assert errors[1] < errors[0] / 3
    assert errors[2] < errors[1] / 3
    assert errors[2] < 0.02


def test_nfe_counts_images_times_steps_each_way_and_chunking_changes_nothing():
    model, _ = fresh_model(seed=4)
    x = images(5)
    whole = DiffAECodec(model.eval(), schedule("epsilon"))
    chunked = DiffAECodec(model, schedule("epsilon"), batch=2)
    z_sem, z_t = whole.encode(x, 6)
    assert whole.nfe == 5 * 6
    assert z_sem.shape == (5, 8) and z_t.shape == x.shape
    decoded = whole.decode(z_sem, z_t, 6)
    assert whole.nfe == 2 * 5 * 6
    z_sem_c, z_t_c = chunked.encode(x, 6)
    decoded_c = chunked.decode(z_sem_c, z_t_c, 6)
    assert chunked.nfe == 2 * 5 * 6
    torch.testing.assert_close(z_sem_c, z_sem)
    torch.testing.assert_close(z_t_c, z_t)
    # float32 rounding that differs with the batch shape is amplified by 1 / sqrt(ᾱ_T) ≈ 160
    torch.testing.assert_close(decoded_c, decoded, rtol=1e-3, atol=1e-3)
    assert chunked.semantic(x).shape == (5, 8) and chunked.nfe == 2 * 5 * 6  # the encoder is no NFE


# --- joint training ---------------------------------------------------------------------------------


def detached_output(
    network: DiffAE, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor, condition: None = None
) -> torch.Tensor:
    """Like ``conditioned_output`` but the UNet's loss cannot reach the encoder."""
    return network(x_t, t, network.encode_semantic(x0).detach())


@pytest.mark.parametrize(
    ("output", "encoder_trained"), [(conditioned_output, True), (detached_output, False)]
)
def test_train_ddpm_with_the_conditioned_output_trains_the_encoder_jointly(output, encoder_trained):
    """With ema_decay 0 the EMA copy is the trained model: the encoder moves iff the loss reaches it."""
    model, _ = fresh_model(seed=5, channels=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = {
        "steps": 20, "batch_size": 4, "lr": 1e-3, "warmup_steps": 1, "ema_decay": 0.0, "grad_clip": 1.0,
        "hflip": True, "checkpoint_every": 1000, "min_snr_gamma": 5.0, "lr_schedule": "constant",
    }  # fmt: skip
    ema, history = train_ddpm(
        model, schedule("epsilon"), images(8, channels=1), params, torch.device("cpu"),
        torch.Generator().manual_seed(0), output=output,
    )  # fmt: skip
    after = ema.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(after[key], value), key  # ema_decay 0: EMA = model

    def moved(prefix: str) -> bool:
        return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))

    assert moved("unet.") and moved("condition.")
    assert moved("encoder.") is encoder_trained
    assert history["loss"][-1][0] == 20 and math.isfinite(history["loss"][-1][1])
