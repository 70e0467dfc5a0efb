"""A text-to-image diffusion model (UNet + CLIP text encoder + tokenizer), for TIME.

:class:`TextToImage` bundles a diffusers ``UNet2DConditionModel`` noise predictor,
a transformers ``CLIPTextModel`` and its tokenizer, a DDPM-style scheduler config and
optionally an ``AutoencoderKL`` (latent diffusion). It is either built from scratch
(:func:`build_text_to_image`: a small pixel-space model over a word-level vocabulary
made from the dataset's captions) or read from a local directory in the diffusers /
Stable Diffusion layout (``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``,
optional ``vae/``), which is also the layout :meth:`TextToImage.save` writes.

Textual inversion: :func:`add_concept_tokens` adds new tokens, :func:`trainable_token_rows`
makes only their embedding rows trainable, and :func:`token_embeddings` /
:func:`set_token_embeddings` move the learned rows to another copy of the model.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from torch import nn
from transformers import (
    AutoTokenizer,
    CLIPTextConfig,
    CLIPTextModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from diffxai.models.ddpm import scheduler_config

# pad, unk, bos, eos get ids 0..3. Keep eos ≠ 2: CLIPTextModel treats eos_token_id == 2
# as a legacy config and pools at the largest token id instead of at the first eos.
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
SPECIAL_TOKEN_NAMES = ("pad_token", "unk_token", "bos_token", "eos_token")
# punctuation kept as its own token (captions separate their phrases with commas)
PUNCTUATION = (",",)

# Architecture of a from-scratch model (``params`` of :func:`build_text_to_image`):
# text encoder width / layers / heads and prompt length in tokens (incl. bos, eos);
# UNet blocks (``attention_head_dim`` is, as in diffusers and Stable Diffusion, the
# NUMBER of attention heads per cross-attention block, not their width); DDPM schedule.
DEFAULTS: dict[str, Any] = {
    "text_width": 64,
    "text_layers": 2,
    "text_heads": 2,
    "max_length": 16,
    "block_out_channels": (16, 32, 64),
    "layers_per_block": 1,
    "cross_attention": (False, False, True),
    "text_time_embedding": True,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
}


class TextToImage(nn.Module):
    """A text-conditioned noise predictor, its text encoder and tokenizer, and optionally a VAE.

    An ``nn.Module`` (unet, text_encoder, vae are submodules) so that the pipeline's model
    directories, EMA and checkpoints treat it like any model; ``forward(x_t, t, token_ids)`` is
    the UNet output for token ids (N, L), the training-time call.
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        text_encoder: CLIPTextModel,
        tokenizer: PreTrainedTokenizerBase,
        scheduler_config: dict[str, Any],
        vae: AutoencoderKL | None = None,  # None: the UNet works in pixel space
    ) -> None:
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder
        self.vae = vae
        self.tokenizer = tokenizer
        self.scheduler_config = dict(scheduler_config)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """(N, c, h, w) UNet output at (x_t, t) for prompts given as token ids (N, L)."""
        hidden = self.text_encoder(input_ids=token_ids).last_hidden_state
        return self.unet(x_t, t, encoder_hidden_states=hidden).sample

    def spec(self) -> dict[str, Any]:
        """The config.json record that rebuilds this model (:func:`t2i_from_info`): the UNet, text
        encoder and VAE configs, the tokenizer (its JSON, added tokens included) and the schedule."""
        tokenizer = self.tokenizer
        return {
            "kind": "t2i",
            "unet_config": dict(self.unet.config),
            "text_config": self.text_encoder.config.to_dict(),
            "vae_config": dict(self.vae.config) if self.vae is not None else None,
            "tokenizer": tokenizer.backend_tokenizer.to_str(),
            "special_tokens": {
                name: getattr(tokenizer, name)
                for name in ("pad_token", "unk_token", "bos_token", "eos_token")
            },
            "model_max_length": tokenizer.model_max_length,
            "scheduler_config": self.scheduler_config,
        }

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        """(N, L) long token ids, padded / truncated to L = ``tokenizer.model_max_length``."""
        return self.tokenizer(
            prompts,
            padding="max_length",
            truncation=True,
            max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids

    def _with_tokens(self, new_tokens: list[str]) -> PreTrainedTokenizerBase:
        """The tokenizer, or a copy of it with ``new_tokens`` added (as textual inversion adds them)."""
        if not new_tokens:
            return self.tokenizer
        tokenizer = copy.deepcopy(self.tokenizer)
        tokenizer.add_tokens(list(new_tokens))
        return tokenizer

    def check_fits(self, prompts: list[str], key: str, new_tokens: list[str] = ()) -> None:
        """Raise ValueError naming config ``key`` when a prompt has more tokens (BOS and EOS
        included) than ``tokenizer.model_max_length``: :meth:`token_ids` would cut it silently.
        ``new_tokens``: count them as single tokens, as once they are added (textual inversion)."""
        if not prompts:
            return
        tokenizer = self._with_tokens(new_tokens)
        length, prompt = max(
            (len(ids), p) for ids, p in zip(tokenizer(prompts).input_ids, prompts, strict=True)
        )
        if length > self.tokenizer.model_max_length:
            raise ValueError(
                f"{key} = {self.tokenizer.model_max_length} is too short: {prompt!r} has {length} "
                f"tokens; allowed: {key} >= {length}"
            )

    def unknown_words(self, prompts: list[str], new_tokens: list[str] = ()) -> list[str]:
        """Words of ``prompts`` (split on whitespace) that the tokenizer maps to its unknown token:
        an embedding row no training ever updated. ``new_tokens`` count as known."""
        tokenizer = self._with_tokens(new_tokens)
        unk = tokenizer.unk_token_id
        if unk is None:
            return []
        words = dict.fromkeys(word for prompt in prompts for word in prompt.split())
        return [w for w in words if unk in tokenizer(w, add_special_tokens=False).input_ids]

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """(N, L, D) last hidden states of the text encoder (differentiable, no mask: as in SD)."""
        ids = self.token_ids(prompts).to(self.text_encoder.device)
        return self.text_encoder(input_ids=ids).last_hidden_state

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the model makes: the UNet's input size, times the VAE's
        downsampling (2 per block after the first) where there is one."""
        size = self.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        if self.vae is None:
            return self.unet.config.in_channels, height, width
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return self.vae.config.in_channels, height * factor, width * factor

    def to_latent(self, images_m11: torch.Tensor) -> torch.Tensor:
        """(N, c, h, w) UNet inputs for (N, C, H, W) images in [-1, 1]: the scaled VAE posterior mean."""
        if self.vae is None:
            return images_m11
        return self.vae.encode(images_m11).latent_dist.mean * self.vae.config.scaling_factor

    def from_latent(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images (≈ [-1, 1]) for (N, c, h, w) UNet inputs."""
        if self.vae is None:
            return latents
        return self.vae.decode(latents / self.vae.config.scaling_factor).sample

    def eps(
        self, latents: torch.Tensor, timestep: int | torch.Tensor, hidden_states: torch.Tensor
    ) -> torch.Tensor:
        """(N, c, h, w) UNet output for (N, c, h, w) inputs and (N, L, D) prompt encodings."""
        return self.unet(latents, timestep, encoder_hidden_states=hidden_states).sample

    def save(self, directory: str | Path) -> Path:
        """Write ``directory`` in the diffusers layout (one ``save_pretrained`` per part)."""
        directory = Path(directory)
        self.unet.save_pretrained(directory / "unet")
        self.text_encoder.save_pretrained(directory / "text_encoder")
        self.tokenizer.save_pretrained(directory / "tokenizer")
        if self.vae is not None:
            self.vae.save_pretrained(directory / "vae")
        (directory / "scheduler").mkdir(parents=True, exist_ok=True)
        config_text = json.dumps(self.scheduler_config, indent=2, sort_keys=True)
        (directory / "scheduler" / "scheduler_config.json").write_text(config_text + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> TextToImage:
        """Read a directory in the diffusers layout (ours or a local Stable Diffusion 1/2), no downloads."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"no text-to-image model directory at {directory}")
        vae_dir = directory / "vae"
        text_encoder = CLIPTextModel.from_pretrained(directory / "text_encoder", local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(directory / "tokenizer", local_files_only=True)
        # a tokenizer_config.json without model_max_length leaves transformers' "unlimited" (1e30):
        # prompts are then padded to the text encoder's positions
        positions = text_encoder.config.max_position_embeddings
        tokenizer.model_max_length = min(tokenizer.model_max_length, positions)
        return cls(
            unet=UNet2DConditionModel.from_pretrained(directory / "unet", local_files_only=True),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            scheduler_config=json.loads((directory / "scheduler" / "scheduler_config.json").read_text()),
            vae=AutoencoderKL.from_pretrained(vae_dir, local_files_only=True) if vae_dir.is_dir() else None,
        )


def t2i_from_info(info: dict[str, Any]) -> TextToImage:
    """An untrained model of the shapes in a :meth:`TextToImage.spec` record (weights loaded after)."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(info["tokenizer"]),
        model_max_length=info["model_max_length"],
        **info["special_tokens"],
    )
    vae = AutoencoderKL.from_config(info["vae_config"]) if info.get("vae_config") else None
    return TextToImage(
        UNet2DConditionModel.from_config(info["unet_config"]),
        CLIPTextModel(CLIPTextConfig.from_dict(info["text_config"])),
        tokenizer,
        info["scheduler_config"],
        vae,
    )


def build_tokenizer(words: list[str], max_length: int = 16) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``words`` (lowercased), wrapping every prompt in <bos> ... <eos>.

    Prompts are lowercased and split on whitespace; each comma is its own token (in the
    vocabulary), other punctuation stays part of its word. Unknown words map to <unk>.
    Tokens added later (``tokenizer.add_tokens``) are matched as whole tokens first.
    """
    vocab_words = list(SPECIAL_TOKENS) + list(PUNCTUATION)
    vocab_words += sorted({word.lower() for word in words} - set(vocab_words))
    vocab = {word: index for index, word in enumerate(vocab_words)}
    pad, unk, bos, eos = SPECIAL_TOKENS
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    backend.normalizer = normalizers.Lowercase()
    splits = [pre_tokenizers.Split(mark, behavior="isolated") for mark in PUNCTUATION]
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), *splits])
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=pad,
        unk_token=unk,
        bos_token=bos,
        eos_token=eos,
        model_max_length=max_length,
    )


def build_text_encoder(tokenizer: PreTrainedTokenizerBase, params: dict[str, Any]) -> CLIPTextModel:
    """An untrained CLIP text transformer over ``tokenizer``'s vocabulary."""
    width = params["text_width"]
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=params["text_layers"],
        num_attention_heads=params["text_heads"],
        max_position_embeddings=tokenizer.model_max_length,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return CLIPTextModel(config)


def build_conditional_unet(params: dict[str, Any], channels: int, image_size: int) -> UNet2DConditionModel:
    """An untrained cross-attention UNet for (channels, image_size, image_size) inputs; level i has
    cross-attention to the text when ``params["cross_attention"][i]``. With
    ``params["text_time_embedding"]`` the text is also attention-pooled into the timestep
    embedding (diffusers' ``addition_embed_type="text"``), so it conditions every level, the
    ones without cross-attention included."""
    attention = list(params["cross_attention"])
    if len(attention) != len(params["block_out_channels"]):
        raise ValueError(f"cross_attention {attention}: one per level of {params['block_out_channels']}")
    return UNet2DConditionModel(
        sample_size=image_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(params["block_out_channels"]),
        down_block_types=tuple("CrossAttnDownBlock2D" if cross else "DownBlock2D" for cross in attention),
        up_block_types=tuple("CrossAttnUpBlock2D" if cross else "UpBlock2D" for cross in reversed(attention)),
        layers_per_block=params["layers_per_block"],
        cross_attention_dim=params["text_width"],
        attention_head_dim=params["attention_head_dim"],
        norm_num_groups=params["norm_num_groups"],
        addition_embed_type="text" if params["text_time_embedding"] else None,
        addition_embed_type_num_heads=params["text_heads"],
    )


def build_text_to_image(
    words: list[str], image_size: int, channels: int, params: dict[str, Any]
) -> TextToImage:
    """An untrained pixel-space model; ``params`` override :data:`DEFAULTS` (unknown keys are errors)."""
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown text-to-image parameters {sorted(unknown)}; allowed: {sorted(DEFAULTS)}")
    params = {**DEFAULTS, **params}
    tokenizer = build_tokenizer(words, params["max_length"])
    return TextToImage(
        unet=build_conditional_unet(params, channels, image_size),
        text_encoder=build_text_encoder(tokenizer, params),
        tokenizer=tokenizer,
        scheduler_config=scheduler_config(params),
    )


def _embedding_weight(model: TextToImage) -> torch.nn.Parameter:
    """(V, D) input token-embedding matrix of the text encoder."""
    return model.text_encoder.get_input_embeddings().weight


def vocabulary_norm(model: TextToImage) -> float:
    """Mean L2 norm of the embedding rows of the tokenizer's own vocabulary (no added tokens)."""
    return float(_embedding_weight(model)[: model.tokenizer.vocab_size].detach().norm(dim=1).mean())


def add_concept_tokens(model: TextToImage, names: list[str], init_word: str | None = None) -> list[int]:
    """Add ``names`` as new tokens; their rows start at ``init_word``'s embedding, else the mean row."""
    existing = [name for name in names if name in model.tokenizer.get_vocab()]
    if existing:
        raise ValueError(f"tokens {existing} are already in the vocabulary")
    old_weight = _embedding_weight(model).detach()
    if init_word is None:
        init = old_weight.mean(dim=0)
    else:
        init_ids = model.tokenizer(init_word, add_special_tokens=False).input_ids
        if len(init_ids) != 1 or init_ids[0] == model.tokenizer.unk_token_id:
            raise ValueError(f"init word {init_word!r} is not a single known token (ids {init_ids})")
        init = old_weight[init_ids[0]]
    init = init.clone()
    model.tokenizer.add_tokens(names)
    model.text_encoder.resize_token_embeddings(len(model.tokenizer), mean_resizing=False)
    ids = model.tokenizer.convert_tokens_to_ids(names)
    with torch.no_grad():
        _embedding_weight(model)[ids] = init
    return ids


def trainable_token_rows(model: TextToImage, ids: list[int]) -> tuple[torch.nn.Parameter, Callable[[], None]]:
    """Freeze all but the token embeddings; return them and a ``restore()`` for after each step.

    ``restore()`` copies back the original value of every row not in ``ids``, so only
    those rows change whatever the optimizer does (momentum, weight decay).
    """
    for module in (model.unet, model.text_encoder, model.vae):
        if module is not None:
            module.requires_grad_(False)
    weight = _embedding_weight(model)
    weight.requires_grad_(True)
    keep = torch.ones(len(weight), dtype=torch.bool, device=weight.device)
    keep[ids] = False
    original = weight.detach()[keep].clone()

    def restore() -> None:
        with torch.no_grad():
            weight[keep] = original

    return weight, restore


def token_embeddings(model: TextToImage, names: list[str]) -> dict[str, torch.Tensor]:
    """{name: (D,) embedding row} on the CPU, e.g. to save with safetensors."""
    ids = model.tokenizer.convert_tokens_to_ids(names)
    weight = _embedding_weight(model).detach()
    return {name: weight[index].cpu().clone() for name, index in zip(names, ids, strict=True)}


def set_token_embeddings(model: TextToImage, embeddings: dict[str, torch.Tensor]) -> None:
    """Set the embedding rows of the named tokens, adding those not yet in the vocabulary."""
    missing = [name for name in embeddings if name not in model.tokenizer.get_vocab()]
    if missing:
        add_concept_tokens(model, missing)
    weight = _embedding_weight(model)
    ids = model.tokenizer.convert_tokens_to_ids(list(embeddings))
    with torch.no_grad():
        for index, row in zip(ids, embeddings.values(), strict=True):
            weight[index] = row.to(device=weight.device, dtype=weight.dtype)
