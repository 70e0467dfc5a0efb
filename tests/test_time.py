"""TIME on an exact toy: a text-to-image "model" whose class prompts denoise to a known image.

Prompt embeddings are one number: 0 for class 0's tokens, 1 for class 1's, 0.5 for any other
prompt. The noise prediction for embedding 0 (1) is the exact ε of a Dirac at bar image A (B);
for 0.5 it is that of the two-point mixture. The classifier is linear along B − A. Inverting A
with C_0 and denoising with C_1 must give B: the right counterfactual is known.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffxai.methods import time as time_method
from diffxai.methods.base import ExplanationError, Models
from tests.toy_diffusion import SCHEDULER_CONFIG, BarClassifier, ExactDenoiser, bar_images

CONCEPTS = time_method.Concepts(["<context_0>"], {0: ["<class0_0>"], 1: ["<class1_0>"]})
PARAMS = {
    "steps": 50, "attempts": [[10, 2.0]], "p": 0.93, "guidance": "negative", "context": True,
    "target": None, "unet_batch": 64,
}  # fmt: skip


class ToyTextToImage:
    """The TextToImage interface over exact denoisers: class 0 → A, class 1 → B, else the mixture."""

    def __init__(self) -> None:
        a, b = bar_images()
        self.denoisers = {
            0.0: ExactDenoiser(a[None]),
            1.0: ExactDenoiser(b[None]),
            0.5: ExactDenoiser(torch.stack([a, b])),
        }
        self.scheduler_config = dict(SCHEDULER_CONFIG)
        self.image_shape = tuple(a.shape)
        self.prompts: list[str] = []

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        self.prompts += prompts
        value = [0.0 if "<class0_0>" in p else 1.0 if "<class1_0>" in p else 0.5 for p in prompts]
        return torch.tensor(value, dtype=torch.float64).view(-1, 1, 1)

    def eps(self, latents: torch.Tensor, timestep: int, hidden: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(latents)
        for value, denoiser in self.denoisers.items():
            rows = hidden[:, 0, 0] == value
            if rows.any():
                out[rows] = denoiser(latents[rows], torch.tensor(timestep)).sample
        return out

    def to_latent(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def from_latent(self, latents: torch.Tensor) -> torch.Tensor:
        return latents


def _models(t2i: ToyTextToImage | None = None) -> tuple[Models, BarClassifier]:
    a, b = bar_images()
    classifier = BarClassifier(a, b)
    return Models(classifier, t2i or ToyTextToImage(), context={"concepts": CONCEPTS}), classifier


def test_prompts_with_and_without_the_context_tokens():
    assert CONCEPTS.prompt(1, True) == "a <context_0> image with a <class1_0>"
    assert CONCEPTS.prompt(0, False) == "an image with a <class0_0>"


def test_guided_noise_is_the_negative_guidance_combination_and_counts_rows():
    t2i = ToyTextToImage()
    noise = time_method.GuidedNoise(t2i, unet_batch=3)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    positive, negative = t2i.encode_prompts(["<class1_0>"] * 2), t2i.encode_prompts(["<class0_0>"] * 2)
    w = torch.tensor([0.0, 2.5], dtype=torch.float64)
    guided = noise.guided(positive, negative, w)(x, 300)
    eps_b = t2i.eps(x, 300, positive)
    eps_a = t2i.eps(x, 300, negative)
    torch.testing.assert_close(guided[0], eps_b[0])
    torch.testing.assert_close(guided[1], 3.5 * eps_b[1] - 2.5 * eps_a[1])
    assert noise.rows == 4  # one guided call = 2 UNet rows per sample


def test_v_prediction_outputs_are_converted_to_noise():
    t2i = ToyTextToImage()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    hidden = t2i.encode_prompts(["<class1_0>"] * 2)
    eps = t2i.eps(x, 400, hidden)
    noise = time_method.GuidedNoise(t2i, 8)
    alpha = noise.alphas_cumprod[400]
    x0 = (x - (1 - alpha).sqrt() * eps) / alpha.sqrt()
    velocity = alpha.sqrt() * eps - (1 - alpha).sqrt() * x0
    t2i.eps = lambda latents, timestep, cond: velocity  # the model now "predicts v"
    t2i.scheduler_config["prediction_type"] = "v_prediction"
    torch.testing.assert_close(time_method.GuidedNoise(t2i, 8).predict(x, 400, hidden), eps)


def test_inverting_and_denoising_with_the_same_prompt_returns_the_image():
    """With C_source = C_target negative guidance is plain ε(C) both ways: EDICT is exact."""
    t2i = ToyTextToImage()
    noise = time_method.GuidedNoise(t2i, 64)
    image = torch.rand(3, 1, 8, 8, dtype=torch.float64) * 2 - 1
    same = t2i.encode_prompts(["<class0_0>"] * 3)
    w = torch.full((3,), 4.0, dtype=torch.float64)
    edited = time_method.edit(noise, image, same, same, same, 35, w, PARAMS)
    assert (edited - image).abs().max() < 1e-8


def test_time_turns_a_into_b_with_the_counted_budget():
    a, b = bar_images()
    models, classifier = _models()
    images = torch.stack([a, a, b]).float()
    result = time_method.explain(images, np.array([4, 5, 6]), models, PARAMS, seed=0)
    assert result.success.all()
    assert list(result.sources) == [0, 0, 1] and list(result.targets) == [1, 1, 0]
    ce = torch.from_numpy(result.counterfactuals)
    assert (ce[0] - b).abs().max() < 0.05 and (ce[2] - a).abs().max() < 0.05
    assert (result.nfe == 8 * 10).all()  # τ inversion + τ denoising steps × 2 eps × 2 UNet rows
    assert (result.classifier_calls == 2).all() and classifier.calls == 6  # input + one attempt
    assert (result.extras["attempt"] == 0).all() and (result.extras["tau"] == 10).all()
    assert (result.classifier_gradients == 0).all()


def test_unflipped_samples_go_on_to_the_next_attempt_only():
    """cfg guidance towards the two-point mixture cannot move A to B: each attempt runs on the
    samples left, the NFE adds up, and a sample that never flips keeps attempt −1."""
    models, _ = _models()
    a, _ = bar_images()
    params = {**PARAMS, "guidance": "cfg", "attempts": [[5, 1.0], [8, 1.0]], "context": False}
    t2i = models.ddpm
    t2i.encode_prompts = lambda prompts: torch.full((len(prompts), 1, 1), 0.0 if prompts[0] else 0.5).double()
    result = time_method.explain(a[None].float(), np.array([1]), models, params, seed=0)
    assert not result.success.any() and result.extras["attempt"][0] == -1
    assert result.nfe[0] == 8 * (5 + 8) and result.classifier_calls[0] == 3
    assert np.isnan(result.extras["tau"][0])


def test_queries_are_counted_per_sample_in_a_batch_that_flips_in_part():
    """Class 0's prompt denoises to A, any other to the A/B mixture: B (inverted with the
    mixture) flips to A on the first attempt, queried for the input and once after; A cannot
    reach B, queried for the input and after both attempts. The counts are per sample, not the
    batch's mean: 3 and 2, 5 queries in all."""
    models, classifier = _models()
    a, b = bar_images()
    params = {**PARAMS, "guidance": "cfg", "attempts": [[5, 1.0], [8, 1.0]], "context": False}
    t2i = models.ddpm
    t2i.encode_prompts = lambda prompts: torch.tensor(
        [0.0 if "<class0_0>" in prompt else 0.5 for prompt in prompts], dtype=torch.float64
    ).view(-1, 1, 1)
    result = time_method.explain(torch.stack([a, b]).float(), np.array([1, 2]), models, params, seed=0)
    assert list(result.success) == [False, True]
    assert list(result.classifier_calls) == [3, 2] and classifier.calls == 5
    assert list(result.nfe) == [8 * (5 + 8), 8 * 5]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"guidance": "positive"}, "params.guidance"),
        ({"attempts": [[50, 1.0]]}, "tau=50"),
        ({"lr": 1}, "unknown"),
    ],
)
def test_bad_parameters_are_refused(change, message):
    models, _ = _models()
    a, _ = bar_images()
    with pytest.raises(ExplanationError, match=message):
        time_method.explain(a[None].float(), np.array([0]), models, {**PARAMS, **change}, seed=0)


