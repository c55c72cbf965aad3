"""The ``main_VSOD.m`` aggregation: per-sequence means, then unweighted means over sequences.

* Sequence (lines 115-122): S, wF, adpF, MAE and the F/E curves are means over its evaluated
  frames.  adpE reproduces the script's index bug (docs/evaluation-vsod.md §5, docs/deviations.md D43) by default: frame i is stored at position i
  instead of i-1, so the array keeps a leading 0 and the sequence adpE is sum / (n + 1).
  ``fix_adaptive_e=True`` divides by n.
* Dataset (lines 137-145): every number is the unweighted mean of the sequence numbers (a short
  sequence weighs as much as a long one); maxF/meanF (maxE/meanE) are the max/mean over the 256
  thresholds of the mean of the sequence curves, not means of per-sequence maxima.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eval.sod.metrics import FrameScores

SCHEMA_KEYS = ("S", "maxE", "meanE", "adpE", "maxF", "meanF", "adpF", "wF", "MAE", "n_sequences", "n_frames")
_CURVES = ("F", "E", "precision", "recall")
_SCALARS = ("S", "wF", "adpF", "MAE")


@dataclass(frozen=True)
class SequenceScores(FrameScores):
    """Means over the evaluated frames of one sequence (the fields of FrameScores) and their count."""

    n_frames: int


@dataclass(frozen=True)
class DatasetScores:
    """Dataset numbers of main_VSOD.m plus the dataset curves and the per-sequence scores."""

    S: float
    maxE: float
    meanE: float
    adpE: float
    maxF: float
    meanF: float
    adpF: float
    wF: float
    MAE: float
    n_sequences: int
    n_frames: int
    F: np.ndarray
    E: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    sequences: dict[str, SequenceScores]

    def summary(self) -> dict[str, float | int | None]:
        """The JSON-schema entry: the SCHEMA_KEYS numbers, NaN as None."""
        out: dict[str, float | int | None] = {}
        for key in SCHEMA_KEYS:
            value = getattr(self, key)
            out[key] = value if isinstance(value, int) else (None if np.isnan(value) else float(value))
        return out


def aggregate_sequence(frames: list[FrameScores], fix_adaptive_e: bool = False) -> SequenceScores:
    """Sequence numbers from its frame scores (see module doc for the adpE divisor)."""
    if not frames:
        raise ValueError("a sequence needs at least one evaluated frame")
    scalars = {key: float(np.mean([getattr(f, key) for f in frames])) for key in _SCALARS}
    curves = {key: np.mean(np.stack([getattr(f, key) for f in frames]), axis=0) for key in _CURVES}
    adaptive_e = [f.adpE for f in frames]
    if not fix_adaptive_e:
        adaptive_e = [0.0] + adaptive_e  # main_VSOD.m line 97: adpEmeasure(i) with i starting at 2
    return SequenceScores(adpE=float(np.mean(adaptive_e)), n_frames=len(frames), **scalars, **curves)


def aggregate_dataset(sequences: dict[str, SequenceScores]) -> DatasetScores:
    """Dataset numbers: unweighted means over sequences; max/mean of the mean curves."""
    if not sequences:
        raise ValueError("a dataset needs at least one evaluated sequence")
    seqs = list(sequences.values())
    scalars = {key: float(np.mean([getattr(s, key) for s in seqs])) for key in _SCALARS + ("adpE",)}
    curves = {key: np.mean(np.stack([getattr(s, key) for s in seqs]), axis=0) for key in _CURVES}
    return DatasetScores(
        maxE=float(np.max(curves["E"])), meanE=float(np.mean(curves["E"])),
        maxF=float(np.max(curves["F"])), meanF=float(np.mean(curves["F"])),
        n_sequences=len(seqs), n_frames=sum(s.n_frames for s in seqs),
        sequences=dict(sequences), **scalars, **curves)
