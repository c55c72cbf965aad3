"""T (temporal stability) of a pair of consecutive predicted masks, as the MATLAB toolbox computes it.

docs/evaluation-davis16.md §6.8-§6.13: the longest polygon of each mask, resampled every
3 px, shape-context histograms (12 angles x 5 log-radii), chi-square cost matrix, cyclic
shortest-path matching, one-to-one filter, mean cost. Lower is better. The sequence value (the
``x5`` and the NaN-mean) lives in :mod:`eval.davis.statistics`.
"""
from __future__ import annotations

import math

import numpy as np

from .matching import bijective_cost, cyclic_path
from .polygon import longest_curve

RESAMPLE_STEP = 3.0
N_THETA, N_RADIUS = 12, 5
R_INNER, R_OUTER = 1.0 / 8.0, 2.0
EPS = float(np.finfo(np.float64).eps)
TWO_PI = 2 * math.pi
T_SCALE = 5.0  # "to put it in a similar range" (eval_result.m: 5 * nanmean)


def _radius_edges() -> np.ndarray:
    """logspace(log10(1/8), log10(2), 5) with Octave's linspace (base + i * delta, exact end)."""
    lo, hi = math.log10(R_INNER), math.log10(R_OUTER)
    delta = (hi - lo) / (N_RADIUS - 1)
    exponents = [lo + i * delta for i in range(N_RADIUS - 1)] + [hi]
    return np.power(10.0, np.asarray(exponents))


RADIUS_EDGES = _radius_edges()


def resample(curve: np.ndarray) -> np.ndarray:
    """contour_upsample.m: interior points every <= 3 px by repeated addition; the start point
    appears first and last (the curve is closed and the start is appended once more)."""
    points = np.vstack([curve, curve[:1]])
    out = []
    for start, stop in zip(points[:-1], points[1:]):
        out.append(start)
        delta = stop - start
        length = math.sqrt(delta[0] * delta[0] + delta[1] * delta[1])
        if length > RESAMPLE_STEP:
            n = math.ceil(length / RESAMPLE_STEP)
            step = delta / n
            current = start
            for _ in range(n - 1):
                current = current + step
                out.append(current)
    return np.asarray(out, dtype=np.float64)


def fold_angle(theta: np.ndarray) -> np.ndarray:
    """MATLAB's rem(rem(theta, 2*pi) + 2*pi, 2*pi) for theta in [-pi, pi] (atan2 output).

    The inner rem is the identity there. MATLAB/Octave rem(x, y) returns 0 when x / y is
    within relative eps of a non-zero integer, else x - y * fix(x / y); with
    x = theta + 2*pi in [pi, 3*pi] the quotient lies in [0.5, 1.5], so fix is 0 or 1 and
    the only integer it can be near is 1.
    """
    x = theta + TWO_PI
    q = x / TWO_PI
    folded = np.where(q >= 1.0, x - TWO_PI, x)
    folded[np.abs(q - 1.0) < EPS] = 0.0
    return folded


def shape_contexts(points: np.ndarray) -> np.ndarray:
    """sc_compute.m histograms (n, 60), bins ordered angle-fastest like MATLAB's ``Sn(:)``."""
    n = len(points)
    sq = points[:, 0] * points[:, 0] + points[:, 1] * points[:, 1]
    d2 = (sq[:, None] + sq[None, :]) - 2.0 * (points @ points.T)
    r = np.sqrt(np.maximum(d2, 0.0))
    mean_dist = np.cumsum(r.ravel(order="F"))[-1] / (n * n)
    r_n = r / mean_dist
    r_bin = np.zeros((n, n), dtype=np.int64)
    for edge in RADIUS_EDGES:
        r_bin += r_n < edge
    theta = np.arctan2(points[None, :, 1] - points[:, None, 1], points[None, :, 0] - points[:, None, 0])
    folded = fold_angle(theta)
    t_bin = np.floor(folded / (TWO_PI / N_THETA)).astype(np.int64)  # 0-based
    inside = r_bin > 0
    rows = np.nonzero(inside)[0]
    flat = rows * (N_THETA * N_RADIUS) + (r_bin[inside] - 1) * N_THETA + t_bin[inside]
    return np.bincount(flat, minlength=n * N_THETA * N_RADIUS).reshape(n, N_THETA * N_RADIUS)


def chi2_cost(hist_a: np.ndarray, hist_b: np.ndarray) -> np.ndarray:
    """hist_cost_2.m: 0.5 * sum_k (a_k - b_k)^2 / (a_k + b_k + eps) of eps-normalised rows,
    summed bin by bin in MATLAB's order; bins empty in both sets add exact zeros and are skipped."""
    a = hist_a / (hist_a.sum(axis=1, keepdims=True) + EPS)
    b = hist_b / (hist_b.sum(axis=1, keepdims=True) + EPS)
    total = np.zeros((len(a), len(b)))
    diff = np.empty_like(total)
    den = np.empty_like(total)
    for k in np.nonzero(hist_a.any(axis=0) | hist_b.any(axis=0))[0]:
        ak, bk = a[:, k, None], b[None, :, k]
        np.subtract(ak, bk, out=diff)
        np.multiply(diff, diff, out=diff)
        np.add(ak, bk, out=den)
        den += EPS
        np.divide(diff, den, out=diff)
        total += diff
    return 0.5 * total


def contour_descriptor(mask: np.ndarray) -> np.ndarray | None:
    """Shape contexts of the resampled longest polygon of ``mask``; None if it has none."""
    curve = longest_curve(mask)
    return None if curve is None else shape_contexts(resample(curve))


def descriptor_stability(hist_a: np.ndarray | None, hist_b: np.ndarray | None) -> float:
    """T of a pair from the two masks' descriptors (earlier frame first), without the x5;
    NaN when either mask has no polygon (t_stability.m)."""
    if hist_a is None or hist_b is None:
        return math.nan
    cost = chi2_cost(hist_a, hist_b)
    return bijective_cost(cost, cyclic_path(cost))


def pair_stability(mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    """T of the pair (earlier mask ``a``, later mask ``b``) without the x5."""
    return descriptor_stability(contour_descriptor(mask_a), contour_descriptor(mask_b))
