"""Networks, training loops, DDPM sampling, model I/O and black-box access.

Everything runs on CPU with tiny images (8-16 px) and tiny networks.
"""

from __future__ import annotations

import argparse
import collections
import copy
import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DModel
from safetensors.torch import save_file

from diffxai.diffusion.sampling import per_sample_generators, per_sample_noise, sample
from diffxai.models.blackbox import BlackBox, GradientRefused
from diffxai.models.ddpm import build_scheduler, build_unet, scheduler_config
from diffxai.models.encoder import SimSiam
from diffxai.models.io import CheckpointError, build_module, load_model, save_model
from diffxai.models.registry import create_network
from diffxai.models.simple_cnn import SimpleCNN
from diffxai.training.diffusion import train_ddpm
from diffxai.training.simsiam import feature_spread, train_simsiam
from diffxai.training.supervised import TASKS, Task, fit, predict, without_single_batch

torch.set_num_threads(1)

CPU = torch.device("cpu")
UNET = {
    "block_out_channels": [8, 16],
    "attention": [False, False],
    "norm_num_groups": 4,
    "layers_per_block": 1,
}
SCHEDULE = scheduler_config(
    {"num_train_timesteps": 100, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear"}
)
TINY_CNN = {"channels": [4, 8], "hidden": 8}


def ddpm_params(steps: int, checkpoint_every: int = 10) -> dict:
    return {
        "steps": steps,
        "batch_size": 16,
        "lr": 2e-3,
        "warmup_steps": 5,
        "ema_decay": 0.9,
        "grad_clip": 1.0,
        "hflip": True,
        "checkpoint_every": checkpoint_every,
    }


def tiny_unet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_unet(UNET, channels=1, image_size=8)


def square_images(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Float images (n, 1, 8, 8) in [-1, 1]: a white 3x3 square at a random place on black."""
    generator = torch.Generator().manual_seed(seed)
    images = -torch.ones(n, 1, 8, 8)
    for image, (row, col) in zip(images, torch.randint(0, 6, (n, 2), generator=generator), strict=True):
        image[0, row : row + 3, col : col + 3] = 1.0
    return images


def inputs(channels: int = 1, size: int = 16, n: int = 4, seed: int = 0) -> torch.Tensor:
    return 2 * torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) - 1


def fit_params(**overrides) -> dict:
    params = {
        "max_epochs": 3,
        "batch_size": 16,
        "lr": 3e-3,
        "weight_decay": 0.0,
        "patience": 3,
        "noise_std": 0.02,
        "min_epochs": 1,
        "warmup_epochs": 0,
    }
    return {**params, **overrides}


# --------------------------------------------------------------------------- networks


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [16, 32, 64])
def test_simple_cnn_gives_one_row_of_outputs_per_image(channels: int, size: int) -> None:
    network = create_network("simple_cnn", channels, size, num_outputs=3)
    assert isinstance(network, SimpleCNN)
    assert network(inputs(channels, size, n=2)).shape == (2, 3)


def test_timm_resnet_gives_one_row_of_outputs_per_image() -> None:
    network = create_network("resnet18", in_channels=1, image_size=32, num_outputs=5)
    assert network(inputs(1, 32, n=2)).shape == (2, 5)


def test_timm_vit_is_built_for_the_configured_image_size() -> None:
    network = create_network("vit_tiny_patch16_224", in_channels=3, image_size=32, num_outputs=5)
    assert network(inputs(3, 32, n=2)).shape == (2, 5)


def test_unknown_architecture_raises_value_error() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'no_such_net'"):
        create_network("no_such_net", 1, 32, 2)


# --------------------------------------------------------------------------- supervised and SimSiam training


def bright_or_dark(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (n, 1, 8, 8): class 1 bright (~180), class 0 dark (~70), pixel noise ±50."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=generator)
    noise = torch.randint(-50, 51, (n, 1, 8, 8), generator=generator)
    images = (torch.where(labels == 1, 180, 70)[:, None, None, None] + noise).clamp(0, 255)
    return images.to(torch.uint8), labels


def brightness_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (n, 1, 8, 8) of uniform random brightness ± pixel noise; standardised brightness."""
    generator = torch.Generator().manual_seed(seed)
    brightness = 30 + 195 * torch.rand(n, generator=generator)
    noise = torch.randint(-20, 21, (n, 1, 8, 8), generator=generator)
    images = (brightness[:, None, None, None] + noise).clamp(0, 255).to(torch.uint8)
    return images, (brightness - 127.5) / 56.0


def test_classifier_fit_reaches_high_validation_accuracy() -> None:
    torch.manual_seed(0)
    network = SimpleCNN(1, 2, **TINY_CNN)
    val = bright_or_dark(64, seed=2)
    network, history = fit(
        network,
        TASKS["classifier"],
        bright_or_dark(256, seed=1),
        val,
        fit_params(),
        CPU,
        torch.Generator().manual_seed(0),
    )
    accuracy = (predict(network, val[0], CPU).argmax(1) == val[1]).float().mean().item()
    assert history["epochs"] <= 3
    assert accuracy >= 0.9


def test_warmup_raises_the_learning_rate_linearly_and_min_epochs_defers_early_stopping() -> None:
    """256 images in batches of 16 = 16 steps per epoch; 2 warm-up epochs = 32 steps, lr·(s+1)/33.
    A learning rate too small to improve validation would stop after patience epochs without min_epochs."""
    torch.manual_seed(0)
    params = fit_params(lr=1e-9, patience=1, max_epochs=6, min_epochs=5, warmup_epochs=2)
    _, history = fit(
        SimpleCNN(1, 2, **TINY_CNN),
        TASKS["classifier"],
        bright_or_dark(256, seed=1),
        bright_or_dark(64, seed=2),
        params,
        CPU,
        torch.Generator().manual_seed(0),
    )
    np.testing.assert_allclose(history["lr"][:3], [1e-9 * 17 / 33, 1e-9 * 33 / 33, 1e-9], rtol=1e-6)
    assert 5 <= history["epochs"] <= 6  # patience 1 alone would stop at epoch 2


def test_regressor_fit_improves_r2() -> None:
    torch.manual_seed(0)
    network = SimpleCNN(1, 1, **TINY_CNN)
    val = brightness_images(64, seed=2)
    r2_before = TASKS["regressor"].score(predict(network, val[0], CPU), val[1])
    network, _ = fit(
        network,
        TASKS["regressor"],
        brightness_images(256, seed=1),
        val,
        fit_params(),
        CPU,
        torch.Generator().manual_seed(0),
    )
    r2_after = TASKS["regressor"].score(predict(network, val[0], CPU), val[1])
    assert r2_after > r2_before
    assert r2_after > 0.5


def test_a_regressor_with_one_validation_image_trains_without_a_defined_score() -> None:
    """R² of one validation target is undefined (−inf or NaN) every epoch: no epoch is best, and training
    ends with the latest weights instead of crashing on no best state."""
    torch.manual_seed(0)
    images, targets = brightness_images(64, seed=1)
    val = brightness_images(1, seed=2)
    params, generator = fit_params(max_epochs=2), torch.Generator().manual_seed(0)
    _, history = fit(
        SimpleCNN(1, 1, **TINY_CNN), TASKS["regressor"], (images, targets), val, params, CPU, generator
    )
    assert history["epochs"] == 2 and not any(np.isfinite(score) for score in history["val_score"])
    assert history["best_val_score"] == -np.inf


def test_a_last_batch_of_one_joins_the_one_before() -> None:
    batches = torch.arange(9).split(4)  # 4, 4, 1
    assert [len(b) for b in without_single_batch(batches)] == [4, 5]
    assert torch.equal(torch.cat(without_single_batch(batches)), torch.arange(9))
    assert [len(b) for b in without_single_batch(torch.arange(8).split(4))] == [4, 4]
    assert [len(b) for b in without_single_batch(torch.arange(1).split(4))] == [1]


def test_batch_norm_trains_when_the_training_set_leaves_one_image_over() -> None:
    class Pooled(torch.nn.Module):  # batch norm on (N, C): one sample per batch cannot train
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(
                torch.nn.Flatten(), torch.nn.Linear(64, 4), torch.nn.BatchNorm1d(4)
            )
            self.head = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.body(x))

    torch.manual_seed(0)
    train = bright_or_dark(17, seed=1)  # batches of 8: 8, 8, 1
    params, generator = fit_params(max_epochs=1, batch_size=8), torch.Generator().manual_seed(0)
    _, history = fit(Pooled(), TASKS["classifier"], train, bright_or_dark(8, seed=2), params, CPU, generator)
    assert history["epochs"] == 1


def mean_target_fit(targets: torch.Tensor, **params) -> dict:
    """The history of a fit whose loss is the batch's mean target (8 x 8 black images, score 0)."""
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1))
    task = Task("mean target", lambda outputs, batch: 0 * outputs.sum() + batch.mean(), lambda o, t: 0.0)
    images = torch.zeros(len(targets), 1, 8, 8, dtype=torch.uint8)
    train, val = (images, targets), (images[:2], targets[:2])
    return fit(network, task, train, val, fit_params(**params), CPU, torch.Generator().manual_seed(0))[1]


