"""Hand-made edge cases of the DAVIS-2016 measures (J, F, T, statistics) and their building blocks."""
from __future__ import annotations

import math

import numpy as np
import pytest

from eval.davis.boundary import disk, f_measure, seg2bmap, tolerance_radius
from eval.davis.matching import _backtrack, _dijkstra_path, _distances, cyclic_path, shortest_path
from eval.davis.polygon import longest_curve
from eval.davis.region import jaccard
from eval.davis.statistics import decay, region_statistics, stability_mean
from eval.davis.temporal import pair_stability, resample


def _box(shape, r0, r1, c0, c1):
    m = np.zeros(shape, dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


EMPTY = np.zeros((40, 60), dtype=bool)
FULL = np.ones((40, 60), dtype=bool)
BOX = _box((40, 60), 10, 25, 12, 40)


def test_jaccard_cases():
    assert jaccard(EMPTY, EMPTY) == 1.0
    assert jaccard(BOX, EMPTY) == 0.0 and jaccard(EMPTY, BOX) == 0.0
    assert jaccard(FULL, BOX) == BOX.sum() / FULL.size
    one = _box((40, 60), 5, 6, 5, 6)
    assert jaccard(one, one) == 1.0 and jaccard(one, _box((40, 60), 5, 6, 6, 7)) == 0.0


def test_boundary_map_and_disk():
    assert not seg2bmap(FULL).any() and not seg2bmap(EMPTY).any()
    one = _box((5, 5), 2, 3, 2, 3)
    # boundaries lie on the pixel for its right/bottom sides, on the background up/left of it
    assert np.argwhere(seg2bmap(one)).tolist() == [[1, 1], [1, 2], [2, 1], [2, 2]]
    assert tolerance_radius((480, 854)) == 8 and tolerance_radius((240, 427)) == 4
    assert tolerance_radius((120, 214)) == 2 and tolerance_radius((1080, 1920)) == 18
    assert disk(8).shape == (17, 17) and disk(8).sum() == 197
    assert disk(2).sum() == 13 and disk(18).sum() == 1009


def test_f_measure_cases():
    assert f_measure(EMPTY, EMPTY) == 1.0
    assert f_measure(BOX, EMPTY) == 0.0 and f_measure(EMPTY, BOX) == 0.0
    assert f_measure(FULL, BOX) == 0.0  # a full mask has no boundary
    assert f_measure(FULL, EMPTY) == 1.0
    assert f_measure(BOX, BOX) == 1.0
    touching = _box((40, 60), 0, 20, 0, 60)  # touches three image borders
    assert f_measure(touching, touching) == 1.0
    far = _box((40, 60), 30, 38, 50, 58)
    assert f_measure(BOX, far) < 1.0


def test_f_measure_equals_plain_dilation():
    from scipy.ndimage import binary_dilation
    rng = np.random.default_rng(1)
    for _ in range(5):
        pred = rng.random((50, 70)) < 0.3
        gt = _box((50, 70), rng.integers(0, 20), 45, rng.integers(0, 30), 66)
        bp, bg = seg2bmap(pred), seg2bmap(gt)
        se = disk(tolerance_radius(pred.shape)).astype(bool)
        p = (bp & binary_dilation(bg, se)).sum() / bp.sum()
        r = (bg & binary_dilation(bp, se)).sum() / bg.sum()
        assert f_measure(pred, gt) == 2 * p * r / (p + r)


def test_polygons_of_reference_example():
    m = _box((20, 20), 2, 12, 2, 12)
    assert longest_curve(m).tolist() == [[2, 2], [2, 12], [12, 12], [12, 2], [2, 2]]
    m[5:8, 5:8] = False  # hole and outline both have 5 points: the first curve (the hole) wins
    assert longest_curve(m).tolist() == [[5, 5], [8, 5], [8, 8], [5, 8], [5, 5]]
    full = longest_curve(np.ones((5, 7), dtype=bool))
    assert full.tolist() == [[0, 0], [0, 7], [5, 7], [5, 0], [0, 0]]  # the image frame


def test_tiny_parts_have_no_polygon():
    assert longest_curve(EMPTY) is None
    assert longest_curve(_box((10, 10), 4, 5, 4, 5)) is None  # 1 pixel
    assert longest_curve(_box((10, 10), 4, 6, 4, 6)) is None  # 2x2 block
    assert longest_curve(_box((10, 10), 1, 9, 4, 5)) is None  # 1-pixel-wide line
    assert longest_curve(_box((10, 10), 4, 7, 4, 7)) is not None  # 3x3 survives


def test_equally_long_curves_first_wins():
    m = np.zeros((30, 40), dtype=bool)
    m[3:13, 3:13] = True
    m[15:25, 20:30] = True  # same shape, later in raster order -> closed first (reverse order)
    first = longest_curve(m)
    assert first.tolist() == [[15, 20], [15, 30], [25, 30], [25, 20], [15, 20]]


def test_checkerboard_junction_is_split_into_two_squares():
    m = np.zeros((10, 10), dtype=bool)
    m[2:5, 2:5] = True
    m[5:8, 5:8] = True  # the squares touch at corner (5, 5): a 4-way junction
    curve = longest_curve(m)
    assert len(curve) == 5 and {tuple(p) for p in curve} <= {
        (2, 2), (2, 5), (5, 5), (5, 2), (5, 8), (8, 8), (8, 5)}


def test_pair_stability_cases():
    assert math.isnan(pair_stability(EMPTY, BOX)) and math.isnan(pair_stability(BOX, EMPTY))
    one = _box((40, 60), 5, 6, 5, 6)
    assert math.isnan(pair_stability(one, BOX))
    assert pair_stability(FULL, FULL) == 0.0
    assert pair_stability(BOX, BOX) == 0.0
    shifted = np.roll(BOX, 3, axis=1)
    assert pair_stability(BOX, shifted) == 0.0  # translation invariant
    assert pair_stability(BOX, _box((40, 60), 5, 35, 20, 30)) > 0


def test_resample_keeps_duplicate_start():
    curve = np.array([[0.0, 0.0], [0.0, 7.0], [5.0, 7.0], [5.0, 0.0], [0.0, 0.0]])
    points = resample(curve)
    assert (points[0] == points[-1]).all() and (points[0] == 0).all()
    steps = np.hypot(*np.diff(points, axis=0).T)
    assert steps.max() <= 3.0


def test_dynamic_program_path_equals_heap_dijkstra():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (1, 5), (6, 1), (17, 23)]:
        cost = rng.random(shape)
        assert shortest_path(cost) == _dijkstra_path(cost)


