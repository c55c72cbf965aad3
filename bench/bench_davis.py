"""Speed of eval.davis16 against a straightforward implementation of the same toolbox algorithm.

    python -m bench.bench_davis                 # small: 120 frames, 8 F frames, 4 T pairs
    python -m bench.bench_davis --frames 1376   # the DAVIS-2016 val workload size

Everything runs in one process on the same synthetic 480x854 masks, so the printed ratios are
meaningful on a busy machine; absolute seconds are indicative only. Baselines:
* F: seg2bmap + ``scipy.ndimage.binary_dilation`` with the full-frame disk per frame (what the
  Python toolbox does through scikit-image);
* T: the same polygons and shape contexts, then the cost as one n1 x n2 x 60 tensor (as
  hist_cost_2.m) and a plain ``heapq`` Dijkstra over the whole grid, twice (cyclic matching).
The whole-workload run evaluates synthetic sequences with the val frame counts (scaled to
--frames) with J, F and T and --workers.
"""
from __future__ import annotations

import argparse
import heapq
import math
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import binary_dilation


from eval.davis.boundary import disk, f_measure, seg2bmap, tolerance_radius  # noqa: E402
from eval.davis.matching import bijective_cost  # noqa: E402
from eval.davis.polygon import longest_curve  # noqa: E402
from eval.davis.sequences import VAL_SEQUENCES  # noqa: E402
from eval.davis.temporal import EPS, pair_stability, resample, shape_contexts  # noqa: E402
from eval.davis16 import evaluate  # noqa: E402

H, W = 480, 854
VAL_FRAMES = (50, 80, 84, 90, 75, 40, 104, 90, 60, 52, 50, 90, 50, 50, 49, 40, 80, 100, 43, 99)


def blob(t: float, seed: int, jitter: float) -> np.ndarray:
    """A moving, wobbly object (smooth outline plus optional jagged noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    cy, cx = 240 + 60 * math.sin(t / 9 + seed), 427 + 150 * math.sin(t / 13 + seed)
    angle = np.arctan2(yy - cy, xx - cx)
    radius = 110 + 25 * np.sin(3 * angle + t / 5) + 10 * np.cos(5 * angle - t / 7)
    if jitter:
        radius = radius + jitter * rng.standard_normal(16)[(np.round(angle * 40) % 16).astype(int)]
    return np.hypot(yy - cy, (xx - cx) * 0.8) <= radius


def baseline_f(pred: np.ndarray, gt: np.ndarray) -> float:
    """Boundary F with full-frame scipy dilations (the straightforward toolbox port)."""
    bp, bg = seg2bmap(pred), seg2bmap(gt)
    se = disk(tolerance_radius(pred.shape)).astype(bool)
    p = (bp & binary_dilation(bg, se)).sum() / max(bp.sum(), 1)
    r = (bg & binary_dilation(bp, se)).sum() / max(bg.sum(), 1)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _heapq_path(cost: np.ndarray) -> list[tuple[int, int]]:
    """Shortest monotone path (end to start) with a plain heapq Dijkstra over the grid."""
    n1, n2 = cost.shape
    dist = np.full((n1, n2), np.inf)
    pred: dict[tuple[int, int], tuple[int, int]] = {}
    dist[0, 0] = 0.0
    queue = [(0.0, 0, 0)]
    while queue:
        d, i, j = heapq.heappop(queue)
        if d > dist[i, j]:
            continue
        for a, b in ((i, j + 1), (i + 1, j), (i + 1, j + 1)):
            if a < n1 and b < n2 and d + cost[a, b] < dist[a, b]:
                dist[a, b] = d + cost[a, b]
                pred[(a, b)] = (i, j)
                heapq.heappush(queue, (dist[a, b], a, b))
    path = [(n1 - 1, n2 - 1)]
    while path[-1] != (0, 0):
        path.append(pred[path[-1]])
    return path


def baseline_t(mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    """T of a pair via an n1 x n2 x 60 cost tensor and two heapq Dijkstra runs."""
    ha, hb = (shape_contexts(resample(longest_curve(m))) for m in (mask_a, mask_b))
    a = ha / (ha.sum(axis=1, keepdims=True) + EPS)
    b = hb / (hb.sum(axis=1, keepdims=True) + EPS)
    ta, tb = a[:, None, :], b[None, :, :]
    cost = 0.5 * (((ta - tb) ** 2) / (ta + tb + EPS)).sum(axis=2)
    path = _heapq_path(cost)
    i, j = min(path[:-1], key=lambda c: cost[c])
    shifted = np.roll(cost, (-(i + 1), -(j + 1)), axis=(0, 1))
    n1, n2 = cost.shape
    path = [((p + i + 1) % n1, (q + j + 1) % n2) for p, q in _heapq_path(shifted)]
    return bijective_cost(cost, path)


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, *args) -> float:
    """Wall seconds of one call ``fn(*args)``."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def write_workload(root: Path, frames: int) -> tuple[Path, Path]:
    """Write val-like sequences (about ``frames`` in total) as plain GT and prediction trees."""
    counts = np.maximum(6, np.round(np.asarray(VAL_FRAMES) * frames / sum(VAL_FRAMES))).astype(int)
    gt_root, pred_root = root / "gt", root / "pred"
    for s, (name, n) in enumerate(zip(VAL_SEQUENCES, counts)):
        (gt_root / name).mkdir(parents=True)
        (pred_root / name).mkdir(parents=True)
        for t in range(n):
            Image.fromarray(blob(t, s, 0).astype(np.uint8) * 255).save(gt_root / name / f"{t:05d}.png")
            pred = blob(t + 0.7, s, 4.0)
            Image.fromarray(pred.astype(np.uint8) * 255).save(pred_root / name / f"{t:05d}.png")
    return gt_root, pred_root