def test_the_training_loss_is_the_mean_over_the_images_not_over_the_batches() -> None:
    """17 images in batches of 8 run as 8 + 9: one target of 1 gives 1/17, not the mean of the
    batch means (1/16 or 1/18)."""
    targets = torch.zeros(17)
    targets[3] = 1.0
    history = mean_target_fit(targets, max_epochs=2, batch_size=8)
    assert history["train_loss"] == pytest.approx([1 / 17, 1 / 17])


def test_warmup_counts_the_batches_an_epoch_runs() -> None:
    """17 images in batches of 8 are two steps an epoch (8 + 9), not three: two warm-up epochs are
    four steps, lr·(s+1)/5, at full rate after the second epoch."""
    history = mean_target_fit(torch.zeros(17), max_epochs=2, batch_size=8, lr=1e-3, warmup_epochs=2)
    np.testing.assert_allclose(history["lr"], [1e-3 * 3 / 5, 1e-3], rtol=1e-6)


def test_early_stopping_restores_the_weights_of_the_best_validation_epoch() -> None:
    """Scores 0.1, 0.5, 0.3, 0.2 with patience 2 stop after epoch 4; the network returned gives the
    validation outputs epoch 2 was scored on, in eval mode."""
    scores, scored = iter([0.1, 0.5, 0.3, 0.2]), []

    def score(outputs: torch.Tensor, targets: torch.Tensor) -> float:
        scored.append(outputs.clone())
        return next(scores)

    torch.manual_seed(0)
    val = brightness_images(16, seed=2)
    params, generator = fit_params(max_epochs=10, patience=2, lr=1e-2), torch.Generator().manual_seed(0)
    network, history = fit(
        SimpleCNN(1, 1, **TINY_CNN), Task("scripted", TASKS["regressor"].loss, score),
        brightness_images(64, seed=1), val, params, CPU, generator,
    )  # fmt: skip
    assert history["val_score"] == [0.1, 0.5, 0.3, 0.2] and history["best_val_score"] == 0.5
    assert not network.training
    restored = predict(network, val[0], CPU)
    assert torch.equal(restored, scored[1]) and not torch.equal(restored, scored[-1])


