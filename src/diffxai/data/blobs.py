"""Count the blobs of binary masks.

Every ellipse image holds one ellipse, so a generated image that binarises into none or
several blobs is an artefact of the generator, and moments of such a mask describe no
ellipse. Kept apart from :mod:`diffxai.data.measure` so that the jobs that only measure
moments do not depend on it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# 8-connectivity: a thin diagonal ellipse binarises into pixels that touch only at corners
EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


def component_counts(masks: np.ndarray) -> np.ndarray:
    """(N,) int: connected blobs (8-connectivity) in each binary mask (N, H, W)."""
    counts = [ndimage.label(mask > 0, structure=EIGHT_NEIGHBOURS)[1] for mask in masks]
    return np.array(counts, dtype=np.int64)
