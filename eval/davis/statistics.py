"""Per-sequence statistics and data-set averages of the MATLAB toolbox (docs/evaluation-davis16.md §7, §6.14)."""
from __future__ import annotations

import math

import numpy as np

from .temporal import T_SCALE

N_DECAY_BINS = 4
RECALL_THRESHOLD = 0.5


def _mean(values: np.ndarray) -> float:
    """Sequential-sum mean (MATLAB/Octave ``mean`` order)."""
    return float(np.cumsum(values)[-1] / values.size)


def decay(values: np.ndarray) -> float:
    """mean(bin 1) - mean(bin 4) over 4 bins with edges round(linspace(1, L, 5)) (1-based,
    MATLAB rounding half away from zero, both ends inclusive)."""
    n = values.size
    edges = [math.floor(1 + k * (n - 1) / N_DECAY_BINS + 0.5) for k in range(N_DECAY_BINS + 1)]
    first = values[edges[0] - 1:edges[1]]
    last = values[edges[-2] - 1:edges[-1]]
    return _mean(first) - _mean(last)


def region_statistics(values: np.ndarray) -> dict[str, float]:
    """mean, recall (fraction > 0.5) and decay of one sequence's per-frame J or F."""
    values = np.asarray(values, dtype=np.float64)
    return {"mean": _mean(values),
            "recall": _mean((values > RECALL_THRESHOLD).astype(np.float64)),
            "decay": decay(values)}


def stability_mean(pair_values: np.ndarray) -> float:
    """Sequence T: 5 x NaN-mean of the per-pair values; NaN when every pair is NaN."""
    pair_values = np.asarray(pair_values, dtype=np.float64)
    valid = pair_values[~np.isnan(pair_values)]
    return T_SCALE * _mean(valid) if valid.size else math.nan


def average(values: list[float]) -> float:
    """Unweighted mean over sequences (NaN propagates, as MATLAB ``mean`` does)."""
    return _mean(np.asarray(values, dtype=np.float64)) if values else math.nan
