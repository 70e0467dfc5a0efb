"""Captions from dataset factors and attributes: bins, templates, words."""

from __future__ import annotations

import numpy as np

from diffxai.data.captions import (
    attribute_captions,
    caption_variants,
    caption_words,
    dataset_captions,
    ellipse_captions,
    orientation_words,
    size_words,
)


def _factors(**columns: list[float]) -> dict[str, np.ndarray]:
    """Factor arrays with defaults for the columns not given (all of one length)."""
    n = len(next(iter(columns.values())))
    defaults = {"area": [50.0] * n, "aspect_ratio": [3.0] * n, "angle": [0.0] * n, "center_x": [16.0] * n}
    return {name: np.asarray(columns.get(name, value)) for name, value in defaults.items()}


def test_orientation_bins_wrap_around_pi() -> None:
    angles = np.array([0.0, np.pi - 0.01, np.pi / 4, np.pi / 2 + 0.3, 3 * np.pi / 4, np.pi + 0.1, -0.1])
    expected = [
        "horizontal",
        "horizontal",
        "diagonal",
        "vertical",
        "antidiagonal",
        "horizontal",
        "horizontal",
    ]
    assert orientation_words(angles).tolist() == expected


def test_bin_edges_of_orientation() -> None:
    eps = 1e-6
    angles = np.array([np.pi / 8 - eps, np.pi / 8 + eps, 7 * np.pi / 8 - eps, 7 * np.pi / 8 + eps])
    assert orientation_words(angles).tolist() == ["horizontal", "diagonal", "antidiagonal", "horizontal"]


def test_ellipse_captions_on_hand_made_factors() -> None:
    factors = _factors(
        area=[10.0, 50.0, 90.0],
        aspect_ratio=[3.0, 1.5, 1.99],
        angle=[np.pi / 2, np.pi - 0.01, np.pi / 4],
        center_x=[5.0, 16.0, 30.0],
    )
    assert ellipse_captions(factors, image_size=32) == [
        "a small elongated ellipse, vertical, left",
        "a medium oval ellipse, horizontal, center",
        "a large oval ellipse, diagonal, right",
    ]


def test_captions_that_differ_in_aspect_ratio_differ_only_in_the_elongation_word() -> None:
    # no other word may give elongation away (a round-only omission of the orientation did)
    factors = _factors(aspect_ratio=[1.0, 1.39, 1.4, 2.5], angle=[np.pi / 2] * 4, center_x=[11.0] * 4)
    captions = ellipse_captions(factors, image_size=32)
    assert [c.replace("round", "X").replace("oval", "X").replace("elongated", "X") for c in captions] == [
        captions[0].replace("round", "X")
    ] * 4
    assert captions[0].endswith("round ellipse, vertical, center")
    assert captions[2].endswith("oval ellipse, vertical, center")


def test_size_tertiles_split_a_uniform_set_into_thirds() -> None:
    area = np.random.default_rng(0).permutation(np.arange(1.0, 301.0))
    words = size_words(area)
    for word in ("small", "medium", "large"):
        assert np.sum(words == word) == 100
    assert set(words[area <= 100]) == {"small"}
    assert set(words[area > 200]) == {"large"}


def test_attribute_captions() -> None:
    attributes = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]], dtype=np.uint8)
    assert attribute_captions(attributes, ["hat", "glasses", "beard"]) == [
        "a picture with hat and beard",
        "a picture",
        "a picture with glasses",
    ]


class _FakeData:
    """The part of ``PreparedData`` that captions read."""

    def __init__(self, factors: dict[str, np.ndarray], attributes: np.ndarray | None) -> None:
        self.factor_names = list(factors)
        self._factors = factors
        self.attribute_names = [] if attributes is None else [f"a{i}" for i in range(attributes.shape[1])]
        self._arrays = {"labels": np.zeros(2, dtype=np.int64), "attributes": attributes}
        self.image_size = (32, 32)

    def factor(self, name: str) -> np.ndarray:
        return self._factors[name]

    def array(self, name: str) -> np.ndarray:
        return self._arrays[name]


