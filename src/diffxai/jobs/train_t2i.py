"""Job ``train_t2i``: TIME's text-to-image model, trained from scratch on captioned data or loaded
from a local Stable Diffusion directory (``checkpoint:``).

From scratch: a pixel-space diffusers ``UNet2DConditionModel`` and a small ``CLIPTextModel``
trained jointly with the DDPM recipe (loss, EMA, resumable checkpoints) on captions built from
the data's ground truth: several captions per image, each in a random phrasing and, with
``phrase_dropout``, naming a random subset of its factors (``captions``;
:func:`data.captions.caption_variants`). Captions are replaced by the empty prompt with
probability ``caption_dropout`` so classifier-free guidance has an unconditional model.
Pixel space because the images are 32 px: an autoencoder would add a training stage and a
reconstruction error that every counterfactual then carries, to save compute that a 32 px
UNet does not need.

metrics.json, on data with ellipse captions: for each elongation word of the captions, the
moment-measured aspect ratio of images sampled with it (classifier-free guidance), to show the
text reaches the images. Other captions (attributes) have no such measure here: no check.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from diffxai.data.captions import caption_variants, caption_words, dataset_captions, describes_ellipses
from diffxai.data.measure import binarise, mask_moments
from diffxai.data.prepared import PreparedData
from diffxai.diffusion.sampling import sample
from diffxai.jobs.model_job import ModelJob
from diffxai.jobs.train_ddpm import resume_checkpoint
from diffxai.models.t2i import TextToImage, build_text_to_image
from diffxai.paths import resolve
from diffxai.training.diffusion import train_ddpm
from diffxai.training.supervised import to_m11

log = logging.getLogger(__name__)
MODULES = ["diffxai.jobs.train_t2i"]
# captions as in training (medium size, centred, horizontal), differing only in elongation
CHECK_PROMPTS = (
    "a medium round ellipse, horizontal, center",
    "a medium oval ellipse, horizontal, center",
    "a medium elongated ellipse, horizontal, center",
)


def text_output(network: TextToImage, x_t, t, x0, condition):
    """The text-conditioned UNet's output at (x_t, t) for token ids ``condition`` (B, L)."""
    return network(x_t, t, condition)


class PromptedDenoiser(torch.nn.Module):
    """``forward(x, t)`` → an object with ``.sample``: the classifier-free guided output of ``model``
    for one prompt, (1 + w)·out(prompt) − w·out(""), so the unconditional samplers can run it."""

    def __init__(self, model: TextToImage, prompt: str, guidance: float) -> None:
        super().__init__()
        self.model = model
        self.ids = model.token_ids([prompt, ""])
        self.guidance = guidance

    def forward(self, x: torch.Tensor, t: torch.Tensor):
        ids = self.ids.to(x.device)
        both = torch.cat([ids[:1].expand(len(x), -1), ids[1:].expand(len(x), -1)])
        conditional, unconditional = self.model(torch.cat([x, x]), t, both).chunk(2)
        return SimpleNamespace(sample=(1 + self.guidance) * conditional - self.guidance * unconditional)


@torch.no_grad()
def prompt_check(
    model: TextToImage, settings: dict[str, Any], seed: int, device: torch.device
) -> dict[str, Any]:
    """Median moment-measured aspect ratio (and its IQR) of samples per check prompt (the
    channel mean binarised)."""
    shape = (model.unet.config.in_channels, model.unet.config.sample_size, model.unet.config.sample_size)
    result = {}
    for prompt in CHECK_PROMPTS:
        images, _ = sample(
            PromptedDenoiser(model, prompt, settings["guidance"]).eval(), model.scheduler_config,
            settings["samples"], shape, settings["steps"], "ddim",
            torch.Generator().manual_seed(seed), device=device,
        )  # fmt: skip
        aspect = mask_moments(binarise((images.mean(dim=1).numpy() + 1) / 2))["aspect_ratio"]
        result[prompt] = {
            "median_aspect_ratio": float(np.nanmedian(aspect)),
            "iqr_aspect_ratio": [float(v) for v in np.nanquantile(aspect, [0.25, 0.75])],
            "empty_fraction": float(np.isnan(aspect).mean()),
        }
    return result


def training_captions(
    data: PreparedData, indices: np.ndarray, settings: dict[str, Any], seed: int
) -> list[list[str]]:
    """The ``settings["variants"]`` training captions of each image in ``indices`` (config ``captions``)."""
    rng = np.random.default_rng(seed)
    variants = caption_variants(
        data, settings["variants"], settings["phrase_dropout"], settings["templates"], rng
    )
    return [variants[i] for i in indices]


def run(job: ModelJob, cache_dir: str | Path) -> dict[str, Any]:
    """Train (or load) the text-to-image model; returns its config.json record."""
    cfg, data = job.model_cfg, job.data
    captions = dataset_captions(data)
    train = data.indices("train")
    if job.checkpoint:  # a local Stable Diffusion (diffusers layout) directory
        model = TextToImage.load(resolve(job.checkpoint, job.base_dir))
        history: dict[str, Any] = {}
    else:
        torch.manual_seed(job.seed)
        variants = training_captions(data, train, cfg["captions"], job.seed)
        flat = [caption for row in variants for caption in row]
        model = build_text_to_image(
            caption_words(captions + flat),
            data.image_size[0], data.channels, {**cfg["network"], **cfg["schedule"]},
        )  # fmt: skip
        model.check_fits(flat, f"models.{job.model_name}.network.max_length")
        images = to_m11(torch.from_numpy(data.array("images")[train]))
        token_ids = model.token_ids(flat)
        token_ids = token_ids.view(len(train), cfg["captions"]["variants"], -1)
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        train_params = {**cfg["train"], "condition_dropout": cfg["caption_dropout"]}
        model, history = train_ddpm(
            model, model.scheduler_config, images, train_params, job.device,
            torch.Generator().manual_seed(job.seed),
            checkpoint=resume_checkpoint(cache_dir, job, MODULES), output=text_output,
            conditions=token_ids, null_condition=model.token_ids([""])[0], condition_variants=True,
        )  # fmt: skip
    info = model.spec()
    info["training"] = history
    metrics: dict[str, Any] = {"example_captions": captions[:5]}
    if describes_ellipses(data):
        metrics["prompt_check"] = prompt_check(model.to(job.device), cfg["check"], job.seed, job.device)
    if not job.checkpoint:
        metrics["example_training_captions"] = variants[0]
    job.save(model, info, MODULES, metrics)
    return info
