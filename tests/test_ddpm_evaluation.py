"""The DDPM evaluation's blob measures on masks of known content."""

from __future__ import annotations

import numpy as np

from diffxai.data import ellipses
from diffxai.data.measure import mask_moments
from diffxai.jobs.evaluate_ddpm import blob_metrics
from tests.test_datasets import ELLIPSES


def test_one_blob_ks_leaves_out_the_samples_with_extra_blobs() -> None:
    test_masks = ellipses.generate(ELLIPSES, 32, 200, np.random.default_rng(0)).masks[:, 0].astype(np.float64)
    samples = test_masks[:100].copy()
    samples[:10, :2, :2] = 1  # a second blob in the corner of 10 samples
    samples[90:] = 0  # 10 samples with nothing drawn
    sample_moments = mask_moments(samples)
    result = blob_metrics(samples, sample_moments, test_masks[:100], mask_moments(test_masks[:100]))

    assert result["blobs"]["samples"] == {"none": 0.1, "one": 0.8, "several": 0.1}
    assert result["blobs"]["test"] == {"none": 0.0, "one": 1.0, "several": 0.0}
    for factor, ks in result["ks_moments_one_blob"].items():
        # the 80 one-blob samples are test masks 10..89, a subset of the 100 references
        assert 0 < ks["ks"] <= 0.2 + 1e-12, factor  # a subset of 80 of 100 lies within 20 %
        assert ks["samples_mean"] == mask_moments(test_masks[10:90])[factor].mean()


def test_no_one_blob_sample_gives_no_one_blob_ks() -> None:
    empty = np.zeros((4, 8, 8))
    reference = np.zeros((4, 8, 8))
    reference[:, 2:5, 2:6] = 1
    result = blob_metrics(empty, mask_moments(empty), reference, mask_moments(reference))
    assert result["blobs"]["samples"]["none"] == 1.0
    assert result["ks_moments_one_blob"] == {}
