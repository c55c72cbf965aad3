"""J (region similarity): intersection over union of two boolean masks (docs/evaluation-davis16.md §4)."""
from __future__ import annotations

import numpy as np


def jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    """|pred & gt| / |pred | gt| as a float64 ratio of integer counts; 1 when both are empty."""
    union = int(np.count_nonzero(pred | gt))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(pred & gt)) / union
