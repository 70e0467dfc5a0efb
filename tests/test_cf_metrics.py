"""Counterfactual metrics: closed-form and hand-computed answers, FID/sFID, LPIPS and σ_L."""

from __future__ import annotations

import math
import socket

import lpips as lpips_package
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from diffxai.metrics.counterfactual import bkl, cout, distances, factor_changes, flip_rate, similarity_s3
from diffxai.metrics.oracle import correlation_difference, label_correlations, mnac
from diffxai.metrics.perceptual import Lpips, _prepare, diversity_sigma_l
from diffxai.metrics.realism import FeatureSpace, feature_space, fid, sfid
from diffxai.models.encoder import SimSiam
from diffxai.training.simsiam import encode

CPU = torch.device("cpu")
# Small CPU workloads: extra threads only contend (as in test_models.py).
torch.set_num_threads(1)


# --- validity and closeness -------------------------------------------------------------------------


def test_flip_rate_counts_predictions_equal_to_target():
    assert flip_rate(np.array([1, 2, 0, 1]), np.array([1, 0, 0, 0])) == 0.5


def test_bkl_is_one_minus_target_probability():
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [1.0, 0.0]])
    np.testing.assert_allclose(bkl(probs, np.array([1, 1, 0])), [0.2, 0.6, 0.0])


def test_distances_are_per_pixel_on_unit_range():
    images = torch.tensor([[[[-1.0, -1.0]]], [[[0.0, 0.0]]]])
    cfs = torch.tensor([[[[1.0, -1.0]]], [[[0.5, -0.5]]]])
    result = distances(images, cfs)
    np.testing.assert_allclose(result["l1"], [0.5, 0.25])
    np.testing.assert_allclose(result["l2"], [math.sqrt(0.5), 0.25])


def test_factor_changes_normalises_by_reference_std():
    result = factor_changes(np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0]), reference_std=2.0)
    assert result == {"mean_abs_change": 1.0, "mean_abs_change_in_std": 0.5}
    with pytest.raises(ValueError):
        factor_changes(np.zeros(3), np.ones(3), reference_std=0.0)


def test_s3_is_cosine_similarity():
    features = torch.randn(5, 16, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(similarity_s3(features, features), np.ones(5), atol=1e-12)
    np.testing.assert_allclose(similarity_s3(features.numpy(), -features.numpy()), -np.ones(5), atol=1e-12)
    diagonal = similarity_s3(np.array([[1.0, 0.0]]), np.array([[1.0, 1.0]]))
    np.testing.assert_allclose(diagonal, [1 / math.sqrt(2)])


# --- COUT ---------------------------------------------------------------------------------------------


class RegionLogit(nn.Module):
    """Two classes: logits [0, scale · mean of x over channels and the top-left size×size region]."""

    def __init__(self, scale: float, size: int) -> None:
        super().__init__()
        self.scale, self.size = scale, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = self.scale * x[:, :, : self.size, : self.size].mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(score), score], dim=1)


def test_cout_matches_closed_form_for_uniform_insertion():
    # x = 0, CE = 1: all 64 pixels tie; with 16 steps, step k inserts exactly k/16 of them, so the
    # logit is s·t and p_1 − p_0 = tanh(s·t/2), whose integral over [0, 1] is (2/s)·ln cosh(s/2).
    scale, steps = 4.0, 16
    images, cfs = torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8)
    result = cout(RegionLogit(scale, 8), images, cfs, np.array([0, 0]), np.array([1, 1]), steps=steps)
    t = np.linspace(0, 1, steps + 1)
    np.testing.assert_allclose(result, np.trapezoid(np.tanh(scale * t / 2), t), rtol=1e-9)
    np.testing.assert_allclose(result, 2 / scale * math.log(math.cosh(scale / 2)), atol=2e-3)


