"""Synthetic dataset generators: ellipses and attributes, and building a configured dataset.

The ellipse factors are checked against an independent re-measurement of the stored
masks by second moments; the attribute correlations and region masks against their
definitions (configured phi coefficients; pixels that change when one attribute is toggled).
"""

from __future__ import annotations

import numpy as np
import pytest

from diffxai.data import attributes, ellipses
from diffxai.data.blobs import component_counts
from diffxai.data.measure import mask_moments
from diffxai.data.prepare import build_dataset
from diffxai.data.prepared import SPLITS, PreparedArrays, random_split

ELLIPSES = {
    "area_fraction": [0.04, 0.16],
    "aspect_ratio": [1.0, 3.0],
    "supersample": 4,
    "label": {"factor": "log_aspect_ratio", "threshold": "auto"},
}
N_ELLIPSES = 500
# Measured (seeds 0-5, n=500): median / 95th-percentile relative error of the re-measured
# aspect ratio ~1.5% / 5.6% at 32 px and ~0.6% / 2.2% at 64 px; of the area ~1.5% / 4.4%
# at 32 px and ~0.8% / 2.0% at 64 px. Swapped axes give ~66% error, area as a fraction ~100%.
TOLERANCES = {32: (0.03, 0.10), 64: (0.015, 0.05)}  # size -> (median, 95th percentile)

CORRELATIONS = {"blue": 0.8, "large": 0.4, "ring": -0.5}
ATTRIBUTES = {"task": "square", "correlations": CORRELATIONS, "supersample": 2}
N_ATTRIBUTES = 3000
ATTRIBUTE_SIZE = 16


@pytest.fixture(scope="module")
def ellipses_by_size() -> dict[int, PreparedArrays]:
    """500 ellipse images at 32 and at 64 px (same seed, so the same factors)."""
    rng = np.random.default_rng
    return {size: ellipses.generate(ELLIPSES, size, N_ELLIPSES, rng(0)) for size in TOLERANCES}


@pytest.fixture(params=sorted(TOLERANCES), ids=lambda size: f"{size}px")
def ellipse_data(
    request: pytest.FixtureRequest, ellipses_by_size: dict[int, PreparedArrays]
) -> tuple[int, PreparedArrays]:
    return request.param, ellipses_by_size[request.param]


@pytest.fixture(scope="module")
def attribute_data() -> PreparedArrays:
    """3000 attribute images at 16 px (about 5 s: the region masks render each image 9 times)."""
    return attributes.generate(ATTRIBUTES, ATTRIBUTE_SIZE, N_ATTRIBUTES, np.random.default_rng(0))


def factor(data: PreparedArrays, name: str) -> np.ndarray:
    return data.factors[:, data.factor_names.index(name)].astype(np.float64)


def remeasurement_errors(data: PreparedArrays, name: str) -> np.ndarray:
    """Relative error of factor ``name`` re-measured from the stored masks."""
    measured = mask_moments(data.masks[:, 0])[name]
    truth = factor(data, name)
    return np.abs(measured - truth) / truth


def attribute_mask(data: PreparedArrays, name: str) -> np.ndarray:
    """Region masks (N, H, W) as bool of one attribute."""
    return data.masks[:, data.mask_names.index(name)].astype(bool)


# --------------------------------------------------------------------------- ellipses


@pytest.mark.parametrize("name", ["aspect_ratio", "area"])
def test_ellipse_factors_match_remeasured_masks(ellipse_data: tuple[int, PreparedArrays], name: str) -> None:
    size, data = ellipse_data
    errors = remeasurement_errors(data, name)
    median_tolerance, p95_tolerance = TOLERANCES[size]
    assert np.median(errors) < median_tolerance
    assert np.percentile(errors, 95) < p95_tolerance


