"""HiT (thesis ch. 6): exact logit decomposition, locality, layer removal, and the transformer maps
(HiT saliency, attention rollout, token GradCAM) against hand computations and Captum."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from captum.attr import LayerGradCam
from torch import nn

from diffxai.jobs import hit_summary
from diffxai.methods.attribution_baselines import attribute
from diffxai.methods.base import ExplanationError
from diffxai.methods.transformer_maps import (
    _AttentionRecorder,
    attention_rollout,
    default_token_layer,
    hit_maps,
    rollout,
    spread_patches,
    token_gradcam,
)
from diffxai.models.heads import Classifier
from diffxai.models.hit import HiT, find_hit
from diffxai.models.registry import create_network


def _random_hit(seed: int = 0, std: float = 0.3, **kwargs) -> HiT:
    """A HiT with every parameter (LayerNorms, CLS, biases included) drawn from N(0, std²)."""
    torch.manual_seed(seed)
    settings = dict(in_channels=1, num_outputs=3, img_size=16, patch_size=4, embed_dim=32, depth=3)
    settings["num_heads"] = 4
    model = HiT(**{**settings, **kwargs}).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, std)
    return model


def _images(count: int = 6, channels: int = 1, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(count, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"depth": 1},
        {"depth": 5, "num_heads": 2, "num_outputs": 5},
        {"patch_size": 2, "in_channels": 3},
        {"patch_size": 8, "embed_dim": 16, "num_heads": 1},
    ],
)
def test_contributions_sum_to_the_logits_for_random_weights(settings):
    model = _random_hit(**settings)
    images = _images(channels=model.patch_embed.proj.in_channels)
    with torch.no_grad():
        contributions, logits = model.contributions(images)
        direct = model(images)
    layers, patches = model.depth, model.num_patches
    assert contributions.shape == (len(images), layers, patches, logits.shape[1])
    torch.testing.assert_close(logits, direct, atol=1e-5, rtol=0)
    assert (contributions.sum(dim=(1, 2)) - logits).abs().max() < 1e-4
    assert logits.abs().max() > 0.1  # a decomposition of non-trivial logits


def test_contributions_stay_exact_after_training():
    model = _random_hit(std=0.02)
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    images = _images(32, seed=3)
    labels = torch.randint(0, 3, (32,), generator=torch.Generator().manual_seed(4))
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        contributions, logits = model.contributions(_images(8, seed=5))
    assert loss.item() < 0.5  # the weights did move far from the initialisation
    assert (contributions.sum(dim=(1, 2)) - logits).abs().max() < 1e-4


def test_the_final_layernorm_is_part_of_the_decomposition():
    """Without the shared σ of the full CLS the terms would not add up: a check that it is used."""
    model = _random_hit()
    with torch.no_grad():
        model.norm.weight.mul_(5.0)
        model.norm.bias.add_(2.0)
        contributions, logits = model.contributions(_images())
    assert (contributions.sum(dim=(1, 2)) - logits).abs().max() < 1e-4


def test_with_uniform_attention_a_patch_contributes_only_its_own_pixels():
    """Zero query weights make attention uniform; then changing one patch's pixels changes that
    patch's CLS updates v'_l(p) in every layer and no other patch's (patch tokens stay local)."""
    model = _random_hit()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.q.weight.zero_()
            block.attn.q.bias.zero_()
    images = _images(2)
    changed = images.clone()
    changed[:, :, 4:8, 8:12] = -changed[:, :, 4:8, 8:12]  # patch (row 1, column 2) = index 6
    with torch.no_grad():
        before, after = model.trace(images), model.trace(changed)
    torch.testing.assert_close(before.attention, torch.full_like(before.attention, 1 / 16))
    difference = (after.updates - before.updates).abs().amax(dim=(0, 3))  # (L, P)
    assert (difference[:, 6] > 1e-3).all()
    assert difference[:, [index for index in range(16) if index != 6]].max() == 0


def test_skipping_a_layer_equals_zeroing_its_attention_output():
    model = _random_hit(depth=4)
    ablated = _random_hit(depth=4)
    with torch.no_grad():
        ablated.blocks[2].attn.proj.weight.zero_()
        ablated.blocks[2].attn.proj.bias.zero_()
        contributions, logits = model.contributions(_images(), skip_layers={2})
        expected = ablated(_images())
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    assert (contributions.sum(dim=(1, 2)) - logits).abs().max() < 1e-4


