"""Attribution baselines: agreement with Captum, ground truth on linear models, contracts."""

from __future__ import annotations

from typing import Any

import pytest
import timm
import torch
import torch.nn.functional as F
from captum.attr import InputXGradient, IntegratedGradients, Saliency
from torch import Tensor, nn

from diffxai.methods.attribution_baselines import BASELINES, DEFAULTS, attribute
from diffxai.models.hit import HiT
from diffxai.models.simple_cnn import SimpleCNN

torch.set_num_threads(1)

FAST_PARAMS: dict[str, dict[str, Any]] = {
    "integrated_gradients": {"steps": 8},
    "kernel_shap": {"samples": 40},
    "rise": {"masks": 24, "batch": 10},
}


class LinearModel(nn.Module):
    """logits (N, K) = Σ_{c,h,w} weights[k] ⊙ x + bias[k]; no Conv2d."""

    def __init__(self, weights: Tensor) -> None:
        super().__init__()
        self.weights = nn.Parameter(weights, requires_grad=False)
        self.bias = nn.Parameter(torch.linspace(-0.5, 0.5, len(weights)), requires_grad=False)

    def forward(self, images: Tensor) -> Tensor:
        return torch.einsum("nchw,kchw->nk", images, self.weights) + self.bias


def small_cnn(channels: int) -> nn.Module:
    """Seeded 3-class SimpleCNN (conv, in-place ReLU, max pool, linear) for 8×8 images."""
    torch.manual_seed(0)
    return SimpleCNN(channels, 3, channels=(4, 6), hidden=8).eval()


def random_images(channels: int, size: int = 8, count: int = 4) -> Tensor:
    """Seeded images (count, channels, size, size) in [-0.9, 0.9]."""
    generator = torch.Generator().manual_seed(channels)
    return (torch.rand(count, channels, size, size, generator=generator) * 2 - 1) * 0.9


TARGETS = torch.tensor([0, 1, 2, 1])


def baseline_value(name: str) -> float:
    """Pixel value of a named baseline, written out here independently of the module."""
    return {"black": -1.0, "zero": 0.0}[name]


@pytest.mark.parametrize("channels", [1, 3])
def test_gradient_methods_match_captum(channels: int) -> None:
    model, images = small_cnn(channels), random_images(channels)
    inputs = images.clone().requires_grad_(True)  # Captum warns otherwise
    expected = {
        "gradient": Saliency(model).attribute(inputs, target=TARGETS, abs=False),
        "input_x_gradient": InputXGradient(model).attribute(inputs, target=TARGETS),
    }
    for name, reference in expected.items():
        ours = attribute(name, model, images, TARGETS, {}, seed=0)
        torch.testing.assert_close(ours, reference.mean(dim=1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("baseline", ["black", "zero"])
def test_integrated_gradients_matches_captum_trapezoid(channels: int, baseline: str) -> None:
    model, images = small_cnn(channels), random_images(channels)
    params = {"steps": 12, "baseline": baseline, "internal_batch_size": 7}
    ours = attribute("integrated_gradients", model, images, TARGETS, params, seed=0)
    reference = IntegratedGradients(model).attribute(
        images,
        baselines=baseline_value(baseline),
        target=TARGETS,
        n_steps=12,
        method="riemann_trapezoid",
    )
    torch.testing.assert_close(ours, reference.mean(dim=1), atol=1e-5, rtol=1e-5)


def test_integrated_gradients_completeness() -> None:
    """Σ IG = f(x) - f(baseline) up to the trapezoid error, on a smooth (tanh) CNN.

    Captum's trapezoid weights sum to (steps - 1) / steps, so the sum matches that fraction
    of the change closely and the change itself to within 1 / steps.
    """
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 64, 3))
    images, steps = random_images(3), 128
    maps = attribute("integrated_gradients", model.eval(), images, TARGETS, {"steps": steps}, seed=0)
    with torch.no_grad():
        change = (model(images) - model(torch.full_like(images, -1.0))).gather(1, TARGETS[:, None])[:, 0]
    total = maps.sum(dim=(1, 2)) * images.shape[1]  # the map is the channel mean
    assert ((total - change).abs() / change.abs()).max() < 1e-2
    assert ((total - change * (steps - 1) / steps).abs() / change.abs()).max() < 1e-4