def main() -> None:
    """Run the benchmarks and print times and ratios."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=120, help="workload frames (val: 1376)")
    parser.add_argument("--f_frames", type=int, default=8)
    parser.add_argument("--t_pairs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    masks = [(blob(t + 0.7, 1, 4.0), blob(t, 1, 0)) for t in range(max(args.f_frames, args.t_pairs + 1))]
    ours = sum(timed(f_measure, p, g) for p, g in masks[:args.f_frames]) / args.f_frames
    base = sum(timed(baseline_f, p, g) for p, g in masks[:args.f_frames]) / args.f_frames
    assert all(f_measure(p, g) == baseline_f(p, g) for p, g in masks[:2])
    print(f"F per 480p frame: ours {ours:.4f} s, scipy-dilation baseline {base:.4f} s, "
          f"speed-up x{base / ours:.1f} (target <= 0.01 s)")
    pairs = [(masks[k][0], masks[k + 1][0]) for k in range(args.t_pairs)]
    ours = sum(timed(pair_stability, a, b) for a, b in pairs) / args.t_pairs
    base = sum(timed(baseline_t, a, b) for a, b in pairs) / args.t_pairs
    print(f"T per 480p pair:  ours {ours:.3f} s, tensor-cost + heapq baseline {base:.3f} s, "
          f"speed-up x{base / ours:.1f} (target <= 0.3 s)")

    with tempfile.TemporaryDirectory() as tmp:
        gt_root, pred_root = write_workload(Path(tmp), args.frames)
        n = sum(len(list(p.iterdir())) for p in gt_root.iterdir())
        cpu_start = _cpu_seconds()
        start = time.perf_counter()
        report = evaluate(pred_root, gt_root, subset="val", workers=args.workers)
        wall = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu_start
    print(f"workload: {n} frames 480p (val sequence set, J+F+T, {args.workers} workers): "
          f"{wall:.1f} s wall, {cpu:.1f} s CPU (all processes) -> {wall / n * 1376:.0f} s wall, "
          f"{cpu / n * 1376 / args.workers:.0f} s CPU/worker projected for "
          f"1,376 frames (target < 180 s); mean-J {report['overall']['J']['mean']}, "
          f"T {report['overall']['T']['mean']}")


if __name__ == "__main__":
    main()