def test_attempt_nfe_is_cumulative():
    assert time_method.attempt_nfe([[25, 3], [30, 4], [35, 4], [35, 6]]) == [200, 440, 720, 1000]


class _RecordedGuidance:
    """A GuidedNoise stand-in: ε = 0, and a log of (phase's prompt pair, timestep) per call."""

    def __init__(self, names: dict[int, str]) -> None:
        self.alphas_cumprod = torch.linspace(0.9999, 0.01, 1000, dtype=torch.float64)
        self.names, self.calls = names, []

    def guided(self, positive, negative, w):
        pair = (self.names[id(positive)], self.names[id(negative)])

        def eps(latents, timestep):
            self.calls.append((pair, int(timestep)))
            return torch.zeros_like(latents)

        return eps


@pytest.mark.parametrize(
    ("guidance", "inverting", "denoising"),
    [
        ("negative", ("source", "target"), ("target", "source")),
        ("cfg", ("source", "empty"), ("target", "empty")),
    ],
)
def test_edit_inverts_with_the_source_prompt_and_denoises_with_the_target_on_the_tau_steps(
    guidance, inverting, denoising
):
    """Eq. 5.11 pairs (C_pos, C_neg) = (C_i, C_j) while inverting, (C_j, C_i) while denoising; cfg
    pairs each with ∅. The τ steps are the schedule's first τ timesteps after 0 (10 of 1000:
    0, 111, 222, …), up while inverting, down while denoising, two ε calls each (EDICT)."""
    source, target, empty = (torch.zeros(1, 1, 1) for _ in range(3))
    noise = _RecordedGuidance({id(source): "source", id(target): "target", id(empty): "empty"})
    params = {"steps": 10, "p": 0.93, "guidance": guidance}
    time_method.edit(noise, torch.zeros(1, 1, 2, 2), source, target, empty, 3, torch.tensor([2.0]), params)
    up, down = [111, 222, 333], [333, 222, 111]
    assert noise.calls == [(inverting, t) for t in up for _ in range(2)] + [
        (denoising, t) for t in down for _ in range(2)
    ]