def sparse_weights(channels: int, size: int) -> tuple[Tensor, Tensor]:
    """Class-1 weights (2, C, H, W), positive on 2×2 blocks of a (H, W) support, else 0."""
    support = torch.zeros(size, size, dtype=torch.bool)
    for row, col in [(0, 2), (4, 4), (6, 12), (10, 0), (14, 8)]:
        support[row : row + 2, col : col + 2] = True
    generator = torch.Generator().manual_seed(1)
    weights = torch.zeros(2, channels, size, size)
    weights[1] = (0.5 + torch.rand(channels, size, size, generator=generator)) * support
    return weights, support


def test_gradient_recovers_linear_weights() -> None:
    weights = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    maps = attribute("gradient", LinearModel(weights), random_images(3), TARGETS, {}, seed=0)
    torch.testing.assert_close(maps, weights[TARGETS].mean(dim=1), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("name", "params"), [("occlusion", {"window": 2, "stride": 2}), ("kernel_shap", {})])
def test_perturbation_maps_rank_support_first(name: str, params: dict[str, Any]) -> None:
    weights, support = sparse_weights(3, 16)
    images = random_images(3, size=16, count=2)
    maps = attribute(name, LinearModel(weights), images, torch.tensor([1, 1]), params, seed=0).abs()
    assert (maps[:, support].min(dim=1).values > maps[:, ~support].max(dim=1).values).all()


@pytest.mark.parametrize("baseline", ["black", "zero"])
@pytest.mark.parametrize(
    ("name", "params"), [("occlusion", {"window": 2, "stride": 2}), ("kernel_shap", {"cell": 2})]
)
def test_block_perturbations_give_block_sums_of_weight_times_input_change(
    name: str, params: dict[str, Any], baseline: str
) -> None:
    weights = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    images, targets = random_images(3, count=2), torch.tensor([2, 0])
    maps = attribute(name, LinearModel(weights), images, targets, {**params, "baseline": baseline}, seed=0)
    change = (weights[targets] * (images - baseline_value(baseline))).sum(dim=1, keepdim=True)
    block_sums = F.avg_pool2d(change, 2) * 4
    expected = F.interpolate(block_sums, scale_factor=2, mode="nearest")[:, 0]
    torch.testing.assert_close(maps, expected, atol=1e-4, rtol=1e-4)


def test_rise_correlates_with_linear_weights() -> None:
    rows, cols = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    pattern = torch.exp(-((rows - 4) ** 2 + (cols - 11) ** 2) / 18) - torch.exp(
        -((rows - 11) ** 2 + (cols - 5) ** 2) / 18
    )
    weights = torch.stack([torch.zeros(3, 16, 16), pattern.expand(3, 16, 16) * 0.3])
    images = torch.full((1, 3, 16, 16), 0.5)
    maps = attribute("rise", LinearModel(weights), images, torch.tensor([1]), {}, seed=0)
    correlation = torch.corrcoef(torch.stack([maps[0].flatten(), pattern.flatten()]))[0, 1]
    assert correlation > 0.8