@pytest.mark.parametrize("name", ["aspect_ratio", "area"])
def test_ellipse_remeasurement_is_more_accurate_at_higher_resolution(
    ellipses_by_size: dict[int, PreparedArrays], name: str
) -> None:
    coarse = remeasurement_errors(ellipses_by_size[32], name)
    fine = remeasurement_errors(ellipses_by_size[64], name)
    assert np.median(fine) < np.median(coarse)
    assert np.percentile(fine, 95) < np.percentile(coarse, 95)


def test_ellipse_area_is_stored_in_pixels(ellipse_data: tuple[int, PreparedArrays]) -> None:
    size, data = ellipse_data
    fraction = factor(data, "area") / size**2
    assert fraction.min() >= ELLIPSES["area_fraction"][0]
    assert fraction.max() <= ELLIPSES["area_fraction"][1]


def test_ellipse_labels_are_balanced(ellipse_data: tuple[int, PreparedArrays]) -> None:
    _, data = ellipse_data
    standard_error = np.sqrt(0.25 / len(data.labels))
    assert abs(data.labels.mean() - 0.5) < 4 * standard_error


def test_ellipse_label_is_log_aspect_ratio_above_threshold(ellipse_data: tuple[int, PreparedArrays]) -> None:
    _, data = ellipse_data
    threshold = data.meta["label_threshold"]
    assert threshold == pytest.approx(np.log(3.0) / 2)  # middle of log([1, 3])
    expected = (factor(data, "log_aspect_ratio") > threshold).astype(np.int64)
    np.testing.assert_array_equal(data.labels, expected)


def test_ellipse_images_are_anti_aliased(ellipse_data: tuple[int, PreparedArrays]) -> None:
    _, data = ellipse_data
    assert ((data.images > 0) & (data.images < 255)).any(axis=(1, 2, 3)).all()


def test_ellipse_images_without_supersampling_are_binary() -> None:
    data = ellipses.generate({**ELLIPSES, "supersample": 1}, 16, 20, np.random.default_rng(0))
    assert set(np.unique(data.images)) == {0, 255}


def test_every_ellipse_lies_inside_the_image(ellipse_data: tuple[int, PreparedArrays]) -> None:
    _, data = ellipse_data
    for array in (data.images[:, 0], data.masks[:, 0]):
        border = np.concatenate([array[:, 0, :], array[:, -1, :], array[:, :, 0], array[:, :, -1]], axis=1)
        assert not border.any()


def test_ellipses_are_deterministic_given_the_seed() -> None:
    first = ellipses.generate(ELLIPSES, 16, 20, np.random.default_rng(5))
    second = ellipses.generate(ELLIPSES, 16, 20, np.random.default_rng(5))
    for name in ("images", "masks", "factors", "labels"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))


def test_ellipses_differ_between_seeds() -> None:
    first = ellipses.generate(ELLIPSES, 16, 20, np.random.default_rng(5))
    second = ellipses.generate(ELLIPSES, 16, 20, np.random.default_rng(6))
    assert not np.array_equal(first.images, second.images)
    assert not np.array_equal(first.factors, second.factors)


def test_ellipse_label_on_area_with_numeric_threshold() -> None:
    size, threshold = 32, 0.1 * 32**2
    params = {**ELLIPSES, "label": {"factor": "area", "threshold": threshold}}
    data = ellipses.generate(params, size, 100, np.random.default_rng(1))
    assert data.meta == {"label_factor": "area", "label_threshold": threshold}
    np.testing.assert_array_equal(data.labels, (factor(data, "area") > threshold).astype(np.int64))
    assert 0 < data.labels.sum() < len(data.labels)
    assert data.class_names == ["area<=102.4", "area>102.4"]


# --------------------------------------------------------------------------- attributes


@pytest.mark.parametrize("name", [a for a in attributes.ATTRIBUTE_NAMES if a != ATTRIBUTES["task"]])
def test_attribute_correlation_with_label_is_as_configured(attribute_data: PreparedArrays, name: str) -> None:
    column = attribute_data.attributes[:, attribute_data.attribute_names.index(name)]
    phi = np.corrcoef(column, attribute_data.labels)[0, 1]
    standard_error = 1 / np.sqrt(N_ATTRIBUTES)
    assert abs(phi - CORRELATIONS.get(name, 0.0)) < 4 * standard_error