def test_with_three_classes_an_attempt_that_lands_on_a_third_class_has_not_flipped(monkeypatch):
    """Success is reaching the target: the first attempt turns the image (class 0, target 1) into
    class 2, so the second attempt runs, and its class-1 image is the CE (2 queries)."""
    from diffxai.models.blackbox import BlackBox

    class Nearest(torch.nn.Module):  # class k for an image of mean ≈ centre k
        def __init__(self) -> None:
            super().__init__()
            self.centres = torch.nn.Parameter(torch.tensor([0.0, -0.5, 0.5]), requires_grad=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return -10 * (x.mean(dim=(1, 2, 3))[:, None] - self.centres) ** 2

    landing = {2: 0.5, 3: -0.5}  # attempt (τ = 2) → class 2, (τ = 3) → class 1
    monkeypatch.setattr(
        time_method, "edit", lambda noise, latents, *args: torch.full_like(latents, landing[args[3]])
    )
    t2i = ToyTextToImage()
    concepts = time_method.Concepts(["<context_0>"], {c: [f"<class{c}_0>"] for c in range(3)})
    images = torch.zeros(1, 1, 8, 8)
    blackbox = BlackBox(Nearest())
    logits = blackbox(images).log()
    params = {**PARAMS, "attempts": [[2, 1.0], [3, 1.0]]}
    counterfactuals, attempt, _, _, queries = time_method.run_attempts(
        t2i, blackbox, images, logits, torch.tensor([1]), concepts, params
    )
    assert attempt.tolist() == [1] and queries.tolist() == [2]
    torch.testing.assert_close(counterfactuals, torch.full_like(images, -0.5))


def _tiny_t2i_models() -> tuple[Models, torch.Tensor]:
    """A real (random) pixel-space v-prediction TextToImage at 16 px, random token embeddings
    handed over as distill's context, a linear classifier, and 4 images in [-1, 1]."""
    from diffxai.models.t2i import build_text_to_image
    from tests.test_t2i import SIZE, TINY

    torch.manual_seed(0)
    words = ["a", "image", "with", "an", "picture", "round", "ellipse"]
    t2i = build_text_to_image(words, SIZE, 1, {**TINY, "prediction_type": "v_prediction"})
    names = [*CONCEPTS.context, *CONCEPTS.classes[0], *CONCEPTS.classes[1]]
    embeddings = {name: torch.randn(TINY["text_width"]) for name in names}
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIZE * SIZE, 2))
    models = Models(classifier.eval(), t2i.eval(), context={"concepts": CONCEPTS, "embeddings": embeddings})
    images = torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return models, images


def test_time_on_a_real_text_to_image_model_is_batch_free_and_refuses_other_shapes():
    """With a diffusers UNet and CLIP text encoder (v-prediction, converted to ε): the learned
    tokens are set into the model, the CEs do not depend on the image or UNet batch size, and
    images of another size or channel count than the model makes are refused up front."""
    models, images = _tiny_t2i_models()
    params = {**PARAMS, "attempts": [[5, 3.0], [8, 4.0]]}
    ids = np.arange(4)
    whole = time_method.explain(images, ids, models, params, 0)
    assert "<class1_0>" in models.ddpm.tokenizer.get_vocab()
    one_by_one = time_method.explain(images, ids, models, {**params, "unet_batch": 1}, 0, batch_size=1)
    assert np.abs(whole.counterfactuals - one_by_one.counterfactuals).max() < 1e-5
    assert np.isfinite(whole.counterfactuals).all() and (whole.nfe > 0).all()
    assert np.abs(whole.counterfactuals - images.numpy()).max() > 1e-2  # the edit did something
    for wrong in (torch.zeros(2, 1, 32, 32), torch.zeros(2, 3, 16, 16)):
        with pytest.raises(ExplanationError, match=r"expects \(1, 16, 16\)"):
            time_method.explain(wrong, np.arange(2), models, params, 0)
