"""DiME's perceptual networks (encoder blocks, VGG from a local file) and ACE's mask helpers."""

from __future__ import annotations

import pytest
import torch
import torchvision

from diffxai.methods.ace import dilation_size, region_mask
from diffxai.methods.perceptual_features import encoder_layers, perceptual_distance, vgg_layers
from diffxai.models.encoder import SimSiam

torch.set_num_threads(1)


def test_encoder_layers_are_the_encoders_conv_blocks_and_frozen():
    encoder = SimSiam(in_channels=1, width=8, feature_dim=16)
    layers = encoder_layers(encoder)
    images = torch.rand(2, 1, 16, 16) * 2 - 1
    features = layers(images)
    assert [f.shape[1:] for f in features] == [(8, 8, 8), (16, 4, 4), (32, 2, 2)]
    torch.testing.assert_close(features[0], encoder.backbone[0](images))
    assert not any(p.requires_grad for p in layers.parameters())
    layers.train()
    assert not layers.training  # batch-norm statistics never update


def test_perceptual_distance_is_zero_for_equal_inputs_and_sums_layers():
    a = [torch.ones(2, 3, 4, 4), torch.zeros(2, 5)]
    b = [torch.zeros(2, 3, 4, 4), torch.full((2, 5), 2.0)]
    torch.testing.assert_close(perceptual_distance(a, a), torch.zeros(2))
    torch.testing.assert_close(perceptual_distance(a, b), torch.full((2,), 1.0 + 4.0))


def test_vgg_layers_load_a_local_state_dict_without_download(tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    torch.manual_seed(0)
    features = torchvision.models.vgg16(weights=None).features
    path = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    layers = vgg_layers(path, "vgg16")
    torch.testing.assert_close(layers.stages[0][0].weight, features[0].weight)
    torch.testing.assert_close(layers.stages[3][-2].weight, features[21].weight)
    grey = torch.rand(1, 1, 32, 32) * 2 - 1
    outputs = layers(grey)  # grey is repeated to 3 channels and ImageNet-normalised
    assert [o.shape[1] for o in outputs] == [64, 128, 256, 512]
    assert layers.name == "vgg16:vgg16.pth"


def test_vgg_layers_refuse_a_missing_file_or_unknown_arch(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no/vgg\.pth"):
        vgg_layers(tmp_path / "no/vgg.pth")
    with pytest.raises(ValueError, match="vgg11"):
        vgg_layers(tmp_path / "x.pth", "vgg11")


@pytest.mark.parametrize(("size", "expected"), [(128, 15), (64, 7), (32, 3), (96, 11), (8, 1)])
def test_dilation_scales_the_published_15_pixels_at_128_to_an_odd_size(size, expected):
    assert dilation_size({"dilation": None}, size) == expected
    assert dilation_size({"dilation": 4}, size) == 4


def test_region_mask_dilates_and_thresholds_the_normalised_change():
    images = torch.zeros(1, 3, 9, 9)
    changed = images.clone()
    changed[0, :, 4, 4] = 1.0  # the strongest change
    changed[0, 0, 0, 0] = 0.1  # a weak change: 0.1 / 3 of the maximum, under the threshold
    mask = region_mask(images, changed, dilation=3, threshold=0.15)
    expected = torch.zeros(1, 1, 9, 9)
    expected[0, 0, 3:6, 3:6] = 1
    torch.testing.assert_close(mask, expected)