def test_attribute_label_is_the_task_attribute(attribute_data: PreparedArrays) -> None:
    np.testing.assert_array_equal(attribute_data.labels, attribute_data.attributes[:, 0])
    assert attribute_data.class_names == ["not_square", "square"]


@pytest.mark.parametrize("name", attributes.ATTRIBUTE_NAMES)
def test_toggling_an_attribute_changes_only_pixels_in_its_mask(
    attribute_data: PreparedArrays, name: str
) -> None:
    data = attribute_data
    n, j = 40, data.attribute_names.index(name)
    toggled = data.attributes[:n].copy()
    toggled[:, j] = 1 - toggled[:, j]
    rendered = attributes.render(toggled, data.factors[:n], ATTRIBUTE_SIZE, ATTRIBUTES["supersample"])
    changed = (np.round(rendered * 255).astype(np.uint8) != data.images[:n]).any(axis=1)
    mask = attribute_mask(data, name)[:n]
    assert not (changed & ~mask).any()
    assert changed.any(axis=(1, 2)).all()  # and the toggle is visible in every image


@pytest.mark.parametrize("name", attributes.ATTRIBUTE_NAMES)
def test_every_attribute_mask_is_non_empty_in_every_image(attribute_data: PreparedArrays, name: str) -> None:
    assert attribute_mask(attribute_data, name).any(axis=(1, 2)).all()


@pytest.mark.parametrize("name", ["corner_mark", "dot"])
def test_marks_do_not_overlap_the_object(attribute_data: PreparedArrays, name: str) -> None:
    obj = attribute_mask(attribute_data, "square") | attribute_mask(attribute_data, "blue")
    obj |= attribute_mask(attribute_data, "large")
    assert not (attribute_mask(attribute_data, name) & obj).any()


def test_changing_the_task_attribute_changes_the_labels() -> None:
    params = {"task": "ring", "correlations": {"square": 0.6}, "supersample": 1}
    data = attributes.generate(params, 16, 200, np.random.default_rng(2))
    np.testing.assert_array_equal(data.labels, data.attributes[:, data.attribute_names.index("ring")])
    assert not np.array_equal(data.labels, data.attributes[:, data.attribute_names.index("square")])
    assert data.class_names == ["not_ring", "ring"]
    assert data.meta["task"] == "ring"


# --------------------------------------------------------------------------- build_dataset


def ellipse_dataset_config(seed: int = 7) -> dict:
    return {
        "kind": "ellipses",
        "image_size": 16,
        "n_images": 200,
        "split": {"val": 0.1, "test": 0.25},
        "seed": seed,
        "ellipses": ELLIPSES,
    }


def test_build_dataset_is_deterministic() -> None:
    first, second = build_dataset(ellipse_dataset_config()), build_dataset(ellipse_dataset_config())
    for name in ("images", "masks", "factors", "labels", "split"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))


def test_build_dataset_depends_on_the_seed() -> None:
    first, second = build_dataset(ellipse_dataset_config(7)), build_dataset(ellipse_dataset_config(8))
    assert not np.array_equal(first.images, second.images)
    assert not np.array_equal(first.split, second.split)


def test_build_dataset_split_fractions_are_as_configured() -> None:
    data = build_dataset(ellipse_dataset_config())
    counts = np.bincount(data.split, minlength=3)
    assert counts[SPLITS["val"]] == 20
    assert counts[SPLITS["test"]] == 50
    assert counts[SPLITS["train"]] == 130