def test_simsiam_refuses_a_single_training_image() -> None:
    images = torch.zeros(1, 1, 16, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match="at least 2 training images"):
        train_simsiam(SimSiam(1, width=4, feature_dim=8), images, {"epochs": 1, "batch_size": 8, "lr": 0.05},
                      CPU, torch.Generator().manual_seed(0))  # fmt: skip


def test_simsiam_trains_with_finite_loss() -> None:
    torch.manual_seed(0)
    images = (255 * torch.rand(32, 1, 16, 16, generator=torch.Generator().manual_seed(0))).to(torch.uint8)
    params = {"epochs": 2, "batch_size": 8, "lr": 0.05}
    model, history = train_simsiam(
        SimSiam(1, width=4, feature_dim=8), images, params, CPU, torch.Generator().manual_seed(0)
    )
    assert len(history["loss"]) == 2
    assert all(math.isfinite(loss) and -1.0 <= loss <= 1.0 for loss in history["loss"])
    assert not model.training


def test_feature_spread_is_one_for_gaussian_features_and_zero_for_collapsed_ones() -> None:
    generator = torch.Generator().manual_seed(0)
    gaussian = torch.randn(4000, 16, generator=generator)
    assert feature_spread(gaussian) == pytest.approx(1.0, abs=0.02)
    assert feature_spread(100 * gaussian) == pytest.approx(feature_spread(gaussian))  # scale-free
    direction = torch.randn(16, generator=generator)
    collapsed = direction * (0.5 + torch.rand(4000, 1, generator=generator)) + 1e-3 * gaussian
    assert feature_spread(collapsed) < 0.01
    assert feature_spread(direction.expand(10, 16)) == 0.0


# --------------------------------------------------------------------------- DDPM training


def test_ddpm_training_loss_decreases() -> None:
    _, history = train_ddpm(
        tiny_unet(), SCHEDULE, square_images(), ddpm_params(60), CPU, torch.Generator().manual_seed(1)
    )
    losses = [loss for _, loss in history["loss"]]
    assert [step for step, _ in history["loss"]] == [25, 50, 60]
    assert losses[-1] < 0.85 * losses[0]


