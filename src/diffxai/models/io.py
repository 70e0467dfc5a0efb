"""Model directories and the one loader for every model.

A model directory written by this pipeline holds ``model.safetensors`` (weights),
``config.json`` (everything needed to rebuild the module: kind, architecture,
shapes, names, provenance) and ``metrics.json``. :func:`load_model` also accepts a
user's checkpoint: a diffusers ``UNet2DModel`` directory (alone or in a saved pipeline,
with the pipeline's scheduler config), or a ``.safetensors`` /
torch state-dict file together with a ``spec`` saying what to build. Torch files
are read with ``weights_only=True`` only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from diffxai.models.encoder import SimSiam
from diffxai.models.heads import AttributeOracle, Classifier, Regressor
from diffxai.models.registry import create_network

log = logging.getLogger(__name__)

FORMAT = "diffxai-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
PIPELINE_INDEX = "model_index.json"
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


class _Absent:
    """A key one side of a comparison lacks, shown as ``absent``."""

    def __repr__(self) -> str:
        return "absent"


ABSENT = _Absent()
# configs a library writes (diffusers, transformers): their key sets follow the library's version,
# so only the keys both sides hold are compared
LIBRARY_CONFIGS = ("unet_config", "scheduler_config", "text_config", "vae_config")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, of unknown format, or does not fit."""


def build_module(info: dict[str, Any]) -> nn.Module:
    """An untrained module of the kind and shapes described by ``info`` (a config.json)."""
    kind = info["kind"]
    if kind == "ddpm":
        from diffusers import UNet2DModel

        return UNet2DModel.from_config(info["unet_config"])
    if kind == "diffae":
        from diffxai.models.diffae import diffae_from_info

        return diffae_from_info(info)
    if kind == "encoder":
        return SimSiam(info["in_channels"], info["width"], info["feature_dim"])
    if kind == "t2i":
        from diffxai.models.t2i import t2i_from_info

        return t2i_from_info(info)
    outputs = {
        "classifier": len(info.get("class_names", [])),
        "regressor": 1,
        "oracle": len(info.get("attribute_names", [])),
    }
    if kind not in outputs:
        raise CheckpointError(
            f"unknown model kind {kind!r}; allowed: classifier, regressor, oracle, encoder, ddpm, diffae, t2i"
        )
    network = create_network(
        info["arch"], info["in_channels"], info["image_size"], outputs[kind], info.get("arch_params")
    )
    if kind == "classifier":
        return Classifier(network, info["class_names"])
    if kind == "regressor":
        return Regressor(network, info["target"])
    return AttributeOracle(network, info["attribute_names"])


