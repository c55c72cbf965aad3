"""Per-frame V-SOD metrics with the semantics of the DAVSOD / FSNet MATLAB files.

Which code computes what, and why:

* **S-measure**: pysodmetrics ``Smeasure`` (object score, region SSIM and the special cases are
  bit-identical to ``StructureMeasure.m``), with ``region`` overridden: MATLAB splits at
  ``round(mean 1-based coordinate)`` rounded half *away from zero*, pysodmetrics rounds the 0-based
  mean half to *even* (differs when the centroid is odd + 0.5).
* **MAE**: pysodmetrics ``MAE.cal_mae`` on the MATLAB-normalised map (identical to ``CalMAE``).
* **F and E curves, adaptive F/E**: own code. MATLAB thresholds at the 256 values of
  ``1:-1/255:0`` (some one ulp off ``k/255``), uses ``sal >= t`` for F but ``sal > t`` for E, and
  does not cap the adaptive E threshold; pysodmetrics uses integer levels and ``>=`` for both,
  which moves meanF/meanE by up to 1e-3. The curves are computed from per-level pixel counts (one
  ``bincount`` per frame) instead of 256 full-image binarisations; the E-measure of a binary map
  takes only four per-pixel values, so it is a weighted sum of four terms.
* **Weighted F**: own code (``original_WFb.m``). pysodmetrics' ``cal_wfm`` agrees to ~1e-9 but
  evaluates the distance weights in double where MATLAB's ``bwdist`` returns single, and its
  non-separable 7x7 convolution makes it ~2x slower than the separable filter used here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import py_sod_metrics
from scipy import ndimage

from eval.sod.images import Prediction

EPS = np.spacing(1.0)  # MATLAB eps
BETA2 = 0.3  # F-measure beta^2


def matlab_colon(start: float, step: float, stop: float) -> np.ndarray:
    """``start:step:stop`` as MATLAB's colon operator builds it (MathWorks' published algorithm).

    The first half is ``start + k*step``, the second half ``stop - k*step`` counted from the end,
    and the midpoint of an even number of intervals is ``(start + stop)/2``.
    """
    n = int(np.floor((stop - start) / step + 2.0 * EPS * max(abs(start), abs(stop))))
    out = np.empty(n + 1, dtype=np.float64)
    k = np.arange(n // 2 + 1, dtype=np.float64)
    out[: n // 2 + 1] = start + k * step
    out[n - k.astype(np.int64)] = stop - k * step
    if n % 2 == 0:
        out[n // 2] = (start + stop) / 2
    return out


THRESHOLDS = matlab_colon(1.0, -1 / 255, 0.0)  # main_VSOD.m: Thresholds = 1:-1/255:0


@dataclass(frozen=True)
class FrameScores:
    """Scores of one frame; curves are indexed like THRESHOLDS (1.0 first)."""

    S: float
    wF: float
    adpF: float
    adpE: float
    MAE: float
    F: np.ndarray
    E: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


def _round_half_away(x: float) -> int:
    """MATLAB ``round`` for a non-negative value."""
    whole = np.floor(x)
    return int(whole) + int(x - whole >= 0.5)


class MatlabSmeasure(py_sod_metrics.Smeasure):
    """pysodmetrics S-measure with StructureMeasure.m's centroid rounding (see module doc)."""

    def region(self, pred: np.ndarray, gt: np.ndarray) -> float:
        """S_region.m: split at the rounded 1-based foreground centroid, area-weighted SSIM."""
        h, w = gt.shape
        total = np.count_nonzero(gt)
        cols = np.count_nonzero(gt, axis=0) @ np.arange(1, w + 1)
        rows = np.count_nonzero(gt, axis=1) @ np.arange(1, h + 1)
        x, y = _round_half_away(cols / total), _round_half_away(rows / total)
        if x == w or y == h:
            return float("nan")  # an empty block: MATLAB's mean2 of it is NaN, and NaN * 0 = NaN
        area = h * w
        w1 = x * y / area
        w2 = (w - x) * y / area
        w3 = x * (h - y) / area
        w4 = 1.0 - w1 - w2 - w3
        return (w1 * self.ssim(pred[:y, :x], gt[:y, :x]) + w2 * self.ssim(pred[:y, x:], gt[:y, x:])
                + w3 * self.ssim(pred[y:, :x], gt[y:, :x]) + w4 * self.ssim(pred[y:, x:], gt[y:, x:]))


_SMEASURE = MatlabSmeasure(alpha=0.5)
_MAE = py_sod_metrics.MAE()


def _gaussian_taps() -> np.ndarray:
    """1-D factor of fspecial('gaussian', 7, 5) (the 2-D kernel is its outer product)."""
    x = np.arange(-3, 4, dtype=np.float64)
    taps = np.exp(-(x * x) / (2 * 5.0 * 5.0))
    return taps / taps.sum()


_GAUSS7 = _gaussian_taps()
_LOG_HALF_OVER_5 = np.float32(np.log(1 - 0.5) / 5)