def test_dataset_captions_choose_the_richest_source() -> None:
    ellipses = _factors(area=[10.0, 90.0], center_x=[2.0, 30.0])
    attributes = np.array([[1, 0], [0, 0]], dtype=np.uint8)
    assert dataset_captions(_FakeData(ellipses, attributes)) == ellipse_captions(ellipses, 32)
    assert dataset_captions(_FakeData({"x": np.zeros(2)}, attributes)) == ["a picture with a0", "a picture"]
    assert dataset_captions(_FakeData({}, None)) == ["a picture", "a picture"]


def test_caption_words() -> None:
    captions = ["a Small elongated ellipse, vertical, left", "a picture with hat and beard"]
    assert caption_words(captions) == sorted(
        ["a", "small", "elongated", "ellipse", "vertical", "left", "picture", "with", "hat", "and", "beard"]
    )


TEMPLATES = ("{}", "a picture of {}", "an image with {}")


def test_caption_variants_without_dropout_in_one_template_are_the_complete_captions() -> None:
    ellipses = _factors(area=[10.0, 50.0, 90.0], aspect_ratio=[1.0, 1.7, 3.0], center_x=[2.0, 16.0, 30.0])
    variants = caption_variants(_FakeData(ellipses, None), 4, 0.0, ["{}"], np.random.default_rng(0))
    assert variants == [[caption] * 4 for caption in ellipse_captions(ellipses, 32)]


def test_caption_variants_drop_each_phrase_at_the_asked_rate_and_keep_the_grammar() -> None:
    n, count, dropout = 200, 10, 0.3
    rng = np.random.default_rng(1)
    ellipses = _factors(
        area=rng.uniform(10, 90, n), aspect_ratio=rng.uniform(1, 4, n),
        angle=rng.uniform(0, np.pi, n), center_x=rng.uniform(0, 32, n),
    )  # fmt: skip
    complete = ellipse_captions(ellipses, 32)
    rng = np.random.default_rng(2)
    variants = caption_variants(_FakeData(ellipses, None), count, dropout, TEMPLATES, rng)
    kept = {word_list: 0 for word_list in ("size", "elongation", "orientation", "position")}
    templates_used = set()
    for full, captions in zip(complete, variants, strict=True):
        head, orientation, position = full.split(", ")
        _, size, elongation, _ = head.split(" ")
        for caption in captions:
            template = next(t for t in TEMPLATES[::-1] if caption.startswith(t.format("")))
            templates_used.add(template)
            description = caption[len(template.format("")) :]
            noun, *phrases = description.split(", ")
            words = noun.split(" ")
            assert words[0] == "a" and words[-1] == "ellipse"
            assert words[1:-1] == [w for w in (size, elongation) if w in words[1:-1]]
            assert phrases == [p for p in (orientation, position) if p in phrases]
            kept["size"] += size in words
            kept["elongation"] += elongation in words
            kept["orientation"] += orientation in phrases
            kept["position"] += position in phrases
    assert templates_used == set(TEMPLATES)
    for factor, count_kept in kept.items():
        assert abs(count_kept / (n * count) - (1 - dropout)) < 0.03, factor


def test_caption_variants_of_attributes_drop_only_present_attributes() -> None:
    attributes = np.array([[1, 1, 0], [0, 0, 0]], dtype=np.uint8)
    data = _FakeData({}, attributes)
    variants = caption_variants(data, 50, 0.5, ["{}"], np.random.default_rng(0))
    both = "a picture with a0 and a1"
    assert set(variants[0]) == {"a picture", "a picture with a0", "a picture with a1", both}
    assert set(variants[1]) == {"a picture"}
    assert (
        caption_variants(_FakeData({}, None), 2, 0.5, TEMPLATES[1:2], np.random.default_rng(0))
        == [["a picture of a picture"] * 2] * 2
    )