def test_registry_builds_hit_with_the_image_size_and_rejects_bad_shapes():
    network = create_network("hit", 1, 32, 2, {"patch_size": 8, "depth": 2, "embed_dim": 16, "num_heads": 2})
    assert isinstance(network, HiT) and network.grid_size == (4, 4) and network.depth == 2
    assert network.blocks[-1].mlp is None and network.blocks[0].mlp is not None  # last MLP is unused
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        create_network("hit", 1, 30, 2, {"patch_size": 4})
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        create_network("hit", 1, 32, 2, {"embed_dim": 30, "num_heads": 4})
    with pytest.raises(ValueError, match="allowed simple_cnn, hit or a timm model name"):
        create_network("no_such_net", 1, 32, 2)


def test_hit_maps_sum_to_the_target_logit_and_sit_where_their_patch_is():
    model = _random_hit()
    classifier = Classifier(model, ["a", "b", "c"])
    images = _images(4)
    targets = torch.tensor([0, 1, 2, 1])
    maps, layers = hit_maps(classifier, images, targets)
    with torch.no_grad():
        contributions, logits = model.contributions(images)
    target_logits = logits[torch.arange(4), targets]
    torch.testing.assert_close(maps.sum(dim=(1, 2)), target_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(layers.sum(dim=1), target_logits, atol=1e-4, rtol=0)
    per_patch = contributions[torch.arange(4), :, :, targets].sum(dim=1)  # (N, P), row-major grid
    row, column = 2, 1
    expected = per_patch[:, row * 4 + column] / 16
    block = maps[:, row * 4 : row * 4 + 4, column * 4 : column * 4 + 4]
    assert torch.allclose(block, expected.view(-1, 1, 1))
    assert find_hit(classifier) is model
    with pytest.raises(ValueError, match="need a HiT classifier"):
        find_hit(nn.Linear(2, 2))


def test_spread_patches_layout_and_the_remainder_a_vit_does_not_see():
    values = torch.arange(6.0).view(1, 6)
    maps = spread_patches(values, (2, 3), (4, 6))
    assert maps.shape == (1, 4, 6)
    assert maps[0, 3, 5] == 5 / 4 and maps[0, 0, 0] == 0 and maps[0, 1, 2] == 1 / 4
    assert maps.sum() == values.sum()
    uneven = spread_patches(values, (2, 3), (5, 7))  # 2 × 2 patches from the top left, as timm cuts
    torch.testing.assert_close(uneven[:, :4, :6], maps)
    assert uneven[0, 4].abs().sum() == 0 and uneven[0, :, 6].abs().sum() == 0
    with pytest.raises(ValueError, match="smaller than"):
        spread_patches(values, (2, 3), (1, 6))


def _tiny_vit(depth: int = 2) -> nn.Module:
    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=3, in_chans=1, img_size=16,
        patch_size=4, embed_dim=16, depth=depth, num_heads=2,
    )  # fmt: skip
    return Classifier(vit.eval(), ["a", "b", "c"])


def test_vit_attention_recorder_keeps_softmax_rows_and_restores_the_fused_kernel():
    model = _tiny_vit()
    images = _images(3)
    with torch.no_grad():
        reference = model(images)
        recorder = _AttentionRecorder(model.network)
        recorded = model(images)
        recorder.close()
    torch.testing.assert_close(recorded, reference, atol=1e-5, rtol=0)
    assert len(recorder.attentions) == 2 and recorder.attentions[0].shape == (3, 2, 17, 17)
    torch.testing.assert_close(recorder.attentions[0].sum(-1), torch.ones(3, 2, 17))
    assert all(block.attn.fused_attn for block in model.network.blocks)


def test_rollout_matches_the_matrix_product_by_hand():
    generator = torch.Generator().manual_seed(0)
    attentions = [torch.rand(1, 2, 5, 5, generator=generator).softmax(-1) for _ in range(3)]
    joint = torch.eye(5)
    for attention in attentions:
        mixed = 0.5 * attention[0].mean(0) + 0.5 * torch.eye(5)
        mixed = mixed / mixed.sum(-1, keepdim=True)
        joint = mixed @ joint
    torch.testing.assert_close(rollout(attentions, prefix=1)[0], joint[0, 1:])