@pytest.fixture(scope="module")
def ddpm_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted 30-step run and one stopped at step 20 and resumed to 30 from its checkpoint."""
    images, checkpoint = square_images(), tmp_path_factory.mktemp("ddpm") / "checkpoint.pt"
    full_ema, full_history = train_ddpm(
        tiny_unet(), SCHEDULE, images, ddpm_params(30), CPU, torch.Generator().manual_seed(1)
    )
    _, first_history = train_ddpm(
        tiny_unet(),
        SCHEDULE,
        images,
        ddpm_params(20),
        CPU,
        torch.Generator().manual_seed(1),
        checkpoint=checkpoint,
    )
    first_history = copy.deepcopy(first_history)
    resumed = tiny_unet(seed=5)  # other initial weights and generator seed: all must come from the checkpoint
    forward_calls: list[int] = []  # one training forward pass per step
    resumed.register_forward_pre_hook(lambda module, args: forward_calls.append(1))
    logger = logging.getLogger("diffxai.training.diffusion")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        resumed_ema, resumed_history = train_ddpm(
            resumed,
            SCHEDULE,
            images,
            ddpm_params(30),
            CPU,
            torch.Generator().manual_seed(99),
            checkpoint=checkpoint,
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return {
        "full": (full_ema, full_history),
        "first_history": first_history,
        "resumed": (resumed_ema, resumed_history),
        "resumed_steps": len(forward_calls),
        "log": [record.getMessage() for record in records],
    }


def test_ddpm_training_resumes_at_the_checkpointed_step(ddpm_runs: dict) -> None:
    assert ddpm_runs["resumed_steps"] == 10
    assert any("at step 20" in message for message in ddpm_runs["log"])


def test_resumed_ddpm_history_extends_the_checkpointed_history(ddpm_runs: dict) -> None:
    _, resumed_history = ddpm_runs["resumed"]
    assert ddpm_runs["first_history"]["loss"] == resumed_history["loss"][:1]
    assert [step for step, _ in resumed_history["loss"]] == [20, 25, 30]


def test_resumed_ddpm_training_gives_the_same_ema_weights_as_an_uninterrupted_run(ddpm_runs: dict) -> None:
    full_ema, _ = ddpm_runs["full"]
    resumed_ema, _ = ddpm_runs["resumed"]
    full, resumed = full_ema.state_dict(), resumed_ema.state_dict()
    assert full.keys() == resumed.keys()
    for name in full:
        assert torch.equal(full[name], resumed[name]), name


def test_resumed_training_with_dropout_draws_the_same_masks(tmp_path: Path) -> None:
    """Dropout masks come from torch's global generator, which a resumed job reseeds at its start:
    the checkpoint carries that generator too, so the resumed run equals the uninterrupted one."""
    dropout_unet = {**UNET, "dropout": 0.3}

    def run(steps: int, checkpoint: Path | None, seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)  # as each training job does at its start
        unet = build_unet(dropout_unet, channels=1, image_size=8)
        params = {**ddpm_params(steps, checkpoint_every=3), "hflip": False}
        generator = torch.Generator().manual_seed(1)
        return train_ddpm(unet, SCHEDULE, square_images(), params, CPU, generator, checkpoint=checkpoint)[0]

    full = run(6, None, seed=0)
    run(3, tmp_path / "checkpoint.pt", seed=0)
    resumed = run(6, tmp_path / "checkpoint.pt", seed=0)
    for name, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_a_run_stopped_early_resumes_bit_exact_with_the_cosine_schedule_and_min_snr(tmp_path: Path) -> None:
    """``stop_at`` 7 of 12 steps (checkpoints every 5): the resumed run continues the cosine decay over
    all 12 steps with Min-SNR weights, and ends with the uninterrupted run's EMA weights."""
    params = {**ddpm_params(12, checkpoint_every=5), "lr_schedule": "cosine", "min_snr_gamma": 5.0}
    images, checkpoint = square_images(), tmp_path / "checkpoint.pt"

    def run(seed: int, **resume) -> torch.nn.Module:
        generator = torch.Generator().manual_seed(seed)
        return train_ddpm(tiny_unet(seed), SCHEDULE, images, params, CPU, generator, **resume)[0]

    full = run(1)
    run(1, checkpoint=checkpoint, stop_at=7)
    resumed = run(9, checkpoint=checkpoint)  # weights and generator must come from the checkpoint
    for name, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_resumed_ddpm_running_loss_continues_the_uninterrupted_one(ddpm_runs: dict) -> None:
    _, full_history = ddpm_runs["full"]
    _, resumed_history = ddpm_runs["resumed"]
    assert resumed_history["loss"][1:] == full_history["loss"]


# --------------------------------------------------------------------------- sampling


@pytest.fixture(scope="module")
def unet() -> torch.nn.Module:
    return tiny_unet().eval()


def draw_three(unet: torch.nn.Module, sampler: str) -> tuple[torch.Tensor, int]:
    """Three 8x8 samples in 4 steps, two per batch."""
    generator = torch.Generator().manual_seed(0)
    return sample(unet, SCHEDULE, 3, (1, 8, 8), 4, sampler, generator, batch_size=2, progress=False)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sample_returns_images_in_range(unet: torch.nn.Module, sampler: str) -> None:
    images, _ = draw_three(unet, sampler)
    assert images.shape == (3, 1, 8, 8)
    assert images.min() >= -1.0 and images.max() <= 1.0


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sample_nfe_is_images_times_steps(unet: torch.nn.Module, sampler: str) -> None:
    assert draw_three(unet, sampler)[1] == 3 * 4


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sample_is_deterministic_for_a_fixed_generator(unet: torch.nn.Module, sampler: str) -> None:
    def draw(seed: int) -> torch.Tensor:
        return sample(
            unet,
            SCHEDULE,
            2,
            (1, 8, 8),
            num_steps=3,
            sampler=sampler,
            generator=torch.Generator().manual_seed(seed),
            progress=False,
        )[0]

    first = draw(0)
    assert torch.equal(first, draw(0))
    assert not torch.equal(first, draw(1))


# --------------------------------------------------------------------------- model I/O


def classifier_spec(**arch_params) -> dict:
    return {
        "kind": "classifier",
        "arch": "simple_cnn",
        "arch_params": {**TINY_CNN, **arch_params},
        "in_channels": 1,
        "image_size": 16,
        "class_names": ["a", "b"],
    }