def test_cout_inserts_largest_changes_first():
    # The classifier reads only the 4×4 top-left region (16 of 64 pixels), which the CE changes most
    # (by 2, elsewhere by 0.5), so the region is fully inserted once round(k/50 · 64) ≥ 16.
    scale, steps = 6.0, 50
    images = -torch.ones(1, 3, 8, 8)
    cfs = torch.full((1, 3, 8, 8), -0.5)
    cfs[:, :, :4, :4] = 1.0
    result = cout(RegionLogit(scale, 4), images, cfs, np.array([0]), np.array([1]), steps=steps)
    inserted = np.minimum([round(k * 64 / steps) for k in range(steps + 1)], 16) / 16
    expected = np.trapezoid(np.tanh(scale * (2 * inserted - 1) / 2), dx=1 / steps)
    np.testing.assert_allclose(result, [expected], rtol=1e-9)
    assert expected > 0.5  # inserting the region last would give a negative value


@pytest.fixture
def linear_classifier():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 3)).eval()


def test_cout_is_antisymmetric_in_source_and_target(linear_classifier):
    generator = torch.Generator().manual_seed(1)
    images, cfs = torch.rand(4, 3, 6, 6, generator=generator) * 2 - 1, torch.rand(4, 3, 6, 6) * 2 - 1
    sources, targets = np.array([0, 1, 2, 0]), np.array([1, 2, 0, 2])
    forward = cout(linear_classifier, images, cfs, sources, targets, steps=10)
    np.testing.assert_allclose(cout(linear_classifier, images, cfs, targets, sources, steps=10), -forward)
    assert np.all(np.abs(forward) <= 1)
    batched = cout(linear_classifier, images, cfs, sources, targets, steps=10, batch_size=7)
    np.testing.assert_allclose(batched, forward, rtol=1e-6)


def test_cout_of_unchanged_image_is_probability_gap(linear_classifier):
    images = torch.rand(3, 3, 6, 6, generator=torch.Generator().manual_seed(2)) * 2 - 1
    sources, targets = np.array([0, 1, 2]), np.array([2, 0, 1])
    probs = linear_classifier(images).double().softmax(dim=1).detach().numpy()
    expected = probs[np.arange(3), targets] - probs[np.arange(3), sources]
    np.testing.assert_allclose(cout(linear_classifier, images, images, sources, targets), expected, atol=1e-6)


# --- oracle metrics -----------------------------------------------------------------------------------


def test_mnac_counts_changed_attributes_except_query():
    before = np.array([[1, 0, 0, 1], [0, 0, 1, 1], [1, 1, 1, 1]])
    after = np.array([[0, 0, 1, 1], [0, 1, 1, 0], [1, 1, 1, 1]])
    assert mnac(before, after, exclude=[0]) == pytest.approx(1.0)
    assert mnac(before.astype(bool), after.astype(bool), exclude=[]) == pytest.approx(4 / 3)