def test_rollout_of_a_vit_that_pools_its_patches_reads_the_patch_rows():
    """Without a class token (global average pooling) no row is the head's input: the map is the
    mean of the patch rows, not patch 0's row."""
    generator = torch.Generator().manual_seed(1)
    attentions = [torch.rand(1, 2, 4, 4, generator=generator).softmax(-1) for _ in range(2)]
    joint = torch.eye(4)
    for attention in attentions:
        mixed = 0.5 * attention[0].mean(0) + 0.5 * torch.eye(4)
        joint = (mixed / mixed.sum(-1, keepdim=True)) @ joint
    torch.testing.assert_close(rollout(attentions, prefix=0, class_token=False)[0], joint.mean(0))
    torch.manual_seed(0)
    pooled = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=2, in_chans=1, img_size=18, patch_size=4,
        embed_dim=16, depth=2, num_heads=2, class_token=False, global_pool="avg",
    ).eval()  # fmt: skip
    images = _images(2, size=18)
    maps = attention_rollout(Classifier(pooled, ["a", "b"]), images)
    assert maps.shape == (2, 18, 18) and maps[:, 16:].abs().sum() == 0  # 4 × 4 patches of 4 px: 2 px unseen
    recorder = _AttentionRecorder(pooled)
    with torch.no_grad():
        pooled(images)
    recorder.close()
    expected = spread_patches(rollout(recorder.attentions, 0, class_token=False), (4, 4), (18, 18))
    torch.testing.assert_close(maps, expected)


