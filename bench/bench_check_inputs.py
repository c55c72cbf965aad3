"""Cost of the before-work input check (header reads in a thread pool) on a DAVIS-sized workload.

    python -m bench.bench_check_inputs                 # 1,376 frames of 854x480 (DAVIS-2016 val)
    python -m bench.bench_check_inputs --frames 200

Writes ``--frames`` JPEG frames and PNG masks of 854x480 into a temporary folder, then times, in
one process on the same files: :func:`utils.data.images.check_images` (headers + end markers,
8 threads and 1 thread) against the full decode of every file (what a run does anyway, and what
finding a broken file only when its batch comes up costs). The printed ratios are meaningful on a
busy machine; absolute seconds are indicative only (page cache warm: the files were just written).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable, List

import numpy as np
from PIL import Image

from utils.data.images import check_images
from utils.io import open_image

H, W = 480, 854


def _write_workload(root: Path, frames: int) -> List[Path]:
    rng = np.random.default_rng(0)
    texture = (rng.random((H, W + frames, 3)) * 255).astype(np.uint8)
    paths = []
    for t in range(frames):
        frame, mask = root / f"{t:05d}.jpg", root / f"{t:05d}.png"
        Image.fromarray(texture[:, t % 64: t % 64 + W]).save(frame, quality=90)
        gt = np.zeros((H, W), np.uint8)
        gt[100:300, 200 + t % 200: 500 + t % 200] = 255
        Image.fromarray(gt).save(mask)
        paths += [frame, mask]
    return paths


def _best_of(repeats: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    """Print the seconds of each variant and its ratio to the full decode."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_check_inputs", description=__doc__)
    parser.add_argument("--frames", type=int, default=1376, help="frames (each with a mask)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        paths = _write_workload(Path(folder), args.frames)
        pairs = [paths[i:i + 2] for i in range(0, len(paths), 2)]
        timings = {
            "check_images, 8 threads": _best_of(args.repeats, lambda: check_images(paths, pairs, threads=8)),
            "check_images, 1 thread": _best_of(args.repeats, lambda: check_images(paths, pairs, threads=1)),
            "full decode, 1 thread (baseline)": _best_of(1, lambda: [open_image(p) for p in paths]),
        }
    base = timings["full decode, 1 thread (baseline)"]
    print(f"{len(paths)} files ({args.frames} JPEG frames + {args.frames} PNG masks, {W}x{H})")
    for name, seconds in timings.items():
        print(f"{name:34s} {seconds:7.3f} s   {seconds / base:6.3f} x full decode")


if __name__ == "__main__":
    main()