SPECS = {
    "classifier": classifier_spec(),
    "regressor": {
        "kind": "regressor",
        "arch": "simple_cnn",
        "arch_params": TINY_CNN,
        "in_channels": 1,
        "image_size": 16,
        "target": "area",
    },
    "oracle": {
        "kind": "oracle",
        "arch": "simple_cnn",
        "arch_params": TINY_CNN,
        "in_channels": 1,
        "image_size": 16,
        "attribute_names": ["x", "y", "z"],
    },
    "encoder": {"kind": "encoder", "in_channels": 1, "image_size": 16, "width": 4, "feature_dim": 8},
}


def build(kind: str) -> tuple[torch.nn.Module, dict]:
    """A freshly initialised module of ``kind`` in eval mode and its spec."""
    torch.manual_seed(0)
    if kind == "ddpm":
        module = tiny_unet()
        spec = {
            "kind": "ddpm",
            "in_channels": 1,
            "image_size": 8,
            "unet_config": dict(module.config),
            "scheduler_config": SCHEDULE,
        }
        return module.eval(), spec
    module = build_module(SPECS[kind])
    if kind == "regressor":
        module.mean.fill_(10.0)
        module.std.fill_(3.0)
    return module.eval(), SPECS[kind]


def outputs(module: torch.nn.Module, kind: str) -> torch.Tensor:
    with torch.no_grad():
        if kind == "ddpm":
            return module(inputs(1, 8), torch.tensor([3, 50, 80, 99])).sample
        return module(inputs(1, 16))


@pytest.mark.parametrize("kind", ["classifier", "regressor", "oracle", "encoder", "ddpm"])
def test_saved_model_loads_with_identical_outputs(tmp_path: Path, kind: str) -> None:
    module, spec = build(kind)
    save_model(tmp_path / "model", module, spec)
    loaded, info = load_model(tmp_path / "model")
    assert info["kind"] == kind
    assert not loaded.training
    assert torch.equal(outputs(loaded, kind), outputs(module, kind))


def test_saved_regressor_keeps_its_standardisation(tmp_path: Path) -> None:
    module, spec = build("regressor")
    loaded, _ = load_model(save_model(tmp_path / "model", module, spec))
    assert loaded.mean.item() == 10.0 and loaded.std.item() == 3.0
    with torch.no_grad():
        x = inputs(1, 16)
        torch.testing.assert_close(loaded(x), loaded.standardized(x) * 3.0 + 10.0)


def test_torch_state_dict_of_a_bare_network_loads_with_a_spec(tmp_path: Path) -> None:
    module, spec = build("classifier")
    torch.save(module.network.state_dict(), tmp_path / "net.pt")
    loaded, info = load_model(tmp_path / "net.pt", spec=spec)
    assert info == spec
    assert torch.equal(outputs(loaded, "classifier"), outputs(module, "classifier"))


def test_safetensors_file_loads_with_a_spec(tmp_path: Path) -> None:
    module, spec = build("oracle")
    save_file(module.state_dict(), tmp_path / "oracle.safetensors")
    loaded, _ = load_model(tmp_path / "oracle.safetensors", spec=spec)
    assert torch.equal(outputs(loaded, "oracle"), outputs(module, "oracle"))


def test_lightning_checkpoint_loads_with_a_spec(tmp_path: Path) -> None:
    module, spec = build("classifier")
    torch.save({"state_dict": module.state_dict(), "epoch": 3, "global_step": 120}, tmp_path / "last.ckpt")
    loaded, _ = load_model(tmp_path / "last.ckpt", spec=spec)
    assert torch.equal(outputs(loaded, "classifier"), outputs(module, "classifier"))


def test_a_checkpoint_with_raw_and_ema_weights_loads_the_ema_ones(tmp_path: Path) -> None:
    module, spec = build("classifier")
    torch.manual_seed(1)
    raw = build_module(SPECS["classifier"]).eval()
    torch.save({"model": raw.state_dict(), "ema": module.state_dict(), "step": 9}, tmp_path / "loop.pt")
    loaded, _ = load_model(tmp_path / "loop.pt", spec=spec)
    assert torch.equal(outputs(loaded, "classifier"), outputs(module, "classifier"))
    assert not torch.equal(outputs(raw, "classifier"), outputs(module, "classifier"))


@pytest.mark.parametrize("raw_key", ["model", "state_dict"])
@pytest.mark.parametrize("ema_key", ["ema", "state_dict_ema", "model_ema"])
def test_the_ema_weights_win_over_the_raw_ones_whatever_their_keys(
    tmp_path: Path, raw_key: str, ema_key: str
) -> None:
    """Training loops, Lightning and timm's train.py ({state_dict, state_dict_ema}, bare networks)."""
    module, spec = build("classifier")
    torch.manual_seed(1)
    raw = build_module(SPECS["classifier"]).eval()
    state = {raw_key: raw.network.state_dict(), ema_key: module.network.state_dict(), "epoch": 3}
    state["args"] = argparse.Namespace(lr=0.1, model="resnet18")  # as timm's train.py saves it
    torch.save(state, tmp_path / "loop.pt")
    loaded, _ = load_model(tmp_path / "loop.pt", spec=spec)
    assert torch.equal(outputs(loaded, "classifier"), outputs(module, "classifier"))