def test_attention_rollout_of_vit_and_hit():
    images = _images(2)
    vit = _tiny_vit()
    maps = attribute("attention_rollout", vit, images, torch.tensor([0, 1]), {}, 0)
    assert maps.shape == (2, 16, 16) and (maps > 0).all()
    hit = Classifier(_random_hit(), ["a", "b", "c"])
    maps = attribute("attention_rollout", hit, images, torch.tensor([0, 1]), {}, 0)
    with torch.no_grad():
        attention = hit.network.trace(images).attention  # HiT: mean CLS->patch attention
    torch.testing.assert_close(maps.sum(dim=(1, 2)), torch.ones(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(maps[:, 0, 0] * 16, attention.mean(dim=(1, 2))[:, 0])


class _ConvTokens(nn.Module):
    """A conv feature map (N, C, 4, 4) read as 16 tokens (N, 16, C) by a separate module."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 6, 4, stride=4), nn.Tanh())
        self.tokens = nn.Identity()
        self.head = nn.Linear(6, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.features(images)
        tokens = self.tokens(features.flatten(2).transpose(1, 2))
        return self.head(torch.tanh(tokens).mean(dim=1))


def test_token_gradcam_equals_captum_layer_gradcam_on_the_same_features():
    torch.manual_seed(0)
    model = _ConvTokens().eval()
    images, targets = _images(3), torch.tensor([0, 2, 1])
    ours = token_gradcam(model, model.tokens, images, targets)
    captum = LayerGradCam(model, model.features).attribute(images, target=targets, relu_attributions=True)
    assert captum.abs().max() > 0
    torch.testing.assert_close(ours[:, ::4, ::4] * 16, captum[:, 0], atol=1e-6, rtol=1e-5)


def test_gradcam_defaults_to_the_last_norm1_of_transformers():
    hit = Classifier(_random_hit(), ["a", "b", "c"]).requires_grad_(False)  # frozen, as in the jobs
    assert default_token_layer(hit) == "network.blocks.2.norm1"
    assert default_token_layer(nn.Sequential(nn.Conv2d(1, 1, 3))) is None
    images, targets = _images(2), torch.tensor([1, 2])
    maps = attribute("gradcam", hit, images, targets, {}, 0)
    named = attribute("gradcam", hit, images, targets, {"layer": "network.blocks.2.norm1"}, 0)
    torch.testing.assert_close(maps, named)
    assert maps.shape == (2, 16, 16) and (maps >= 0).all() and maps.abs().max() > 0
    vit_maps = attribute("gradcam", _tiny_vit().requires_grad_(False), images, targets, {}, 0)
    assert vit_maps.shape == (2, 16, 16) and vit_maps.abs().max() > 0


# ------------------------------------------------------------------ maps job and summary


def test_compute_maps_of_hit_stores_layer_contributions_and_counts_one_call():
    from diffxai.methods.base import Models
    from diffxai.methods.maps import compute_maps

    classifier = Classifier(_random_hit(), ["a", "b", "c"])
    images, targets = _images(3), torch.tensor([2, 0, 1])
    result = compute_maps("hit", images, targets, Models(classifier), {}, 0, np.arange(3))
    layers = result.extras["layer_contributions"]
    assert layers.shape == (3, 3) and result.maps.shape == (3, 16, 16)
    np.testing.assert_allclose(layers.sum(1), result.maps.sum(axis=(1, 2)), atol=1e-4)
    assert (result.classifier_calls == 1).all() and (result.nfe == 0).all()
    with pytest.raises(ExplanationError, match="no parameters"):
        compute_maps("hit", images, targets, Models(classifier), {"steps": 2}, 0, np.arange(3))


def _dominated_hit() -> HiT:
    """A HiT whose layer 1 carries almost all of the logit: no constant terms (CLS, biases of the
    final norm and head), the other layers' outputs scaled down."""
    model = _random_hit(depth=3, num_outputs=2)
    with torch.no_grad():
        for constant in (model.cls_token, model.norm.bias, model.head.bias):
            constant.zero_()
        for index in (0, 2):
            model.blocks[index].attn.proj.weight.mul_(0.01)
            model.blocks[index].attn.proj.bias.mul_(0.01)
    return model


def test_layer_removal_ranks_by_saliency_and_most_salient_first_hurts_more():
    model = _dominated_hit()
    images = _images(64, seed=7)
    with torch.no_grad():
        labels = model(images).argmax(1).numpy()
    analysis = hit_summary.layer_analysis(model, images, labels, batch_size=16)
    assert analysis["accuracy"] == 1.0
    assert int(np.argmax(analysis["layer_saliency"])) == 1
    for mode in ("decomposition", "forward"):
        removal = analysis["layer_removal"][mode]
        most = removal["cumulative_removed_most_salient_first"]
        least = removal["cumulative_removed_least_salient_first"]
        assert most[0] == least[0] == 1.0 and most[-1] == least[-1]  # nothing / everything removed
        order = removal["order_most_salient_first"]
        assert order[0] == 1 and sorted(order) == [0, 1, 2]
        assert most[1] == removal["excluding_layer"][1]
        assert removal["exclusive_layer"][1] > removal["exclusive_layer"][0]  # layer 1 alone decides most
        assert removal["mean_accuracy_partial_most_first"] < removal["mean_accuracy_partial_least_first"]


def test_decomposition_removal_drops_exactly_the_removed_terms():
    per_layer = np.array([[[2.0, 0.0], [0.0, 1.0]], [[0.0, 3.0], [1.0, 0.0]]])  # (N=2, L=2, K=2)
    constant = np.array([[0.0, 0.5], [0.0, 0.5]])
    labels = np.array([0, 1])
    accuracy = lambda removed: hit_summary.decomposition_accuracy(per_layer, constant, labels, removed)  # noqa: E731
    assert accuracy([]) == 1.0  # logits (2, 1.5), (1, 3.5)
    assert accuracy([0]) == 0.0  # logits (0, 1.5), (1, 0.5)
    assert accuracy([1]) == 1.0  # logits (2, 0.5), (0, 3.5)
    assert accuracy([0, 1]) == 0.5  # the constant alone: (0, 0.5) twice, class 1


def test_a_layer_that_adds_nothing_has_zero_saliency_and_removing_it_changes_nothing():
    """Layer 0 is an exact no-op (zero projection); the CLS token and head bias are not zero. Its
    saliency must be 0 and the decomposition without it must be the logits; removing every layer
    leaves the constant, so accuracy is that of its argmax, not of class 0."""
    model = _random_hit(seed=3, num_outputs=2)  # every parameter drawn, CLS and head bias included
    with torch.no_grad():
        model.blocks[0].attn.proj.weight.zero_()
        model.blocks[0].attn.proj.bias.zero_()
    images = _images(64, seed=5)
    with torch.no_grad():
        logits = model(images)
        split = model.layer_terms(images)
    torch.testing.assert_close(split.terms.sum(dim=(1, 2)) + split.constant, logits, atol=1e-5, rtol=1e-5)
    assert split.terms[:, 0].abs().max() < 1e-6 and split.constant.abs().min() > 1e-3
    labels = logits.argmax(1).numpy()
    analysis = hit_summary.layer_analysis(model, images, labels, batch_size=16)
    assert abs(analysis["layer_saliency"][0]) < 1e-6
    removal = analysis["layer_removal"]["decomposition"]
    assert removal["excluding_layer"][0] == 1.0
    constant_only = float((split.constant.argmax(1).numpy() == labels).mean())
    assert removal["cumulative_removed_most_salient_first"][-1] == constant_only


def _metrics_file(directory, name, classifier, **values):
    path = directory / f"{name}.json"
    path.write_text(json.dumps({"method": name, "classifier": classifier, "dataset": "ellipses", **values}))
    return path


def test_faithfulness_table_marks_the_best_per_classifier_and_compares_hit_with_posthoc(tmp_path):
    paths = [
        _metrics_file(
            tmp_path,
            "hit",
            "hit",
            insertion_nauc_zero=0.9,
            deletion_nauc_zero=0.2,
            mask_auroc=0.85,
            randomisation_spearman_all_layers=0.2,
        ),
        _metrics_file(
            tmp_path,
            "hit_gradcam",
            "hit",
            insertion_nauc_zero=0.7,
            deletion_nauc_zero=0.1,
            randomisation_spearman_all_layers=0.4,
        ),
        _metrics_file(
            tmp_path,
            "hit_rollout",
            "hit",
            insertion_nauc_zero=0.8,
            deletion_nauc_zero=0.3,
            randomisation_spearman_all_layers=-0.3,
        ),
        _metrics_file(tmp_path, "vit_gradcam", "vit", insertion_nauc_zero=0.95, deletion_nauc_zero=0.05),
    ]
    rows = hit_summary.faithfulness_table(paths)
    assert [row["attribution"] for row in rows] == ["hit", "hit_gradcam", "hit_rollout", "vit_gradcam"]
    assert rows[1]["mask_auroc"] is None
    versus = hit_summary.hit_against_posthoc(rows, ["hit"], "hit")
    assert versus["hit.insertion_nauc_zero"] == {"hit": 0.9, "best_posthoc_on_hit": 0.8, "hit_better": True}
    assert versus["hit.deletion_nauc_zero"]["best_posthoc_on_hit"] == 0.1  # lower is better; ViT not counted
    assert not versus["hit.deletion_nauc_zero"]["hit_better"]
    assert "hit.mask_auroc" not in versus  # no post-hoc value to compare with
    # closest to 0 is best: rollout's -0.3 beats GradCAM's 0.4, and HiT's 0.2 beats both
    assert versus["hit.randomisation_spearman_all_layers"] == {
        "hit": 0.2, "best_posthoc_on_hit": -0.3, "hit_better": True,
    }  # fmt: skip
    table = hit_summary.markdown_table(rows, "T")
    lines = table.splitlines()
    assert "Ins Z ↑" in lines[2] and "Del Z ↓" in lines[2] and "rank corr. randomised → 0" in lines[2]
    assert "| 0.850 | – | **0.200** |" in lines[4]  # HiT's ρ, the closest to 0 on the HiT
    assert "| hit | hit | **0.900** |" in table and "| **0.100** |" in lines[5]
    assert "| vit_gradcam | vit | 0.950 |" in table  # alone in its group: not bold


def test_an_undefined_metric_is_no_value_whatever_the_row_order(tmp_path):
    """NaN (written by json as NaN) must not decide max/min: the best post-hoc value is 0.7 in
    either order of the rows."""
    hit = _metrics_file(tmp_path, "hit", "hit", insertion_nauc_zero=0.9)
    gradcam = _metrics_file(tmp_path, "hit_gradcam", "hit", insertion_nauc_zero=float("nan"))
    rollout_ = _metrics_file(tmp_path, "hit_rollout", "hit", insertion_nauc_zero=0.7)
    for order in ([hit, gradcam, rollout_], [hit, rollout_, gradcam]):
        rows = hit_summary.faithfulness_table(order)
        versus = hit_summary.hit_against_posthoc(rows, ["hit"], "hit")
        assert versus["hit.insertion_nauc_zero"]["best_posthoc_on_hit"] == 0.7
        assert "| hit_gradcam | hit | – |" in hit_summary.markdown_table(rows, "T")


def test_hit_is_compared_only_with_maps_of_as_many_images(tmp_path):
    hit = _metrics_file(tmp_path, "hit", "hit", n=100, insertion_nauc_zero=0.9)
    fewer = _metrics_file(tmp_path, "hit_gradcam", "hit", n=20, insertion_nauc_zero=0.95)
    same = _metrics_file(tmp_path, "hit_rollout", "hit", n=100, insertion_nauc_zero=0.7)
    versus = hit_summary.hit_against_posthoc(
        hit_summary.faithfulness_table([hit, fewer, same]), ["hit"], "hit"
    )
    assert versus["hit.insertion_nauc_zero"]["best_posthoc_on_hit"] == 0.7


def test_cls_attention_is_the_softmax_of_scaled_dot_products():
    """softmax(q·k / sqrt(d_head)): the decomposition stays exact at any temperature, so only
    the attention itself can show a wrong scale."""
    from diffxai.models.hit import CLSAttention

    torch.manual_seed(0)
    attention = CLSAttention(8, 2)
    with torch.no_grad():
        for parameter in attention.parameters():
            parameter.normal_()
    query, tokens = torch.randn(1, 8), torch.randn(1, 5, 8)
    _, weights = attention.weighted_values(query, tokens)
    q = attention.q(query).view(1, 2, 4)
    k = attention.kv(tokens)[..., :8].view(1, 5, 2, 4).permute(0, 2, 1, 3)
    torch.testing.assert_close(weights, (torch.einsum("nhd,nhpd->nhp", q, k) / 4**0.5).softmax(-1))
