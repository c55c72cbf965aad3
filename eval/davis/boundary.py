"""F (boundary F-measure) as in the DAVIS-2016 toolboxes (docs/evaluation-davis16.md §5).

Boundary maps follow seg2bmap (1-px boundaries, the image border is never a boundary); the
tolerance is an exact Euclidean digital disk of radius ceil(0.008 x image diagonal). The
dilations run with OpenCV on the bounding box of both boundaries grown by the radius, which
is equivalent to dilating the whole frame with zero padding (the disk is symmetric).
"""
from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

BOUND_TH = 0.008


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """Boundary map of a boolean mask (D. Martin's seg2bmap, as both toolboxes use it)."""
    east = np.zeros_like(mask)
    south = np.zeros_like(mask)
    south_east = np.zeros_like(mask)
    east[:, :-1] = mask[:, 1:]
    south[:-1, :] = mask[1:, :]
    south_east[:-1, :-1] = mask[1:, 1:]
    bmap = (mask ^ east) | (mask ^ south) | (mask ^ south_east)
    bmap[-1, :] = mask[-1, :] ^ east[-1, :]
    bmap[:, -1] = mask[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def tolerance_radius(shape: tuple[int, int], bound_th: float = BOUND_TH) -> int:
    """Dilation radius in pixels: ceil(bound_th x diagonal), or bound_th itself if >= 1."""
    if bound_th >= 1:
        return int(bound_th)
    return math.ceil(bound_th * math.sqrt(shape[0] ** 2 + shape[1] ** 2))


@lru_cache(maxsize=16)
def disk(radius: int) -> np.ndarray:
    """Offsets (dy, dx) in [-r, r]^2 with dy^2 + dx^2 <= r^2, as a uint8 structuring element."""
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return (yy * yy + xx * xx <= radius * radius).astype(np.uint8)


def _matches(b_pred: np.ndarray, b_gt: np.ndarray, radius: int) -> tuple[int, int]:
    """(|b_pred & dil(b_gt)|, |b_gt & dil(b_pred)|), computed on the boundaries' bounding box."""
    rows = np.flatnonzero((b_pred | b_gt).any(axis=1))
    cols = np.flatnonzero((b_pred | b_gt).any(axis=0))
    y0, y1 = max(rows[0] - radius, 0), min(rows[-1] + radius + 1, b_pred.shape[0])
    x0, x1 = max(cols[0] - radius, 0), min(cols[-1] + radius + 1, b_pred.shape[1])
    p = b_pred[y0:y1, x0:x1].view(np.uint8)
    g = b_gt[y0:y1, x0:x1].view(np.uint8)
    kernel = disk(radius)
    fg_match = int(np.count_nonzero(p & cv2.dilate(g, kernel)))
    gt_match = int(np.count_nonzero(g & cv2.dilate(p, kernel)))
    return fg_match, gt_match


def f_measure(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """Boundary F-measure of boolean masks ``pred`` and ``gt`` (same shape)."""
    b_pred, b_gt = seg2bmap(pred), seg2bmap(gt)
    n_fg, n_gt = int(np.count_nonzero(b_pred)), int(np.count_nonzero(b_gt))
    if n_fg == 0 and n_gt == 0:
        return 1.0
    if n_fg == 0 or n_gt == 0:
        return 0.0  # precision/recall (1, 0) or (0, 1)
    fg_match, gt_match = _matches(b_pred, b_gt, tolerance_radius(pred.shape, bound_th))
    precision, recall = fg_match / n_fg, gt_match / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)
