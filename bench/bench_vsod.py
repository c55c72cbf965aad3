"""Per-frame time of ``eval.vsod`` vs plain pysodmetrics, measured in the same run.

    python -m bench.bench_vsod [--sequences 2] [--frames 8] [--height 480] [--width 854] [--repeats 3]

Writes a synthetic V-SOD set (byte-scaled grey predictions, ellipse GT) to a temporary folder,
then times (median of ``--repeats``), image reading included:

* ``eval.vsod`` single process (the full main_VSOD.m protocol: S, E/F curves, adaptive E/F, wF, MAE);
* ``eval.vsod --workers N``;
* plain pysodmetrics: the same evaluated frames read with ``cv2.imread(..., GRAYSCALE)`` and fed to
  ``Smeasure``, ``Emeasure``, ``Fmeasure``, ``WeightedFmeasure`` and ``MAE`` (what
  PySODEvalToolkit does per frame, without the MATLAB protocol).

Prints seconds per evaluated frame and the ratio eval.vsod / pysodmetrics (< 1: faster).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage


from eval.sod.tree import plan_dataset  # noqa: E402
from eval.vsod import evaluate_datasets  # noqa: E402


def make_set(root: Path, sequences: int, frames: int, height: int, width: int, seed: int = 0) -> None:
    """GT ellipses moving over ``frames`` frames and soft byte-scaled predictions of them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    for s in range(sequences):
        cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
        ry, rx = rng.uniform(0.1, 0.3) * height, rng.uniform(0.1, 0.3) * width
        for i in range(frames):
            gt = ((yy - cy - 2 * i) / ry) ** 2 + ((xx - cx - 3 * i) / rx) ** 2 <= 1
            soft = ndimage.gaussian_filter(gt.astype(np.float64), 3) + ndimage.gaussian_filter(
                rng.normal(0, 0.15, gt.shape), 2)
            pred = np.round((soft - soft.min()) / (soft.max() - soft.min()) * 255).astype(np.uint8)
            for sub, array in (("gt/Bench/seq%d/GT" % s, gt.astype(np.uint8) * 255), ("pred/Bench/seq%d" % s, pred)):
                (root / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / sub / f"{i:05d}.png")


def plain_pysod(pairs: list[tuple[Path, Path]]) -> None:
    """The per-frame pysodmetrics loop PySODEvalToolkit runs (no MATLAB protocol)."""
    import cv2
    import py_sod_metrics as m

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Fmeasure's deprecation warning
        metrics = [m.Smeasure(), m.Emeasure(), m.Fmeasure(), m.WeightedFmeasure(), m.MAE()]
    for gt_path, pred_path in pairs:
        gt = cv2.imread(str(gt_path), cv2.IMREAD_GRAYSCALE)
        pred = cv2.imread(str(pred_path), cv2.IMREAD_GRAYSCALE)
        for metric in metrics:
            metric.step(pred, gt)
    for metric in metrics:
        metric.get_results()


def median_time(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs (after one warm-up run)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8, help="GT frames per sequence (2 are skipped)")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_set(root, args.sequences, args.frames, args.height, args.width)
        jobs = plan_dataset(root / "pred", root / "gt", "Bench").jobs
        pairs = [(job.gt_dir / name, job.pred_dir / name) for job in jobs for name in job.frames]
        n = len(pairs)
        ours = median_time(lambda: evaluate_datasets(root / "pred", root / "gt"), args.repeats) / n
        ours_par = median_time(lambda: evaluate_datasets(root / "pred", root / "gt", workers=args.workers),
                               args.repeats) / n
        base = median_time(lambda: plain_pysod(pairs), args.repeats) / n
    print(f"{n} evaluated frames of {args.height}x{args.width}, median of {args.repeats} runs, reading included")
    print(f"{'evaluator':<44}{'s/frame':>10}{'ratio':>8}")
    print(f"{'plain pysodmetrics (5 metric classes)':<44}{base:>10.4f}{1.0:>8.2f}")
    print(f"{'eval.vsod, 1 process':<44}{ours:>10.4f}{ours / base:>8.2f}")
    print(f"{f'eval.vsod, --workers {args.workers}':<44}{ours_par:>10.4f}{ours_par / base:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