def weighted_fmeasure(sal: np.ndarray, gt: np.ndarray) -> float:
    """original_WFb.m (Margolin et al., beta = 1); 0 for an empty GT.

    Background errors take the error of the nearest foreground pixel (scipy's EDT index, the
    tie-break MATLAB's bwdist documents none of); the weights ``2 - exp(log(0.5)/5 * D)`` are
    evaluated in single precision because bwdist returns single.
    """
    if not gt.any():
        return 0.0
    error = np.abs(sal - gt)
    dist, index = ndimage.distance_transform_edt(~gt, return_indices=True)
    flat = index[0] * gt.shape[1] + index[1]
    error_t = error.ravel()[flat.ravel()].reshape(gt.shape)  # foreground pixels index themselves
    blurred = ndimage.correlate1d(error_t, _GAUSS7, axis=0, mode="constant", cval=0.0)
    blurred = ndimage.correlate1d(blurred, _GAUSS7, axis=1, mode="constant", cval=0.0)
    min_error = np.where(gt & (blurred < error), blurred, error)
    weight = 2 - np.exp(_LOG_HALF_OVER_5 * dist.astype(np.float32))
    weighted = min_error * np.where(gt, 1.0, weight.astype(np.float64))
    fg_sum = weighted[gt].sum()
    tp = np.count_nonzero(gt) - fg_sum
    fp = weighted[~gt].sum()
    recall = 1 - fg_sum / np.count_nonzero(gt)
    precision = tp / (EPS + tp + fp)
    return float(2 * (recall * precision) / (EPS + recall + precision))


def _fmeasure(tp: np.ndarray, n_pred: np.ndarray, n_fg: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fmeasure_calu.m from counts: (precision, recall, F), all 0 where TP = 0."""
    hit = tp > 0
    safe_pred = np.where(hit, n_pred, 1)
    precision = np.where(hit, tp / safe_pred, 0.0)
    recall = np.where(hit, tp / max(n_fg, 1), 0.0)
    denom = np.where(hit, BETA2 * precision + recall, 1.0)
    f = np.where(hit, (1.3 * precision * recall) / denom, 0.0)  # 1.3 = 1 + beta^2, as written
    return precision, recall, f


def _emeasure(tp: np.ndarray, n_pred: np.ndarray, n_fg: int, n: int) -> np.ndarray:
    """Enhancedmeasure.m of binary maps given by counts (TP and |map| per map)."""
    tp = np.asarray(tp, dtype=np.float64)
    n_pred = np.asarray(n_pred, dtype=np.float64)
    if n_fg == 0:
        total = n - n_pred
    elif n_fg == n:
        total = n_pred
    else:
        mu_map = n_pred / n
        mu_gt = n_fg / n
        total = np.zeros_like(tp)
        # (map, gt) = (1,1), (1,0), (0,1), (0,0): pixel count and per-pixel enhanced alignment
        for count, b_map, b_gt in ((tp, 1.0, 1.0), (n_pred - tp, 1.0, 0.0),
                                   (n_fg - tp, 0.0, 1.0), (n - n_pred - n_fg + tp, 0.0, 0.0)):
            a = b_map - mu_map
            g = b_gt - mu_gt
            align = 2.0 * (g * a) / (g * g + a * a + EPS)
            total = total + count * (((align + 1) ** 2) / 4)
    return total / (n - 1 + EPS)


def frame_scores(pred: Prediction, gt: np.ndarray) -> FrameScores:
    """All per-frame numbers main_VSOD.m computes for one (prediction, bool GT) pair."""
    sal = pred.saliency()
    n = gt.size
    n_fg = int(np.count_nonzero(gt))
    hist = np.bincount((pred.levels.ravel().astype(np.intp) << 1) | gt.ravel(),
                       minlength=2 * pred.values.size)
    # suffix sums: pixels (all / foreground) whose level index is >= i; values are non-decreasing
    # in the level index (mapminmax is monotone), so "value >= t" is a suffix of the levels.
    all_ge = np.concatenate([np.cumsum((hist[0::2] + hist[1::2])[::-1])[::-1], [0]])
    fg_ge = np.concatenate([np.cumsum(hist[1::2][::-1])[::-1], [0]])

    def counts(thresholds: np.ndarray, strict: bool) -> tuple[np.ndarray, np.ndarray]:
        start = np.searchsorted(pred.values, thresholds, side="right" if strict else "left")
        return fg_ge[start], all_ge[start]

    precision, recall, f_curve = _fmeasure(*counts(THRESHOLDS, strict=False), n_fg)
    e_curve = _emeasure(*counts(THRESHOLDS, strict=True), n_fg, n)
    adaptive = np.array([2 * np.mean(sal)])
    adp_f = _fmeasure(*counts(np.minimum(adaptive, 1.0), strict=False), n_fg)[2][0]
    adp_e = _emeasure(*counts(adaptive, strict=True), n_fg, n)[0]
    return FrameScores(
        S=float(_SMEASURE.cal_sm(sal, gt)),
        wF=weighted_fmeasure(sal, gt),
        adpF=float(adp_f),
        adpE=float(adp_e),
        MAE=float(_MAE.cal_mae(sal, gt)),
        F=f_curve,
        E=e_curve,
        precision=precision,
        recall=recall,
    )