def test_data_parallel_prefix_is_removed(tmp_path: Path) -> None:
    module, spec = build("encoder")
    torch.save({f"module.{k}": v for k, v in module.state_dict().items()}, tmp_path / "encoder.pth")
    loaded, _ = load_model(tmp_path / "encoder.pth", spec=spec)
    assert torch.equal(outputs(loaded, "encoder"), outputs(module, "encoder"))


def test_diffusers_unet_directory_loads(tmp_path: Path) -> None:
    module, _ = build("ddpm")
    module.save_pretrained(tmp_path / "unet")
    loaded, info = load_model(tmp_path / "unet")
    assert info["kind"] == "ddpm"
    assert list(info["unet_config"]["block_out_channels"]) == [8, 16]
    assert torch.equal(outputs(loaded, "ddpm"), outputs(module, "ddpm"))


def test_a_saved_diffusers_pipeline_loads_with_its_scheduler(tmp_path: Path) -> None:
    """A ``DDPMPipeline.save_pretrained`` directory (model_index.json, unet/, scheduler/) loads
    from its root or its unet/, with the pipeline's schedule, and both samplers build from it."""
    from diffusers import DDPMPipeline, DDPMScheduler

    module, _ = build("ddpm")
    schedule = DDPMScheduler(
        num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", variance_type="fixed_large"
    )
    DDPMPipeline(unet=module, scheduler=schedule).save_pretrained(tmp_path / "pipeline")
    for path in (tmp_path / "pipeline", tmp_path / "pipeline" / "unet"):
        loaded, info = load_model(path)
        assert torch.equal(outputs(loaded, "ddpm"), outputs(module, "ddpm"))
        assert info["scheduler_config"]["_class_name"] == "DDPMScheduler"
        for kind in ("ddpm", "ddim"):
            built = build_scheduler(info["scheduler_config"], kind)
            assert torch.equal(built.alphas_cumprod, schedule.alphas_cumprod)
        assert build_scheduler(info["scheduler_config"], "ddpm").config.variance_type == "fixed_large"
    assert build_scheduler(info["scheduler_config"], "ddim").config.set_alpha_to_one