def save_model(directory: str | os.PathLike, module: nn.Module, info: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (metrics.json is written by the caller)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, directory / WEIGHTS)
    record = {"format": FORMAT, "format_version": FORMAT_VERSION, **info}
    (directory / CONFIG).write_text(json.dumps(record, indent=2, default=str))
    return directory


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        if path.suffix in TORCH_SUFFIXES:
            # timm's train.py also pickles its argparse arguments: plain values, safe to allow
            with torch.serialization.safe_globals([argparse.Namespace]):
                state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise CheckpointError(
                f"{path}: unknown checkpoint format; allowed: a model directory, .safetensors, "
                + ", ".join(TORCH_SUFFIXES)
            )
    except CheckpointError:
        raise
    except Exception as error:  # corrupt files raise many types; report them as one
        raise CheckpointError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}") from error
    # common wrappers (Lightning, timm, training loops); a loop's checkpoint with both the raw and
    # the EMA weights gives the EMA ones, which it samples and evaluates with
    for key in ("ema", "state_dict_ema", "model_ema", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            log.info("checkpoint %s: the weights under %r", path, key)
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_state(module: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load into the wrapper, or into its ``network`` when the file holds a bare network."""
    target = module
    if hasattr(module, "network") and not any(k.startswith("network.") for k in state):
        target = module.network
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"checkpoint {source} does not fit the configured architecture: {error}"
        ) from error


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """A JSON value as {dotted key: leaf}, without diffusers' private (``_``) keys."""
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if not str(key).startswith("_"):
            flat.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _check_fits(path: Path, spec: dict[str, Any], info: dict[str, Any]) -> None:
    """Refuse a checkpoint whose ``info`` differs from the job's ``spec`` in a key the spec
    states: the job would save the weights under a config that does not rebuild them."""
    as_json = json.loads(json.dumps([spec, {key: info.get(key) for key in spec}], default=str))
    wanted, found = map(_flat, as_json)
    keys = [
        key
        for key in sorted(wanted.keys() | found.keys())
        if key.split(".")[0] not in LIBRARY_CONFIGS or (key in wanted and key in found)
    ]
    differing = [
        f"{key}: job {wanted.get(key, ABSENT)!r}, checkpoint {found.get(key, ABSENT)!r}"
        for key in keys
        if wanted.get(key, ABSENT) != found.get(key, ABSENT)
    ]
    if differing:
        raise CheckpointError(
            f"checkpoint {path} does not fit this job's data and model config "
            f"({'; '.join(differing)}): set the config to the checkpoint's, or use another checkpoint"
        )


def _check_unet_fits(path: Path, spec: dict[str, Any], unet_config: dict[str, Any]) -> None:
    """Refuse a diffusers UNet that does not take and predict the job's images (channels, side)."""
    size = unet_config.get("sample_size")
    if isinstance(size, list | tuple) and len(set(size)) == 1:  # a square (H, W)
        size = size[0]
    wanted = {
        "kind": spec["kind"],
        "in_channels": spec.get("in_channels"),
        "out_channels": spec.get("in_channels"),
        "image_size": spec.get("image_size"),
    }
    found = {
        "kind": "ddpm",
        "in_channels": unet_config.get("in_channels"),
        "out_channels": unet_config.get("out_channels"),
        "image_size": size,
    }
    _check_fits(path, wanted, found)


def _load_diffusers_unet(directory: Path) -> tuple[nn.Module, dict[str, Any]]:
    from diffusers import UNet2DModel

    try:
        unet = UNet2DModel.from_pretrained(directory)
    except Exception as error:  # diffusers raises OSError/ValueError/EnvironmentError variants
        raise CheckpointError(f"cannot load diffusers UNet from {directory}: {error}") from error
    info: dict[str, Any] = {"kind": "ddpm", "unet_config": dict(unet.config)}
    scheduler = directory / "scheduler_config.json"
    if not scheduler.exists():
        scheduler = directory.parent / "scheduler" / "scheduler_config.json"
    if scheduler.exists():
        info["scheduler_config"] = json.loads(scheduler.read_text())
    return unet, info


def load_model(
    path: str | os.PathLike, spec: dict[str, Any] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model in eval mode and its info dict.

    ``path``: a directory this pipeline wrote, a diffusers UNet directory (or the
    directory of a saved diffusers pipeline, whose ``unet/`` it loads), or a weights file;
    for a weights file ``spec`` (the info dict of the module to build) is required. Given a
    ``spec``, a directory of this pipeline must agree with every key it states, and a diffusers
    UNet with its kind, channels and image size; :class:`CheckpointError` names the differences.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if path.is_dir():
        if (path / PIPELINE_INDEX).exists() and not (path / CONFIG).exists():
            path = path / "unet"  # a saved diffusers pipeline (DDPMPipeline, DDIMPipeline): its UNet
        config_path = path / CONFIG
        if not config_path.exists():
            raise CheckpointError(f"{path} is a directory without {CONFIG}: not a model directory")
        try:
            info = json.loads(config_path.read_text())
        except json.JSONDecodeError as error:
            raise CheckpointError(f"{config_path} is not valid JSON: {error}") from error
        if info.get("format") == FORMAT:
            if info.get("format_version") != FORMAT_VERSION:
                raise CheckpointError(
                    f"{path}: model format version {info.get('format_version')}, expected {FORMAT_VERSION}"
                )
            if spec:
                _check_fits(path, spec, info)
            module = build_module(info)
            _load_state(module, _read_state(path / WEIGHTS), path / WEIGHTS)
            return module.eval(), info
        if info.get("_class_name") == "UNet2DModel":
            module, info = _load_diffusers_unet(path)
            if spec:
                _check_unet_fits(path, spec, info["unet_config"])
                info = {**spec, **info}
            return module.eval(), info
        raise CheckpointError(f"{path}: {CONFIG} is neither a diffxai model nor a diffusers UNet2DModel")
    if spec is None:
        raise CheckpointError(f"{path} is a weights file: a spec of the architecture to build is required")
    module = build_module(spec)
    _load_state(module, _read_state(path), path)
    return module.eval(), dict(spec)
