"""Text-to-image model: tokenizer, conditioning, save/load (ours and SD layout), textual inversion rows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL
from transformers import AutoTokenizer

from diffxai.models.t2i import (
    TextToImage,
    add_concept_tokens,
    build_text_to_image,
    build_tokenizer,
    set_token_embeddings,
    token_embeddings,
    trainable_token_rows,
)

WORDS = ["a", "small", "large", "round", "elongated", "ellipse", "vertical", "left", "right", "picture"]
TINY = {
    "text_width": 16,
    "text_layers": 1,
    "text_heads": 2,
    "max_length": 12,
    "block_out_channels": (8, 16),
    "cross_attention": (False, True),
    "attention_head_dim": 2,
    "norm_num_groups": 4,
}
SIZE = 16
PROMPTS = ["a small elongated ellipse, vertical, left", "a large round ellipse, right"]


def _model(channels: int = 1, seed: int = 0) -> TextToImage:
    torch.manual_seed(seed)
    return build_text_to_image(WORDS, SIZE, channels, TINY)


def _noise(channels: int = 1, size: int = SIZE) -> torch.Tensor:
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(1))


def _eps(model: TextToImage, x: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return model.eps(x, 500, model.encode_prompts(prompts))


def test_tokenizer_ids_and_special_positions() -> None:
    tokenizer = build_tokenizer(WORDS, max_length=12)
    ids = tokenizer(["a small ellipse, left", "a purple ellipse"], padding="max_length").input_ids
    assert all(len(row) == 12 for row in ids)
    first, second = ids
    assert first[0] == tokenizer.bos_token_id and first[6] == tokenizer.eos_token_id
    assert first[7:] == [tokenizer.pad_token_id] * 5
    assert len(set(first[1:6])) == 5  # a, small, ellipse, ",", left: distinct ids
    assert tokenizer.unk_token_id not in first
    assert second[2] == tokenizer.unk_token_id and second[1] == first[1] and second[3] == first[3]
    assert tokenizer("A SMALL Ellipse").input_ids == tokenizer("a small ellipse").input_ids


def test_check_fits_names_the_key_and_the_length_a_prompt_needs() -> None:
    model = _model()
    fitting = "a small elongated ellipse, vertical, left, right"  # 10 tokens + BOS/EOS: exactly 12
    model.check_fits([fitting, "a round ellipse"], "models.t2i.network.max_length")
    too_long = fitting + " small"
    with pytest.raises(ValueError, match=r"models\.t2i\.network\.max_length = 12 .* >= 13"):
        model.check_fits(["a round ellipse", too_long], "models.t2i.network.max_length")


def _concepts(n_tokens: int):
    from diffxai.jobs.distill import concept_names
    from diffxai.methods.time import Concepts

    return Concepts(*concept_names(n_tokens, 2))


def test_distillation_refuses_prompts_whose_last_tokens_the_encoder_would_not_read() -> None:
    """Class prompt 'a <context x n> image with a <class x n>': 2n + 4 words + BOS/EOS. At n = 3
    it is 12 tokens (fits 12); at n = 4, 14, and the last class tokens would never be learned.
    The new tokens count as one each, as once they are added (a BPE tokenizer would split them)."""
    from diffxai.jobs.distill import check_prompts_fit

    torch.manual_seed(0)
    model = build_text_to_image([*WORDS, "image", "with", "an"], SIZE, 1, TINY)
    check_prompts_fit(model, _concepts(3), "t2i")
    assert "<context_0>" not in model.tokenizer.get_vocab()  # the check adds no token to the model
    with pytest.raises(ValueError, match=r"models\.t2i\.network\.max_length = 12 .* >= 14"):
        check_prompts_fit(model, _concepts(4), "t2i")


def test_distillation_refuses_prompt_words_outside_the_vocabulary() -> None:
    """Captions of one phrasing ('{}') never hold 'image', 'with' or 'an': TIME's prompts would
    carry untrained <unk> rows. The refusal names the key and the words; the new tokens count as
    known."""
    from diffxai.jobs.distill import check_prompts_fit

    model = _model()  # WORDS: no "image", "with" or "an"
    assert model.unknown_words(["a <context_0> picture"], ["<context_0>"]) == []
    assert model.unknown_words(["a <context_0> picture"]) == ["<context_0>"]
    with pytest.raises(ValueError, match=r"models\.t2i\.captions\.templates: .*\['image', 'with', 'an'\]"):
        check_prompts_fit(model, _concepts(1), "t2i")


def test_tokenizer_added_tokens_and_round_trip(tmp_path: Path) -> None:
    tokenizer = build_tokenizer(WORDS, max_length=12)
    assert tokenizer.add_tokens(["<ctx_0>", "<ctx_1>"]) == 2
    prompt = "a <ctx_0> <ctx_1> picture"
    assert tokenizer.tokenize(prompt) == ["a", "<ctx_0>", "<ctx_1>", "picture"]
    ids = tokenizer(prompt).input_ids
    assert ids[2:4] == tokenizer.convert_tokens_to_ids(["<ctx_0>", "<ctx_1>"])
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert loaded.model_max_length == 12
    for text in (prompt, "a small, unknown ellipse"):
        assert loaded(text, padding="max_length").input_ids == tokenizer(text, padding="max_length").input_ids


def test_eps_shape_and_conditioning() -> None:
    model = _model()
    x = _noise()
    out = _eps(model, x, PROMPTS)
    assert out.shape == x.shape
    swapped = _eps(model, x, PROMPTS[::-1])
    assert not torch.allclose(out, swapped, atol=1e-6)
    assert model.encode_prompts(PROMPTS).shape == (2, 12, 16)


def test_text_time_embedding_carries_the_text_into_the_timestep_embedding() -> None:
    with_pooled, without = (
        build_text_to_image(WORDS, SIZE, 1, {**TINY, "text_time_embedding": flag}) for flag in (True, False)
    )
    assert with_pooled.unet.config.addition_embed_type == "text"
    assert not hasattr(without.unet, "add_embedding")
    hidden = with_pooled.encode_prompts(PROMPTS)
    with torch.no_grad():
        pooled = with_pooled.unet.get_aug_embed(None, hidden, {})
        assert pooled.shape == (2, with_pooled.unet.time_embedding.linear_2.out_features)
        assert not torch.allclose(pooled[0], pooled[1])
        # the same prompt gives the same pooled embedding whatever the batch holds
        torch.testing.assert_close(with_pooled.unet.get_aug_embed(None, hidden[:1], {})[0], pooled[0])


def test_building_is_deterministic() -> None:
    x = _noise()
    assert torch.equal(_eps(_model(seed=3), x, PROMPTS), _eps(_model(seed=3), x, PROMPTS))


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = _model()
    model.save(tmp_path / "t2i")
    loaded = TextToImage.load(tmp_path / "t2i")
    assert loaded.vae is None
    assert loaded.scheduler_config == model.scheduler_config
    assert torch.equal(loaded.token_ids(PROMPTS), model.token_ids(PROMPTS))
    x = _noise()
    assert torch.equal(_eps(loaded, x, PROMPTS), _eps(model, x, PROMPTS))


def test_stable_diffusion_layout_with_vae(tmp_path: Path) -> None:
    latent_channels = 4
    model = _model(channels=latent_channels)
    model.save(tmp_path / "sd")
    vae = AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=2 * SIZE,
        scaling_factor=0.5,
    )
    vae.save_pretrained(tmp_path / "sd" / "vae")
    loaded = TextToImage.load(tmp_path / "sd")
    assert isinstance(loaded.vae, AutoencoderKL)
    images = _noise(1, 2 * SIZE).clamp(-1, 1)
    with torch.no_grad():
        latents = loaded.to_latent(images)
        assert latents.shape == (2, latent_channels, SIZE, SIZE)
        assert torch.allclose(latents, vae.encode(images).latent_dist.mean * 0.5)
        eps = loaded.eps(latents, torch.tensor([10, 900]), loaded.encode_prompts(PROMPTS))
        assert eps.shape == latents.shape
        assert loaded.from_latent(latents).shape == images.shape
    loaded.save(tmp_path / "copy")
    assert (tmp_path / "copy" / "vae" / "config.json").is_file()


def _write_clip_tokenizer(directory: Path) -> None:
    """A byte-level BPE tokenizer in CLIP's files (vocab.json, merges.txt), as Stable Diffusion
    ships it, with a tokenizer_config.json that does not give model_max_length."""
    import json

    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = {token: i for i, token in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab.update({"el": len(vocab), "<|startoftext|>": len(vocab) + 1, "<|endoftext|>": len(vocab) + 2})
    directory.mkdir(parents=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\ne l\n")
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CLIPTokenizer"}))


def test_stable_diffusion_parts_of_their_own_classes_load_and_run(tmp_path: Path) -> None:
    """SD's CLIP BPE tokenizer (no model_max_length: padded to the text encoder's positions)
    and its PNDM scheduler config (a DDPM/DDIM schedule of the same ᾱ is built from it)."""
    from diffusers import PNDMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from diffxai.models.ddpm import build_scheduler

    _write_clip_tokenizer(tmp_path / "sd" / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "sd" / "tokenizer")
    model = _model()
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=TINY["text_width"], intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=20,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    model.unet.save_pretrained(tmp_path / "sd" / "unet")
    CLIPTextModel(text_config).save_pretrained(tmp_path / "sd" / "text_encoder")
    pndm = PNDMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, skip_prk_steps=True
    )
    pndm.save_pretrained(tmp_path / "sd" / "scheduler")

    loaded = TextToImage.load(tmp_path / "sd")
    assert loaded.token_ids(PROMPTS).shape == (2, 20)
    assert tokenizer.model_max_length > 10**9  # transformers' "unlimited" when the config omits it
    assert _eps(loaded, _noise(), PROMPTS).shape == (2, 1, SIZE, SIZE)
    for kind in ("ddpm", "ddim"):
        built = build_scheduler(loaded.scheduler_config, kind)
        assert torch.allclose(built.alphas_cumprod, pndm.alphas_cumprod)


def test_pixel_space_latents_are_the_images() -> None:
    x = _noise()
    model = _model()
    assert model.to_latent(x) is x and model.from_latent(x) is x


def test_concept_tokens_start_from_init_word_or_mean() -> None:
    model = _model()
    weight = model.text_encoder.get_input_embeddings().weight
    mean, ellipse = (
        weight.mean(dim=0).detach().clone(),
        weight[model.tokenizer.convert_tokens_to_ids("ellipse")],
    )
    ellipse = ellipse.detach().clone()
    (ctx,) = add_concept_tokens(model, ["<ctx_0>"])
    (cls,) = add_concept_tokens(model, ["<cls_0>"], init_word="ellipse")
    weight = model.text_encoder.get_input_embeddings().weight
    assert len(weight) == len(model.tokenizer) and model.text_encoder.config.vocab_size == len(weight)
    assert torch.equal(weight[ctx], mean) and torch.equal(weight[cls], ellipse)
    with pytest.raises(ValueError, match="already"):
        add_concept_tokens(model, ["<ctx_0>"])
    with pytest.raises(ValueError, match="single known token"):
        add_concept_tokens(model, ["<x>"], init_word="purple")


def test_only_new_rows_train() -> None:
    model = _model()
    ids = add_concept_tokens(model, ["<ctx_0>", "<cls_0>"], init_word="ellipse")
    weight, restore = trainable_token_rows(model, ids)
    before = weight.detach().clone()
    optimizer = torch.optim.Adam([weight], lr=0.1, weight_decay=0.1)
    prompt = "a <ctx_0> <cls_0> ellipse, left"
    x = _noise()
    loss = model.eps(x, 100, model.encode_prompts([prompt, prompt])).square().mean() + weight.square().sum()
    loss.backward()
    optimizer.step()
    restore()
    old = torch.ones(len(weight), dtype=torch.bool)
    old[ids] = False
    assert torch.equal(weight[old], before[old])
    assert not torch.equal(weight[ids[0]], before[ids[0]]) and not torch.equal(weight[ids[1]], before[ids[1]])
    assert not any(p.requires_grad for p in model.unet.parameters())
    trainable = [p for p in model.text_encoder.parameters() if p.requires_grad]
    assert len(trainable) == 1 and trainable[0] is weight


def test_set_token_embeddings_reproduces_trained_encodings() -> None:
    trained = _model()
    ids = add_concept_tokens(trained, ["<ctx_0>", "<cls_1>"])
    with torch.no_grad():
        trained.text_encoder.get_input_embeddings().weight[ids] = torch.randn(2, 16)
    learned = token_embeddings(trained, ["<ctx_0>", "<cls_1>"])
    fresh = _model()
    set_token_embeddings(fresh, learned)
    prompt = ["a <ctx_0> <cls_1> picture, left"]
    with torch.no_grad():
        assert torch.allclose(fresh.encode_prompts(prompt), trained.encode_prompts(prompt), atol=1e-6)
        assert not torch.allclose(fresh.encode_prompts(prompt), _model().encode_prompts(["a picture, left"]))


def test_model_directory_round_trip_keeps_added_tokens_and_outputs(tmp_path):
    """The pipeline's own model directory (model.safetensors + config.json, as every model):
    the tokenizer with its added concept tokens and every weight come back."""
    from diffxai.models.io import load_model, save_model

    torch.manual_seed(0)
    model = build_text_to_image(WORDS, SIZE, 1, TINY)
    add_concept_tokens(model, ["<c_0>", "<c_1>"])
    save_model(tmp_path / "t2i", model, model.spec())
    loaded, info = load_model(tmp_path / "t2i")
    assert info["kind"] == "t2i" and isinstance(loaded, TextToImage)
    prompt = ["a <c_0> <c_1> picture"]
    assert torch.equal(loaded.token_ids(prompt), model.token_ids(prompt))
    x, t = torch.randn(1, 1, SIZE, SIZE), torch.tensor([10])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(x, t, loaded.token_ids(prompt)), model.eval()(x, t, model.token_ids(prompt))
        )


def test_learn_concept_trains_only_the_new_rows():
    from diffxai.training.textual_inversion import learn_concept

    torch.manual_seed(0)
    model = build_text_to_image(WORDS, SIZE, 1, TINY)
    before = model.text_encoder.get_input_embeddings().weight.detach().clone()
    unet_before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    images = -torch.ones(16, 1, SIZE, SIZE)
    images[:, :, 4:12, 6:10] = 1.0  # one concept: a vertical bar
    params = {"steps": 40, "batch_size": 8, "lr": 0.05}
    learned, history = learn_concept(
        model, images, "a <bar_0> <bar_1> picture", ["<bar_0>", "<bar_1>"], params,
        torch.Generator().manual_seed(1), torch.device("cpu"),
    )  # fmt: skip
    after = model.text_encoder.get_input_embeddings().weight.detach()
    assert torch.equal(after[: len(before)], before)  # every old row is unchanged
    assert set(learned) == {"<bar_0>", "<bar_1>"}
    assert all(torch.equal(v, model.unet.state_dict()[k]) for k, v in unet_before.items())
    initial = before.mean(dim=0)  # new rows start at the mean embedding
    assert all((row - initial).abs().max() > 1e-3 for row in learned.values())  # and were trained
    assert history["n_images"] == 16 and history["loss"][-1][0] == 40


@pytest.mark.parametrize("max_norm", [None, 0.5])
def test_learn_concept_caps_the_learned_rows_at_max_norm_times_the_vocabulary_norm(max_norm):
    from diffxai.models.t2i import vocabulary_norm
    from diffxai.training.textual_inversion import learn_concept

    torch.manual_seed(0)
    model = build_text_to_image(WORDS, SIZE, 1, TINY)
    cap = vocabulary_norm(model) * (max_norm or 0.5)
    images = torch.rand(16, 1, SIZE, SIZE) * 2 - 1
    params = {"steps": 30, "batch_size": 8, "lr": 0.2, "max_norm": max_norm}  # a large lr walks far
    learned, _ = learn_concept(
        model, images, "a <noise_0> picture", ["<noise_0>"], params,
        torch.Generator().manual_seed(1), torch.device("cpu"),
    )  # fmt: skip
    norm = float(learned["<noise_0>"].norm())
    if max_norm is None:
        assert norm > cap  # unconstrained, the row leaves the vocabulary's scale
    else:
        assert norm <= cap * (1 + 1e-6)
        assert norm > 0.9 * cap  # it is scaled down, not reset


def test_timestep_range_covers_the_fractions_and_is_never_empty():
    from diffxai.training.textual_inversion import timestep_range

    assert timestep_range(1000, (0.0, 1.0)) == (0, 1000)
    assert timestep_range(1000, (0.4, 0.7)) == (400, 700)
    assert timestep_range(100, (0.5, 0.5)) == (50, 51)
    assert timestep_range(100, (1.0, 1.0)) == (99, 100)


def test_learn_concept_draws_its_timesteps_from_the_asked_range():
    from diffxai.training.textual_inversion import learn_concept

    torch.manual_seed(0)
    model = build_text_to_image(WORDS, SIZE, 1, TINY)
    seen = []
    model.unet.register_forward_pre_hook(lambda module, args: seen.append(args[1].clone()))
    params = {"steps": 20, "batch_size": 8, "lr": 0.01, "timesteps": (0.4, 0.7)}
    learn_concept(
        model, torch.rand(8, 1, SIZE, SIZE) * 2 - 1, "a <x_0> picture", ["<x_0>"], params,
        torch.Generator().manual_seed(1), torch.device("cpu"),
    )  # fmt: skip
    timesteps = torch.cat(seen)
    total = model.scheduler_config["num_train_timesteps"]
    assert len(timesteps) == 20 * 8
    assert timesteps.min() >= round(0.4 * total) and timesteps.max() < round(0.7 * total)
    assert timesteps.max() - timesteps.min() > 0.2 * total  # spread over the range, not one value


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_inversion_loss_is_the_noise_error_whatever_the_prediction_type(prediction_type):
    """``epsilon`` (eq. 5.5) is ‖ε − ε̂‖² with ε̂ converted from the model's output; for a
    v-model, ``prediction`` (the v error) is that divided by ᾱ_t, sample by sample."""
    from diffxai.models.ddpm import build_scheduler
    from diffxai.training.textual_inversion import inversion_loss

    scheduler = build_scheduler({"num_train_timesteps": 1000, "prediction_type": prediction_type})
    g = torch.Generator().manual_seed(0)
    x0, noise, output = (torch.randn(4, 1, 8, 8, generator=g) for _ in range(3))
    t = torch.tensor([10, 300, 600, 950])
    x_t = scheduler.add_noise(x0, noise, t)
    perfect = noise if prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
    assert float(inversion_loss(perfect, x_t, x0, noise, t, scheduler, "epsilon")) < 1e-10
    for i in range(4):
        args = (output[i : i + 1], x_t[i : i + 1], x0[i : i + 1], noise[i : i + 1], t[i : i + 1], scheduler)
        eps_loss, own_loss = inversion_loss(*args, "epsilon"), inversion_loss(*args, "prediction")
        weight = 1.0 if prediction_type == "epsilon" else float(scheduler.alphas_cumprod[t[i]])
        assert float(eps_loss) == pytest.approx(weight * float(own_loss), rel=1e-4)
    with pytest.raises(ValueError, match="allowed: epsilon, prediction"):
        inversion_loss(output, x_t, x0, noise, t, scheduler, "v")


def test_class_images_are_the_predicted_ones_or_the_most_probable_up_to_the_minimum():
    from diffxai.jobs.distill import class_images

    probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55], [0.3, 0.7]])
    rows, selection = class_images(probabilities, 0, min_images=2)
    assert selection == "predicted" and rows.tolist() == [0, 2]
    # class 1 is predicted for 3 images; asking for 4 adds the next most probable (image 2)
    rows, selection = class_images(probabilities, 1, min_images=4)
    assert selection == "highest_probability" and rows.tolist() == [1, 4, 3, 2]
    # a one-sided classifier: nothing is predicted as class 0, the most class-0-like images are used
    one_sided = torch.tensor([[0.1, 0.9], [0.4, 0.6], [0.3, 0.7]])
    rows, selection = class_images(one_sided, 0, min_images=2)
    assert selection == "highest_probability" and rows.tolist() == [1, 2]
    assert class_images(one_sided, 0, min_images=10)[0].tolist() == [1, 2, 0]
    # three classes: image 0 is predicted as class 0 at 0.4, image 1 is not at 0.45; 0 comes first
    three = torch.tensor([[0.4, 0.3, 0.3], [0.45, 0.55, 0.0], [0.1, 0.1, 0.8]])
    assert class_images(three, 0, min_images=2)[0].tolist() == [0, 1]