@pytest.mark.parametrize("scheduler_name", ["PNDMScheduler", "DDIMScheduler", "EulerDiscreteScheduler"])
def test_schedulers_build_from_another_schedulers_config(scheduler_name: str) -> None:
    """A Stable-Diffusion-style config of another scheduler class (with keys such as
    skip_prk_steps, set_alpha_to_one, steps_offset) gives the same noise schedule."""
    import diffusers

    foreign = getattr(diffusers, scheduler_name)(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    config = dict(foreign.config)
    for kind in ("ddpm", "ddim"):
        built = build_scheduler(config, kind)
        assert torch.allclose(built.alphas_cumprod, foreign.alphas_cumprod)
        assert built.config.num_train_timesteps == 1000


def test_an_unknown_sampler_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown sampler 'euler'; allowed: ddpm, ddim"):
        build_scheduler(SCHEDULE, "euler")


def test_missing_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_model(tmp_path / "absent.pt", spec=SPECS["classifier"])


def test_unknown_checkpoint_suffix_is_refused(tmp_path: Path) -> None:
    module, spec = build("classifier")
    torch.save(module.state_dict(), tmp_path / "weights.txt")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load_model(tmp_path / "weights.txt", spec=spec)


@pytest.mark.parametrize("name", ["corrupt.pt", "corrupt.safetensors"])
def test_corrupt_checkpoint_is_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(os.urandom(512))
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_model(tmp_path / name, spec=SPECS["classifier"])


def test_weights_file_without_spec_is_refused(tmp_path: Path) -> None:
    module, _ = build("classifier")
    torch.save(module.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="spec of the architecture to build is required"):
        load_model(tmp_path / "weights.pt")


def test_state_dict_that_does_not_fit_the_architecture_is_refused(tmp_path: Path) -> None:
    module, _ = build("classifier")
    torch.save(module.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="does not fit the configured architecture"):
        load_model(tmp_path / "weights.pt", spec=classifier_spec(hidden=16))


@pytest.mark.parametrize("kind", ["classifier", "regressor", "oracle", "encoder", "ddpm"])
def test_a_model_directory_loads_with_the_spec_it_was_saved_with(tmp_path: Path, kind: str) -> None:
    """The job's spec (tuples, diffusers' private keys in any order) equals its JSON copy."""
    module, spec = build(kind)
    save_model(tmp_path / "model", module, spec)
    if kind == "ddpm":  # set order differs between processes
        spec["unet_config"]["_use_default_values"] = spec["unet_config"]["_use_default_values"][::-1]
    loaded, _ = load_model(tmp_path / "model", spec=spec)
    assert torch.equal(outputs(loaded, kind), outputs(module, kind))


def test_a_unet_config_of_another_diffusers_version_is_compared_on_the_keys_both_hold(
    tmp_path: Path,
) -> None:
    """A key only one diffusers version writes is no difference; a shared key that differs is."""
    module, spec = build("ddpm")
    save_model(tmp_path / "model", module, spec)
    newer = {**spec, "unet_config": {**spec["unet_config"], "a_key_of_a_newer_diffusers": 1}}
    load_model(tmp_path / "model", spec=newer)
    other = {**spec, "unet_config": {**spec["unet_config"], "layers_per_block": 3}}
    with pytest.raises(CheckpointError, match=r"unet_config\.layers_per_block: job 3"):
        load_model(tmp_path / "model", spec=other)


@pytest.mark.parametrize(
    ("change", "differing"),
    [
        ({"arch_params": {"channels": [4, 8]}}, "arch_params.hidden: job absent, checkpoint 8"),
        ({"arch_params": {**TINY_CNN, "hidden": 16}}, "arch_params.hidden: job 16, checkpoint 8"),
        ({"class_names": ["a", "c"]}, "class_names: job ['a', 'c'], checkpoint ['a', 'b']"),
        ({"in_channels": 3, "image_size": 32}, "image_size: job 32, checkpoint 16; in_channels: job 3"),
        ({"kind": "oracle"}, "kind: job 'oracle', checkpoint 'classifier'"),
    ],
)
def test_a_model_directory_that_differs_from_the_jobs_spec_is_refused(
    tmp_path: Path, change: dict, differing: str
) -> None:
    """The job would save the weights under its own spec, which does not rebuild them."""
    module, spec = build("classifier")
    save_model(tmp_path / "model", module, spec)
    with pytest.raises(CheckpointError) as refused:
        load_model(tmp_path / "model", spec={**spec, **change})
    assert str(tmp_path / "model") in str(refused.value) and differing in str(refused.value)


def test_a_diffusers_unet_that_does_not_fit_the_jobs_images_is_refused(tmp_path: Path) -> None:
    module, spec = build("ddpm")  # 1 channel, 8 px
    module.save_pretrained(tmp_path / "unet")
    loaded, info = load_model(tmp_path / "unet", spec={**spec, "unet_config": {}})
    assert info["unet_config"]["in_channels"] == 1 and torch.equal(
        outputs(loaded, "ddpm"), outputs(module, "ddpm")
    )
    with pytest.raises(CheckpointError) as refused:
        load_model(tmp_path / "unet", spec={**spec, "in_channels": 3, "image_size": 16})
    message = str(refused.value)
    assert str(tmp_path / "unet") in message
    assert (
        "image_size: job 16, checkpoint 8; in_channels: job 3, checkpoint 1; out_channels: job 3" in message
    )


def test_directory_without_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"without config\.json"):
        load_model(tmp_path / "empty")


class StateDict(collections.OrderedDict):
    """A dict subclass from outside torch: unpickling it needs arbitrary code, weights_only refuses it."""


def test_torch_checkpoint_with_pickled_python_objects_is_refused(tmp_path: Path) -> None:
    module, spec = build("classifier")
    torch.save(StateDict(module.state_dict()), tmp_path / "weights.pt")
    # the file holds a fitting state dict: only a full (unsafe) unpickling would accept it
    unsafe = torch.load(tmp_path / "weights.pt", weights_only=False)
    assert isinstance(unsafe, StateDict)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_model(tmp_path / "weights.pt", spec=spec)


# --------------------------------------------------------------------------- black box


@pytest.fixture
def classifier() -> torch.nn.Module:
    module, _ = build("classifier")
    return module


def test_blackbox_returns_probabilities(classifier: torch.nn.Module) -> None:
    probabilities = BlackBox(classifier)(inputs(1, 16, n=5))
    assert probabilities.shape == (5, 2)
    assert (probabilities >= 0).all()
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(5))


def test_blackbox_counts_images_queried(classifier: torch.nn.Module) -> None:
    blackbox = BlackBox(classifier, batch_size=2)
    blackbox(inputs(1, 16, n=5))
    blackbox.predict(inputs(1, 16, n=3))
    assert blackbox.queries == 8


def test_blackbox_refuses_inputs_that_require_gradients(classifier: torch.nn.Module) -> None:
    blackbox = BlackBox(classifier)
    with pytest.raises(GradientRefused):
        blackbox(inputs(1, 16).requires_grad_(True))
    assert blackbox.queries == 0


def test_blackbox_output_carries_no_gradient(classifier: torch.nn.Module) -> None:
    assert any(p.requires_grad for p in classifier.parameters())
    probabilities = BlackBox(classifier)(inputs(1, 16))
    assert not probabilities.requires_grad
    assert probabilities.grad_fn is None