def hand_gradcam(model: nn.Module, layer: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    """ReLU(Σ_k mean(∂y/∂A_k) A_k) of ``layer``'s output A, upsampled bilinearly: (N, H, W)."""
    captured: list[Tensor] = []

    def keep_output(_: nn.Module, __: Any, output: Tensor) -> Tensor:
        captured.append(output)
        return output.clone()  # later in-place ops must not touch the captured activation

    handle = layer.register_forward_hook(keep_output)
    inputs = images.clone().requires_grad_(True)
    selected = model(inputs).gather(1, targets[:, None]).sum()
    handle.remove()
    (grads,) = torch.autograd.grad(selected, captured[0])
    cams = F.relu((grads.mean(dim=(2, 3), keepdim=True) * captured[0]).sum(dim=1, keepdim=True))
    return F.interpolate(cams, size=images.shape[2:], mode="bilinear", align_corners=False)[:, 0].detach()


@pytest.mark.parametrize("layer", [None, "features.0.0"])
def test_gradcam_matches_hand_computation(layer: str | None) -> None:
    model, images = small_cnn(3), random_images(3)
    maps = attribute("gradcam", model, images, TARGETS, {"layer": layer}, seed=0)
    module = model.get_submodule(layer or "features.1.0")
    assert maps.shape == (4, 8, 8)
    assert (maps >= 0).all()
    assert maps.amax() > 0
    torch.testing.assert_close(maps, hand_gradcam(model, module, images, TARGETS), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(("arch", "stage"), [("resnet18", "layer4"), ("mobilenetv3_small_050", "blocks.5")])
def test_gradcam_of_a_timm_cnn_uses_its_last_feature_stage(arch: str, stage: str) -> None:
    """Inside the classifier wrapper: the stage timm's feature_info names. MobileNetV3's last
    Conv2d (conv_head) comes after the global pooling, where a map would be constant, and its
    ``blocks`` are convolution stages, not transformer blocks."""
    from diffxai.models.heads import Classifier

    torch.manual_seed(0)
    model = Classifier(timm.create_model(arch, pretrained=False, num_classes=3), ["a", "b", "c"]).eval()
    images = random_images(3, size=64)
    maps = attribute("gradcam", model, images, TARGETS, {}, seed=0)
    expected = hand_gradcam(model, model.get_submodule(f"network.{stage}"), images, TARGETS)
    torch.testing.assert_close(maps, expected, atol=1e-6, rtol=1e-5)


def test_gradcam_refuses_model_without_conv() -> None:
    model = LinearModel(torch.ones(3, 3, 8, 8))
    with pytest.raises(ValueError, match="Conv2d"):
        attribute("gradcam", model, random_images(3), TARGETS, {}, seed=0)


def model_snapshot(model: nn.Module) -> tuple[dict[str, Tensor], list[bool], list[bool], list[bool]]:
    """Parameters and buffers, in-place flags, requires_grad flags and fused-attention flags of ``model``."""
    state = {key: value.clone() for key, value in model.state_dict().items()}
    inplace = [module.inplace for module in model.modules() if hasattr(module, "inplace")]
    fused = [module.fused_attn for module in model.modules() if hasattr(module, "fused_attn")]
    return state, inplace, [param.requires_grad for param in model.parameters()], fused


TRANSFORMER_ONLY = {"attention_rollout"}


def tiny_transformer(arch: str) -> nn.Module:
    """A 3-class timm ViT or HiT of 8 x 8 RGB images in patches of 2."""
    torch.manual_seed(0)
    shape = {"patch_size": 2, "embed_dim": 8, "depth": 2, "num_heads": 2}
    if arch == "hit":
        return HiT(3, 3, 8, **shape).eval()
    return timm.create_model(arch, pretrained=False, num_classes=3, in_chans=3, img_size=8, **shape).eval()


@pytest.mark.parametrize("name", sorted(set(BASELINES) - TRANSFORMER_ONLY))
@pytest.mark.parametrize("frozen", [False, True])
def test_contract_and_caller_model_unchanged(name: str, frozen: bool) -> None:
    # An in-place op on the input itself breaks input gradients and would overwrite the images.
    model = nn.Sequential(nn.LeakyReLU(0.5, inplace=True), small_cnn(3)).requires_grad_(not frozen)
    check_contract(name, model, frozen)


@pytest.mark.parametrize("name", ["attention_rollout", "gradcam", "gradient"])
@pytest.mark.parametrize("arch", ["vit_tiny_patch16_224", "hit"])
@pytest.mark.parametrize("frozen", [False, True])
def test_contract_on_transformers(name: str, arch: str, frozen: bool) -> None:
    check_contract(name, tiny_transformer(arch).requires_grad_(not frozen), frozen)


def check_contract(name: str, model: nn.Module, frozen: bool) -> None:
    """Maps (4, 8, 8) float32 finite on the CPU; the model's weights, flags and grads and the images
    are left as they were."""
    images = random_images(3)
    before, original_images = model_snapshot(model), images.clone()
    maps = attribute(name, model, images, TARGETS, FAST_PARAMS.get(name, {}), seed=0)
    assert maps.shape == (4, 8, 8)
    assert maps.dtype == torch.float32
    assert maps.device.type == "cpu"
    assert torch.isfinite(maps).all()
    after = model_snapshot(model)
    assert before[1:] == after[1:]
    for key, value in before[0].items():
        assert torch.equal(value, after[0][key])
    assert all(param.grad is None for param in model.parameters())
    assert torch.equal(images, original_images)


@pytest.mark.parametrize("name", ["kernel_shap", "rise"])
def test_seeded_methods_are_deterministic_and_keep_global_rng(name: str) -> None:
    model, images = small_cnn(1), random_images(1)
    state = torch.get_rng_state()
    first = attribute(name, model, images, TARGETS, FAST_PARAMS[name], seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)  # another global state must not matter
    torch.testing.assert_close(first, attribute(name, model, images, TARGETS, FAST_PARAMS[name], seed=5))
    alone = attribute(name, model, images[2:3], TARGETS[2:3], FAST_PARAMS[name], seed=5)
    torch.testing.assert_close(first[2:3], alone)


@pytest.mark.parametrize("name", ["kernel_shap", "rise"])
def test_seeded_methods_depend_on_seed(name: str) -> None:
    model, images = small_cnn(1), random_images(1)
    first = attribute(name, model, images, TARGETS, FAST_PARAMS[name], seed=5)
    assert not torch.allclose(first, attribute(name, model, images, TARGETS, FAST_PARAMS[name], seed=6))


class InputRecorder(nn.Module):
    """Constant logits (N, 3) = (0, 1, 2); keeps every input batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[Tensor] = []

    def forward(self, images: Tensor) -> Tensor:
        self.inputs.append(images.clone())
        return torch.arange(3.0).expand(len(images), 3)


@pytest.mark.parametrize("baseline", ["black", "zero"])
def test_rise_masks_towards_substrate_and_normalises_by_mask_mean(baseline: str) -> None:
    model, images = InputRecorder(), torch.ones(1, 3, 16, 16)
    maps = attribute(
        "rise", model, images, torch.tensor([1]), {"baseline": baseline, "masks": 600, "p": 0.3}, seed=0
    )
    seen = torch.cat(model.inputs)
    assert len(seen) == 600
    assert seen.min() == baseline_value(baseline)
    assert seen.max() == 1.0
    # a constant probability P gives Σ_i P · M_i / (masks · p) ≈ P at every pixel
    probability = torch.arange(3.0).softmax(dim=0)[1]
    assert abs(maps.mean() / probability - 1) < 0.05
    assert (maps / probability - 1).abs().max() < 0.25


def test_unknown_method_is_refused_with_allowed_names() -> None:
    with pytest.raises(ValueError, match="unknown attribution method") as error:
        attribute("lime", small_cnn(1), random_images(1), TARGETS, {}, seed=0)
    assert all(name in str(error.value) for name in BASELINES)


def test_unknown_parameter_is_refused_with_allowed_names() -> None:
    with pytest.raises(ValueError, match="stepz") as error:
        attribute("integrated_gradients", small_cnn(1), random_images(1), TARGETS, {"stepz": 4}, seed=0)
    assert all(name in str(error.value) for name in DEFAULTS["integrated_gradients"])


def test_unknown_baseline_is_refused() -> None:
    with pytest.raises(ValueError, match="black"):
        attribute("occlusion", small_cnn(1), random_images(1), TARGETS, {"baseline": "white"}, seed=0)