def oracle_pair(delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Oracle outputs before/after with after − before = delta; unchanged entries alternate 0/1."""
    before = np.where(delta == 1, 0, np.where(delta == -1, 1, np.arange(delta.shape[0])[:, None] % 2))
    return before, before + delta


def test_correlation_difference_hand_computed():
    # δ_q = [1, 1, 0, 0]; δ_1 = [1, 0, 0, 0] -> corr 1/√3; δ_2 constant -> undefined (0); δ_3 = −δ_q -> −1.
    delta = np.array([[1, 1, 0, -1], [1, 0, 0, -1], [0, 0, 0, 0], [0, 0, 0, 0]])
    before, after = oracle_pair(delta)
    true_row = np.array([1.0, 0.5, 0.2, -0.4])
    result = correlation_difference(before, after, true_row, query=0)
    expected = abs(0.5 - 1 / math.sqrt(3)) + 0.2 + 0.6
    assert result["cd"] == pytest.approx(expected)
    assert result["undefined"] == [2]
    np.testing.assert_allclose(result["model_correlation"][1:], [1 / math.sqrt(3), 0.0, -1.0])
    assert np.isnan(result["per_attribute"][0])
    matrix = np.tile(true_row, (4, 1))
    assert correlation_difference(before, after, matrix, query=0)["cd"] == pytest.approx(expected)


def test_correlation_difference_with_constant_query_change():
    delta = np.array([[1, 1, 0], [1, 0, 1], [1, 0, 0]])
    before, after = oracle_pair(delta)
    result = correlation_difference(before, after, np.array([1.0, 0.3, -0.2]), query=0)
    assert result["undefined"] == [1, 2]
    assert result["cd"] == pytest.approx(0.5)


def test_label_correlations_is_pearson_with_nan_for_constant_labels():
    labels = np.random.default_rng(0).integers(0, 2, size=(50, 3))
    np.testing.assert_allclose(label_correlations(labels), np.corrcoef(labels.T), atol=1e-12)
    with_constant = np.column_stack([labels, np.ones(50)])
    correlations = label_correlations(with_constant)
    assert np.isnan(correlations[3]).all() and np.isnan(correlations[:, 3]).all()
    np.testing.assert_allclose(correlations[:3, :3], np.corrcoef(labels.T), atol=1e-12)


# --- FID and sFID -------------------------------------------------------------------------------------


def test_fid_equals_clean_fid():
    from cleanfid import fid as cleanfid

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 8)), rng.normal(0.3, 1.5, size=(200, 8))
    assert fid(a, b) == pytest.approx(cleanfid.fid_from_feats(a, b), rel=1e-6)


def test_fid_closed_form_1d():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 2.0, size=(500, 1)), rng.normal(-1.0, 0.5, size=(400, 1))
    expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert fid(a, b) == pytest.approx(expected, rel=1e-9)


def test_fid_closed_form_2d():
    rng = np.random.default_rng(1)
    # 2×2: Tr sqrt(Σ1 Σ2) = sqrt(Tr(Σ1 Σ2) + 2 sqrt(det Σ1 · det Σ2)).
    a = rng.multivariate_normal([0, 1], [[1, 0.5], [0.5, 2]], size=600)
    b = rng.multivariate_normal([1, 0], [[0.5, -0.2], [-0.2, 1]], size=500)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_trace = math.sqrt(np.trace(s1 @ s2) + 2 * math.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    diff = a.mean(0) - b.mean(0)
    assert fid(a, b) == pytest.approx(diff @ diff + np.trace(s1 + s2) - 2 * root_trace, rel=1e-9)


def test_fid_approaches_population_value():
    rng = np.random.default_rng(2)
    std1, std2 = np.array([1.0, 2.0]), np.array([0.5, 1.0])
    a = rng.normal([0.0, 0.0], std1, size=(40_000, 2))
    b = rng.normal([1.0, -1.0], std2, size=(40_000, 2))
    assert fid(a, b) == pytest.approx(2.0 + np.sum((std1 - std2) ** 2), abs=0.05)


@pytest.fixture
def iid_features():
    return np.random.default_rng(3).normal(size=(400, 4))


def test_sfid_of_unchanged_images_is_fid_between_halves(iid_features):
    # Unlike FID (here 0), sFID never compares a CE with its own source image.
    assert fid(iid_features, iid_features) == pytest.approx(0.0, abs=1e-9)
    result = sfid(iid_features, iid_features, np.ones(400, bool), n_splits=50)
    assert result["n_splits"] == 50 and np.isfinite(result["mean"]) and result["mean"] >= 0
    rng = np.random.default_rng(100)
    halves = [rng.permutation(400).reshape(2, 200) for _ in range(100)]
    reference = np.mean([fid(iid_features[a], iid_features[b]) for a, b in halves])
    assert result["mean"] == pytest.approx(reference, rel=0.2)
    assert result["std"] > 0


def test_sfid_grows_with_offset(iid_features):
    valid = np.ones(400, bool)
    offsets = (0.0, 0.25, 0.5, 1.0, 2.0)
    means = [sfid(iid_features, iid_features + offset, valid)["mean"] for offset in offsets]
    assert np.all(np.diff(means) > 0)
    assert means[-1] == pytest.approx(means[0] + 4 * 2.0**2, rel=0.05)


def test_sfid_ignores_invalid_ces(iid_features):
    valid = np.random.default_rng(4).random(400) < 0.7
    cfs = iid_features + 0.3
    garbage = cfs.copy()
    garbage[~valid] = 1e3
    assert sfid(iid_features, garbage, valid) == sfid(iid_features, cfs, valid)


def test_sfid_is_nan_with_too_few_valid_ces(iid_features):
    valid = np.zeros(400, bool)
    valid[:3] = True
    result = sfid(iid_features, iid_features, valid)
    assert math.isnan(result["mean"]) and math.isnan(result["std"])


# --- feature spaces -----------------------------------------------------------------------------------


class FakeInception(nn.Module):
    """StyleGAN/clean-fid interface: features (N, 2048) = [channel means, min, max, H, W, 0, ...]."""

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        features = torch.zeros(img.shape[0], 2048)
        features[:, :3] = img.mean(dim=(2, 3))
        features[:, 3] = img.amin(dim=(1, 2, 3))
        features[:, 4] = img.amax(dim=(1, 2, 3))
        features[:, 5] = img.shape[2]
        features[:, 6] = img.shape[3]
        return features if return_features else features[:, :1008]


def test_from_inception_feeds_rgb_299_in_0_255(tmp_path):
    path = tmp_path / "fake_inception.pt"
    torch.jit.save(torch.jit.script(FakeInception()), str(path))
    space = FeatureSpace.from_inception(path, CPU, batch_size=2)
    assert space.name == "inception-torchscript:fake_inception.pt"
    images = torch.tensor([-1.0, 1.0, 0.0]).view(3, 1, 1, 1).expand(3, 1, 32, 32)
    features = space.features(images)
    assert features.shape == (3, 2048)
    expected = [[0, 0, 0, 0, 0, 299, 299], [255] * 5 + [299, 299], [127.5] * 5 + [299, 299]]
    np.testing.assert_allclose(features[:, :7], expected, rtol=1e-6)


def test_from_inception_calls_plain_traced_module(tmp_path):
    torch.manual_seed(0)
    module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2048)).eval()
    path = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.trace(module, torch.zeros(1, 3, 299, 299)), str(path))
    images = torch.rand(2, 3, 299, 299) * 2 - 1
    features = FeatureSpace.from_inception(path, CPU).features(images)
    with torch.no_grad():
        expected = module((images + 1) * 127.5).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)


def test_feature_space_chooses_encoder_or_inception(tmp_path):
    torch.manual_seed(0)
    encoder = SimSiam(in_channels=1, width=4, feature_dim=8)
    images = torch.rand(5, 1, 16, 16) * 2 - 1
    space = feature_space(encoder, None, CPU)
    assert space.name == "simsiam-encoder"
    np.testing.assert_allclose(space.features(images), encode(encoder, images, CPU).numpy())
    missing = tmp_path / "inception-2015-12-05.pt"
    with pytest.raises(FileNotFoundError, match=r"inception-2015-12-05\.pt"):
        feature_space(encoder, str(missing), CPU)
    torch.jit.save(torch.jit.script(FakeInception()), str(missing))
    assert feature_space(encoder, str(missing), CPU).name == "inception-torchscript:inception-2015-12-05.pt"


# --- LPIPS and σ_L -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fallback_lpips():
    return Lpips(None, CPU)


def random_images(seed: int, shape=(4, 3, 32, 32)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_lpips_zero_symmetric_and_monotone(fallback_lpips):
    assert fallback_lpips.name == "lpips-alex-random-backbone(seed=0)"
    for shape in ((4, 3, 32, 32), (4, 1, 28, 28)):
        images = random_images(0, shape)
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        small, large = (images + 0.05 * noise).clamp(-1, 1), (images + 0.5 * noise).clamp(-1, 1)
        assert fallback_lpips(images, images).shape == (4,)
        np.testing.assert_allclose(fallback_lpips(images, images), 0.0, atol=1e-7)
        np.testing.assert_allclose(fallback_lpips(images, large), fallback_lpips(large, images), rtol=1e-5)
        assert torch.all(fallback_lpips(images, large) > fallback_lpips(images, small))


def test_lpips_fallback_is_deterministic_and_keeps_global_rng(fallback_lpips):
    torch.manual_seed(1234)
    state = torch.random.get_rng_state()
    other = Lpips(None, CPU)
    assert torch.equal(torch.random.get_rng_state(), state)
    a, b = random_images(2), random_images(3)
    assert torch.equal(other(a, b), fallback_lpips(a, b))


def test_lpips_uses_linear_layers_shipped_in_wheel(fallback_lpips):
    shipped = torch.load(f"{lpips_package.__path__[0]}/weights/v0.1/alex.pth", map_location="cpu")
    for index in range(5):
        layer = getattr(fallback_lpips.model, f"lin{index}").model[1]
        assert torch.equal(layer.weight, shipped[f"lin{index}.model.1.weight"])


def test_prepare_upsamples_small_and_grey_images():
    assert _prepare(torch.zeros(2, 1, 32, 32)).shape == (2, 3, 64, 64)
    assert _prepare(torch.zeros(2, 3, 32, 48)).shape == (2, 3, 64, 96)
    assert _prepare(torch.zeros(2, 3, 128, 128)).shape == (2, 3, 128, 128)


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    """A random torchvision AlexNet state dict: all ``features.*`` plus one (ignored) classifier entry."""
    torch.manual_seed(5)
    state = torchvision.models.alexnet(weights=None).state_dict()
    kept = {name: value for name, value in state.items() if name.startswith("features.")}
    kept["classifier.6.bias"] = state["classifier.6.bias"]
    path = tmp_path_factory.mktemp("alexnet") / "alexnet.pth"
    torch.save(kept, path)
    return path, kept


def test_lpips_loads_local_alexnet_backbone(alexnet_file, fallback_lpips):
    path, state = alexnet_file
    metric = Lpips(path, CPU)
    assert metric.name == "lpips-alex"
    net = metric.model.net
    convs = {0: net.slice1, 3: net.slice2, 6: net.slice3, 8: net.slice4, 10: net.slice5}
    for index, block in convs.items():
        conv = getattr(block, str(index))
        assert torch.equal(conv.weight, state[f"features.{index}.weight"])
        assert torch.equal(conv.bias, state[f"features.{index}.bias"])
    a, b = random_images(6), random_images(7)
    assert not torch.allclose(metric(a, b), fallback_lpips(a, b))


def test_lpips_never_touches_the_network(monkeypatch, alexnet_file):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse)
    assert Lpips(None, CPU).name.startswith("lpips-alex-random-backbone")
    assert Lpips(alexnet_file[0], CPU).name == "lpips-alex"


def test_sigma_l(fallback_lpips):
    runs = [random_images(seed) for seed in (10, 11, 12)]
    assert diversity_sigma_l([runs[0], runs[0].clone()], fallback_lpips) == pytest.approx(0.0, abs=1e-7)
    pairs = [fallback_lpips(runs[i], runs[j]) for i, j in ((0, 1), (0, 2), (1, 2))]
    expected = float(torch.stack(pairs).double().mean())
    assert diversity_sigma_l(runs, fallback_lpips) == pytest.approx(expected, rel=1e-6)
    assert expected > 0
    with pytest.raises(ValueError):
        diversity_sigma_l(runs[:1], fallback_lpips)


class _Store:
    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays, self.attrs = arrays, {}

    def read(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __contains__(self, name: str) -> bool:
        return name in self.arrays


class _Data:
    num_classes, attribute_names, mask_names = 2, [], []

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def array(self, name: str) -> np.ndarray:
        return {"images": self.images, "labels": np.zeros(len(self.images), int)}[name]

    def rows(self, name: str, index: np.ndarray) -> np.ndarray:
        return self.array(name)[index]


def test_s3_stays_a_simsiam_similarity_when_fid_uses_inception(tmp_path, monkeypatch):
    """With ``inception_weights`` FID and sFID move to Inception features; S³ (the thesis's cosine
    similarity of SimSiam features) must not."""
    from diffxai.jobs import cf_metrics

    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, (6, 1, 16, 16), dtype=np.uint8)
    x = torch.from_numpy(images).float() / 127.5 - 1
    cf = (x + 0.3 * torch.from_numpy(generator.standard_normal(x.shape)).float()).clamp(-1, 1)
    success = np.array([True, True, False, True, True, True])
    arrays = {"sample_ids": np.arange(6), "counterfactuals": cf.numpy(), "success": success,
              "targets": np.ones(6, int), "sources": np.zeros(6, int),
              "logits_after": np.tile(np.float32([[0.0, 3.0]]), (6, 1)),
              **{k: np.ones(6) for k in ("nfe", "nfe_backward", "classifier_calls", "classifier_gradients",
                                         "seconds")}}  # fmt: skip
    torch.manual_seed(0)
    encoder = SimSiam(in_channels=1, width=4, feature_dim=8).eval()
    models = {"classifier": nn.Sequential(nn.Flatten(), nn.Linear(256, 2)), "encoder": encoder}
    monkeypatch.setattr(cf_metrics, "open_store", lambda path, kind=None: _Store(arrays))
    monkeypatch.setattr(cf_metrics, "PreparedData", lambda path: _Data(images))
    monkeypatch.setattr(cf_metrics, "load_model", lambda name: (models[str(name)], {}))
    inception = tmp_path / "fake_inception.pt"  # 5 features: Fréchet distances of 2,048 take minutes
    module = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 5)).eval()
    torch.jit.save(torch.jit.trace(module, torch.zeros(1, 3, 299, 299)), str(inception))
    settings = {"inception_weights": str(inception), "lpips_weights": None, "cout_steps": 4, "sfid_splits": 2}
    inputs = cf_metrics.MetricInputs("store", "data", "classifier", "encoder")
    metrics = cf_metrics.compute(inputs, settings, 0, CPU)
    assert metrics["feature_space"] == "inception-torchscript:fake_inception.pt"
    expected = similarity_s3(
        encode(encoder, x, CPU).numpy()[success], encode(encoder, cf, CPU).numpy()[success]
    )
    assert metrics["s3"] == pytest.approx(float(np.mean(expected)), rel=1e-5)


# --- cases that tell the right definition from a near miss (mutants that survived before) --------


def test_flip_rate_counts_three_of_three_targets_not_two():
    assert flip_rate(np.array([1, 1, 1]), np.array([1, 1, 0])) == pytest.approx(2 / 3)


def test_cout_inserts_by_the_channel_sum_of_the_change_and_breaks_ties_in_pixel_order():
    from diffxai.metrics.counterfactual import _insertion_ranks

    x = torch.zeros(1, 1, 1, 4)
    cf = torch.tensor([[[[1.0, 1.0, 0.0, 1.0]]]])
    assert _insertion_ranks(x, cf).tolist() == [[0, 1, 3, 2]]
    x, cf = torch.zeros(1, 3, 1, 2), torch.zeros(1, 3, 1, 2)
    cf[0, :, 0, 0] = 0.5  # sum 1.5 beats a single channel of 0.9
    cf[0, 0, 0, 1] = 0.9
    assert _insertion_ranks(x, cf).tolist() == [[0, 1]]


def test_sfid_averages_both_directions_of_every_split():
    generator = np.random.default_rng(1)
    real = generator.normal(size=(20, 3))
    cf = real * 2 + generator.normal(size=(20, 3))
    result = sfid(real, cf, np.ones(20, bool), n_splits=3, seed=5)
    replay, values = np.random.default_rng(5), []
    for _ in range(3):
        order = replay.permutation(20)
        a, b = order[:10], order[10:]
        values.append((fid(real[b], cf[a]) + fid(real[a], cf[b])) / 2)
    assert result["mean"] == pytest.approx(np.mean(values), rel=1e-12)
    assert result["std"] == pytest.approx(np.std(values), rel=1e-12)


def test_fid_of_a_set_with_itself_is_never_negative():
    from diffxai.metrics.frechet import fid_from_features

    generator = np.random.default_rng(0)
    for _ in range(20):  # rounding makes the raw trace term slightly negative about half the time
        features = generator.normal(size=(generator.integers(3, 30), generator.integers(2, 20)))
        assert fid_from_features(features, features) >= 0


def test_cd_reads_the_query_row_of_a_full_correlation_matrix():
    generator = np.random.default_rng(0)
    before, after = generator.integers(0, 2, (30, 3)), generator.integers(0, 2, (30, 3))
    matrix = np.array([[1, 0.5, -0.2], [0.5, 1, 0.3], [-0.2, 0.3, 1]])
    full = correlation_difference(before, after, matrix, 1)["cd"]
    assert full == correlation_difference(before, after, matrix[1], 1)["cd"]