@pytest.mark.parametrize("variants", [None, 3])
def test_train_ddpm_passes_each_image_its_own_condition_and_drops_the_asked_fraction(variants) -> None:
    """Image i is constant i/100 and its condition is 10·i (+ v for variant v of V); a dropped
    condition is −1 (the null). With variants, every variant of the images is drawn."""
    seen = {"aligned": 0, "dropped": 0, "total": 0, "variants": set()}

    def output(network, x_t, t, x0, condition):
        values = torch.round(x0.mean(dim=(1, 2, 3)) * 100).long()
        kept = condition[:, 0] >= 0
        seen["aligned"] += int((condition[kept, 0] // 10 == values[kept]).sum())
        seen["variants"].update((condition[kept, 0] % 10).tolist())
        seen["dropped"] += int((~kept).sum())
        seen["total"] += len(condition)
        return network(x_t, t).sample

    unet = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,), norm_num_groups=4,
        down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), layers_per_block=1,
    )  # fmt: skip
    images = torch.arange(50, dtype=torch.float32).view(-1, 1, 1, 1).expand(50, 1, 8, 8) / 100
    params = {
        "steps": 30, "batch_size": 16, "lr": 1e-4, "warmup_steps": 1, "ema_decay": 0.9, "grad_clip": 1.0,
        "hflip": False, "checkpoint_every": 1000, "min_snr_gamma": None, "condition_dropout": 0.25,
    }  # fmt: skip
    conditions = 10 * torch.arange(50).view(-1, 1)
    if variants:
        conditions = (conditions.view(-1, 1, 1) + torch.arange(variants).view(1, -1, 1)).contiguous()
    train_ddpm(
        unet, SCHEDULE, images, params, CPU, torch.Generator().manual_seed(0), output=output,
        conditions=conditions, null_condition=torch.tensor([-1]), condition_variants=bool(variants),
    )  # fmt: skip
    assert seen["total"] == 30 * 16
    assert seen["aligned"] + seen["dropped"] == seen["total"]
    assert 0.15 < seen["dropped"] / seen["total"] < 0.35
    assert seen["variants"] == set(range(variants or 1))


def constant_eps(t: int) -> float:
    """ε̂ of :class:`ConstantNoise`: −3 at the first of two DDIM steps (x̂0 leaves [−1, 1]), 0 at
    the last (x̂0 = x / sqrt(ᾱ), in range: what the first step passed on shows)."""
    return -3.0 if t >= 50 else 0.0


class ConstantNoise(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, t: torch.Tensor):
        return type("Output", (), {"sample": torch.full_like(x, constant_eps(int(t)))})()


@pytest.mark.parametrize("clip", [True, False])
def test_ddim_sampling_steps_with_the_noise_of_the_clipped_estimate_and_ends_in_range(clip: bool) -> None:
    """DDIM (η = 0): x_prev = sqrt(ᾱ_prev) x̂0 + sqrt(1 − ᾱ_prev) ε', where with clipping x̂0 is
    clipped and ε' re-derived from it, ε' = (x − sqrt(ᾱ) x̂0)/sqrt(1 − ᾱ) (as guided-diffusion);
    the returned samples lie in [−1, 1] even when the model samples unclipped."""
    config = {**SCHEDULE, "clip_sample": clip}
    generator = torch.Generator().manual_seed(0)
    images, _ = sample(ConstantNoise(), config, 2, (1, 4, 4), 2, "ddim", generator, progress=False)
    scheduler = build_scheduler(config, "ddim")
    scheduler.set_timesteps(2)
    x = per_sample_noise(per_sample_generators(torch.Generator().manual_seed(0), 2), (1, 4, 4))
    timesteps = scheduler.timesteps.tolist()
    for index, t in enumerate(timesteps):
        alpha = scheduler.alphas_cumprod[t]
        previous = (
            scheduler.alphas_cumprod[timesteps[index + 1]]
            if index + 1 < len(timesteps)
            else scheduler.final_alpha_cumprod
        )
        eps = torch.full_like(x, constant_eps(t))
        x0 = (x - (1 - alpha).sqrt() * eps) / alpha.sqrt()
        if clip:
            x0 = x0.clamp(-1, 1)
            eps = (x - alpha.sqrt() * x0) / (1 - alpha).sqrt()
        x = previous.sqrt() * x0 + (1 - previous).sqrt() * eps
    torch.testing.assert_close(images, x.clamp(-1, 1), rtol=1e-4, atol=1e-4)
    assert images.min() >= -1 and images.max() <= 1
    assert timesteps == [50, 0] and ((x.abs() > 1).any() != clip)  # unclipped, the chain leaves the range


def test_the_black_box_predicts_the_argmax_in_eval_mode_and_in_batches() -> None:
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(4, 3)).train()
    rows: list[int] = []
    network.register_forward_hook(lambda module, inputs, output: rows.append(len(inputs[0])))
    blackbox = BlackBox(network, batch_size=2)
    assert not network.training  # dropout off: the same image gets the same answer
    images = torch.randn(5, 1, 2, 2)
    predicted = blackbox.predict(images)
    assert max(rows) <= 2 and torch.equal(predicted, network(images).argmax(1))