@pytest.mark.parametrize(
    ("kind", "builds_with", "not_with"),
    [
        ("ellipses", "diffxai.data.ellipses", ["diffxai.data.adapters", "diffxai.data.attributes"]),
        ("attributes", "diffxai.data.attributes", ["diffxai.data.adapters", "diffxai.data.ellipses"]),
        ("hdf5", "diffxai.data.adapters", ["diffxai.data.ellipses", "diffxai.data.attributes"]),
    ],
)
def test_a_datasets_code_hash_covers_its_own_kinds_module_only(kind, builds_with, not_with):
    from diffxai.data.kinds import dataset_module
    from diffxai.provenance import module_closure

    closure = module_closure(["diffxai.jobs.prepare_data", dataset_module(kind)])
    assert builds_with in closure and not set(not_with) & set(closure)
    with pytest.raises(ValueError, match="dataset kind 'png': allowed ellipses, attributes"):
        dataset_module("png")


def test_every_stored_ellipse_mask_is_one_blob(ellipse_data: tuple[int, PreparedArrays]) -> None:
    _, data = ellipse_data
    assert (component_counts(data.masks[:, 0]) == 1).all()


def test_component_counts_separate_blobs_and_join_diagonal_neighbours() -> None:
    masks = np.zeros((4, 6, 6))
    masks[1, 1:3, 1:3] = 1
    masks[2, 0, 0] = masks[2, 4:6, 4:6] = 1  # two blobs
    masks[3, [0, 1, 2], [0, 1, 2]] = 1  # a diagonal line: one blob by its corners
    assert component_counts(masks).tolist() == [0, 1, 2, 1]


def test_random_split_sizes_are_the_rounded_fractions_and_never_empty():
    split = random_split(50, {"val": 0.1, "test": 0.2}, np.random.default_rng(0))
    assert [(split == SPLITS[name]).sum() for name in ("train", "val", "test")] == [35, 5, 10]
    with pytest.raises(ValueError, match="no val or no test image"):
        random_split(10, {"val": 0.04, "test": 0.2}, np.random.default_rng(0))
    with pytest.raises(ValueError, match="no training image"):  # 6 + 4 of 10
        random_split(10, {"val": 0.55, "test": 0.44}, np.random.default_rng(0))
    assert (random_split(100, {"val": 0.55, "test": 0.44}, np.random.default_rng(0)) == 0).sum() == 1


def test_the_centre_label_range_is_where_centres_are_drawn() -> None:
    """Centres keep a half-extent and a margin off the border; the smallest possible half-extent
    is the smallest semi-minor axis (the smallest, most elongated ellipse, upright), so every
    centre lies in the range and some come within a pixel and a half of its ends."""
    params = {"area_fraction": [0.04, 0.16], "aspect_ratio": [1.0, 3.0], "label": {"factor": "center_x"}}
    low, high = ellipses.label_range(params, 32)
    factors = ellipses.sample_factors(params, 32, 5000, np.random.default_rng(0))
    centres = factors[:, ellipses.FACTOR_NAMES.index("center_x")]
    assert low <= centres.min() < low + 1.5 and high - 1.5 < centres.max() <= high  # the corner is rare
    assert low == pytest.approx(1 + np.sqrt(0.04 * 32**2 / (np.pi * 3)))


def test_angles_stay_in_the_half_turn_their_label_range_names() -> None:
    params = {"area_fraction": [0.05, 0.1], "aspect_ratio": [1.0, 2.0]}
    factors = ellipses.sample_factors(params, 32, 500, np.random.default_rng(0))
    angles = factors[:, ellipses.FACTOR_NAMES.index("angle")]
    assert angles.min() >= 0 and angles.max() < np.pi


def test_the_auto_aspect_ratio_threshold_is_the_geometric_middle() -> None:
    params = {"area_fraction": [0.05, 0.1], "aspect_ratio": [1.0, 4.0],
              "label": {"factor": "aspect_ratio", "threshold": "auto"}}  # fmt: skip
    assert ellipses.label_threshold(params, 32) == pytest.approx(2.0)  # log-uniform: sqrt(1 · 4)


def test_attribute_labels_are_a_fair_coin() -> None:
    drawn = attributes.sample_attributes(
        {"task": "square", "correlations": {}}, 4000, np.random.default_rng(0)
    )
    assert drawn[:, 0].mean() == pytest.approx(0.5, abs=0.03)
