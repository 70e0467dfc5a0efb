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
    scored_samples,
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


def write_samples(path, columns: dict[str, np.ndarray], acceptance_rate: float):
    """A variance_samples store of ``columns`` as jobs.variance_sample writes it."""
    specs = {name: ArraySpec(tuple(a.shape[1:]), str(a.dtype)) for name, a in columns.items()}
    with StoreWriter(
        path, STORE_KIND, specs, attrs={"summary": {"acceptance_rate": acceptance_rate}}
    ) as writer:
        writer.append(**columns)
        writer.finalize()
    return path


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
    store = write_samples(tmp_path / "samples.zarr", columns, acceptance_rate=0.0)
    cpu, settings = torch.device("cpu"), {"min_accepted": 2}
    record, sampled = sampled_feature({"kind": "continuous"}, store, None, cpu, settings, rng=None)
    assert (
        record["values_drawn"] == 2 and record["values_with_samples"] == 0 and record["values_dropped"] == 0
    )
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


def test_values_with_too_few_accepted_samples_leave_the_scores():
    value_index = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3])
    accepted = np.array([1, 1, 0, 1, 0, 1, 1, 1, 0], bool)  # accepted per value: 2, 1, 3, 0
    kept, dropped = scored_samples(accepted, value_index, min_accepted=2)
    assert kept.tolist() == [True, True, False, False, False, True, True, True, False]
    assert dropped == 1  # value 1; value 3 had no accepted sample to drop
    assert (
        scored_samples(accepted, value_index, 4)[0].sum() == 0
        and scored_samples(accepted, value_index, 4)[1] == 3
    )


def test_a_classifier_blind_to_the_feature_scores_zero_once_one_sample_values_are_dropped(tmp_path):
    """Y independent of V: values of one accepted sample each have within-variance 0 (local score
    1) and would lift the global score; with min_accepted they are left out."""
    rng = np.random.default_rng(0)
    big, n = 40, 4 * 40 + 4  # four values of 40 samples, four of one
    value_index = np.concatenate([np.repeat(np.arange(4), big), np.arange(4, 8)]).astype(np.int32)
    columns = {
        "images": rng.integers(0, 256, (n, 1, 4, 4)).astype(np.uint8),
        "value_index": value_index,
        "source_index": value_index.astype(np.int64),
        "source_label": np.zeros(n, np.int64),
        "target": value_index.astype(np.float32),
        "measured": value_index.astype(np.float32),
        "accepted": np.ones(n, np.uint8),
    }
    store = write_samples(tmp_path / "samples.zarr", columns, acceptance_rate=1.0)

    class Coin(torch.nn.Module):  # class from the first pixel's parity: independent of the value
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            parity = torch.round((x[:, 0, 0, 0] + 1) * 127.5) % 2
            return torch.stack([parity, 1 - parity], dim=1) * 10

    def global_score(min_accepted: int) -> tuple[float, dict]:
        settings = {"min_accepted": min_accepted, "bootstrap": 10}
        record, _ = sampled_feature({"kind": "continuous"}, store, Coin(), torch.device("cpu"), settings,
                                    np.random.default_rng(1))  # fmt: skip
        return record["scores"]["class"]["global_score"], record

    inflated, _ = global_score(1)
    honest, record = global_score(2)
    assert record["values_with_samples"] == 4 and record["values_dropped"] == 4
    assert record["accepted_per_value"] == [big] * 4
    assert honest < 0.1 < 0.4 < inflated  # the four one-sample values score 1 each: half the mass
