"""Training jobs called directly: the subset they train on and the checkpoints they accept."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from diffusers import UNet2DModel

from diffxai.config.load import ConfigError, validate_config
from diffxai.data.prepared import PreparedData
from diffxai.jobs import train_ddpm, train_diffae, train_encoder, train_supervised
from diffxai.jobs.model_job import ModelJob
from diffxai.models.ddpm import scheduler_config
from diffxai.models.diffae import build_diffae
from diffxai.models.io import CheckpointError, build_module, load_model, save_model
from tests.workflow_helpers import REPO

CPU = torch.device("cpu")


def job(store, out, name: str, cfg: dict, checkpoint=None) -> ModelJob:
    """The job of model ``name`` on the ellipses (seed 3), from ``checkpoint`` when given."""
    cfg = cfg if checkpoint is None else {**cfg, "checkpoint": str(checkpoint)}
    return ModelJob(store, out, name, "ellipses", cfg, 3, CPU)


def test_the_encoder_trains_on_the_random_subset_of_its_seed(
    tmp_path, tiny_config, ellipses_store, monkeypatch
):
    """``max_train_samples`` draws the encoder's images as the supervised jobs do, not the first rows."""
    seen = {}

    def spy(model, images, params, device, generator):
        seen["images"] = images.clone()
        return train_simsiam(model, images, {**params, "epochs": 1}, device, generator)

    train_simsiam = train_encoder.train_simsiam
    monkeypatch.setattr(train_encoder, "train_simsiam", spy)
    cfg = tiny_config["models"]["encoder"]
    train_encoder.run(
        job(ellipses_store, tmp_path, "encoder", {**cfg, "train": {**cfg["train"], "max_train_samples": 16}})
    )
    data = PreparedData(ellipses_store)
    assert torch.equal(seen["images"], torch.from_numpy(data.array("images")[data.subset("train", 16, 3)]))


def test_the_schema_refuses_an_encoder_subset_simsiam_cannot_train_on(tiny_config):
    config = copy.deepcopy(tiny_config)
    config["models"]["encoder"]["train"]["max_train_samples"] = 1
    with pytest.raises(ConfigError, match="max_train_samples"):
        validate_config(config, REPO)
    config["models"]["encoder"]["train"]["max_train_samples"] = 2
    assert validate_config(config, REPO)["models"]["encoder"]["train"]["max_train_samples"] == 2


def test_a_model_directory_checkpoint_must_be_the_jobs_architecture(tmp_path, tiny_config, ellipses_store):
    """Loaded by its own config.json, then saved under the job's spec, another architecture gave
    an output that does not reload; it is refused, and a fitting one gives a reloadable output."""
    cfg = tiny_config["models"]["classifier"]
    spec = train_supervised.model_spec("classifier", cfg, PreparedData(ellipses_store))
    other = {**spec, "arch_params": {"hidden": 8}}
    save_model(tmp_path / "other", build_module(other), other)
    save_model(tmp_path / "same", build_module(spec), spec)
    refused = r"other does not fit .*arch_params\.hidden: job absent, checkpoint 8"
    with pytest.raises(CheckpointError, match=refused):
        train_supervised.run(job(ellipses_store, tmp_path / "out", "classifier", cfg, tmp_path / "other"))
    train_supervised.run(job(ellipses_store, tmp_path / "out", "classifier", cfg, tmp_path / "same"))
    assert load_model(tmp_path / "out")[1]["arch_params"] == spec["arch_params"]


def test_a_diffusers_unet_checkpoint_must_take_the_datas_images(tmp_path, tiny_config, ellipses_store):
    """The data: one channel, 16 px; a 3-channel 64 px UNet was saved as a 1-channel 16 px DDPM."""
    UNet2DModel(
        sample_size=64, in_channels=3, out_channels=3, block_out_channels=(8, 16), norm_num_groups=4,
        layers_per_block=1, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
    ).save_pretrained(tmp_path / "unet")  # fmt: skip
    refused = "image_size: job 16, checkpoint 64; in_channels: job 1, checkpoint 3"
    with pytest.raises(CheckpointError, match=refused):
        train_ddpm.run(
            job(ellipses_store, tmp_path / "out", "ddpm", tiny_config["models"]["ddpm"], tmp_path / "unet"),
            tmp_path / "cache",
        )


def test_a_diffae_directory_checkpoint_must_have_the_jobs_schedule(tmp_path, tiny_config, ellipses_store):
    """Its own prediction type was replaced by the job's: the saved model sampled wrongly."""
    cfg = {k: v for k, v in tiny_config["models"]["diffae"].items() if k not in ("datasets", "latents")}
    model, spec = build_diffae(cfg, 1, 16)
    info = {
        "kind": "diffae",
        "in_channels": 1,
        "image_size": 16,
        **spec,
        "scheduler_config": scheduler_config(cfg["schedule"]),
    }
    save_model(tmp_path / "user", model, info)
    prediction = "epsilon" if cfg["schedule"]["prediction_type"] == "v_prediction" else "v_prediction"
    other = {**cfg, "schedule": {**cfg["schedule"], "prediction_type": prediction}}
    with pytest.raises(CheckpointError, match=f"scheduler_config.prediction_type: job '{prediction}'"):
        train_diffae.run(job(ellipses_store, tmp_path / "out", "diffae", other, tmp_path / "user"), tmp_path)
    train_diffae.run(job(ellipses_store, tmp_path / "out", "diffae", cfg, tmp_path / "user"), tmp_path)
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (
        saved["scheduler_config"]
        == json.loads((tmp_path / "user" / "config.json").read_text())["scheduler_config"]
    )
