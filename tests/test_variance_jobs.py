"""The variance jobs' own pieces: mask dilation, rejection, value draws, undefined scores, the table."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from diffxai.jobs.variance_sample import STORE_KIND, accepted_samples, dilate, draw_values
from diffxai.jobs.variance_scores import (
    PREDICTIONS_KIND,
    SCORE_KEYS,
    markdown_table,
    sampled_feature,
    score_variants,
    write_predictions,
)
from diffxai.store import ArraySpec, StoreWriter, open_store


def test_dilation_grows_a_pixel_into_a_square_of_side_2p_plus_1():
    mask = torch.zeros(1, 1, 9, 9)
    mask[0, 0, 4, 4] = 1
    grown = dilate(mask, 2)
    expected = torch.zeros(1, 1, 9, 9)
    expected[0, 0, 2:7, 2:7] = 1
    assert torch.equal(grown, expected)
    assert torch.equal(dilate(mask, 0), mask)


def test_rejection_keeps_samples_within_tolerance_times_std():
    target = np.zeros(4)
    measured = np.array([0.29, -0.3, 0.31, -0.5])
    assert accepted_samples(measured, target, 0.3, 1.0).tolist() == [True, True, False, False]
    assert accepted_samples(measured, target, 0.3, 2.0).tolist() == [True, True, True, True]


def test_values_are_distinct_test_images_unless_more_are_asked_for():
    rng = np.random.default_rng(0)
    drawn = draw_values(10, 10, rng)
    assert sorted(drawn.tolist()) == list(range(10))
    assert len(draw_values(3, 7, rng)) == 7


def test_a_constant_classifier_gives_undefined_class_scores_but_defined_probability_scores():
    probabilities = np.tile([[0.8, 0.2]], (6, 1))
    probabilities[:3] = [0.7, 0.3]  # argmax constant, probabilities vary with the group
    groups = np.array([0, 0, 0, 1, 1, 1])
    variants = score_variants(probabilities, groups, np.full(6, 1 / 6), np.array([0, 0, 0, 1, 1, 1]))
    assert variants["class"]["global_score"] is None and "constant" in variants["class"]["undefined"]
    assert variants["class_balanced"]["global_score"] is None
    assert variants["probability"]["global_score"] == pytest.approx(1.0)  # the group fixes the probability
    assert set(SCORE_KEYS) <= set(variants["probability"])


def test_table_prints_a_dash_for_undefined_scores():
    undefined = dict.fromkeys(SCORE_KEYS)
    defined = {**undefined, "global_score": 0.5, "local_scores": np.array([0.25, 0.75])}
    bootstrap = {"mean_local_variance": None, "global_variance": None}
    summary = {
        "classifier": "c",
        "dataset": "d",
        "features": {
            "v": {
                "kind": "discrete",
                "scores": {"class": undefined, "probability": defined, "class_balanced": undefined},
                "bootstrap": bootstrap,
            }
        },
    }
    table = markdown_table(summary, [1]).splitlines()
    assert table[-1].startswith("| v | discrete | – | 0.500 | – | – |")
    # "median |err|/std" is one header cell: every row has as many cells as the header
    cells = [len(re.split(r"(?<!\\)\|", line)) for line in table[2:]]
    assert len(set(cells)) == 1, table


def test_a_feature_with_no_accepted_sample_is_undefined_and_still_written(tmp_path):
    n = 4
    columns = {
        "images": np.zeros((n, 1, 4, 4), np.uint8),
        "value_index": np.array([0, 0, 1, 1], np.int32),
        "source_index": np.arange(n, dtype=np.int64),
        "source_label": np.zeros(n, np.int64),
        "target": np.zeros(n, np.float32),
        "measured": np.ones(n, np.float32),
        "accepted": np.zeros(n, np.uint8),
    }
    specs = {name: ArraySpec(tuple(a.shape[1:]), str(a.dtype)) for name, a in columns.items()}
    store = tmp_path / "samples.zarr"
    with StoreWriter(store, STORE_KIND, specs, attrs={"summary": {"acceptance_rate": 0.0}}) as writer:
        writer.append(**columns)
        writer.finalize()
    record, sampled = sampled_feature(
        {"kind": "continuous"}, store, classifier=None, device=torch.device("cpu"), settings={}, rng=None
    )
    assert record["values_drawn"] == 2 and record["values_with_samples"] == 0
    for variant in record["scores"].values():
        assert variant["global_score"] is None and "tolerance" in variant["undefined"]
    assert record["bootstrap"]["global_variance"] is None
    assert len(sampled.images) == 0
    predictions = tmp_path / "predictions.zarr"
    write_predictions(predictions, np.arange(3), np.full((3, 2), 0.5), {"v": sampled}, {})
    assert open_store(predictions, kind=PREDICTIONS_KIND).read("v_rows").shape == (0,)
    row = markdown_table(
        {"classifier": "c", "dataset": "d", "features": {"v": {**record, "kind": "continuous"}}}, [1]
    )
    assert "| v | continuous | – | – | – |" in row