def test_ties_use_the_heap_order():
    cost = np.zeros((12, 15))
    cost[::3, ::2] = 1.0
    assert _backtrack(cost, _distances(cost)) is None  # ties: the DP alone cannot decide
    path = shortest_path(cost)
    assert path == _dijkstra_path(cost)
    assert path[0] == (11, 14) and path[-1] == (0, 0)
    steps = {(a[0] - b[0], a[1] - b[1]) for a, b in zip(path, path[1:])}
    assert steps <= {(1, 0), (0, 1), (1, 1)}
    cyc = cyclic_path(cost)
    assert len(set(cyc)) == len(cyc)


def test_statistics():
    v = np.array([0.9, 0.4, 0.6])
    stats = region_statistics(v)
    assert stats["recall"] == pytest.approx(2 / 3)
    assert stats["decay"] == pytest.approx((0.9 + 0.4) / 2 - 0.6)  # bins v1..v2 and v3
    assert decay(np.array([0.7])) == 0.0
    long = np.linspace(1, 0, 258)
    assert not math.isnan(decay(long)) and decay(long) > 0  # no uint8 wrap as in PY16
    assert math.isnan(stability_mean(np.array([math.nan, math.nan])))
    assert stability_mean(np.array([0.1, math.nan, 0.3])) == pytest.approx(1.0)
