"""Per-pair time of ``utils.flow.generate_flow`` (read + DIS + colour coding + JPEG write) vs raw
OpenCV DIS-medium (``calc`` on frames already in memory), both measured in this run on 854x480.

    python -m bench.bench_flow [--pairs 40] [--workers 2]

Prints per-pair milliseconds and ratios against raw single-thread DIS (target for the tool with
one worker: <= 1.10; it runs DIS on one thread and overlaps colour coding + JPEG writing of the
previous pair on a second thread, so the target needs two free cores).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


from utils.io import save_image  # noqa: E402
from utils.flow.generate import generate_flow  # noqa: E402

WIDTH, HEIGHT = 854, 480


def make_frames(folder: Path, count: int) -> list:
    """Textured frames panning 2 px per frame, written as JPEG like real data."""
    rng = np.random.default_rng(0)
    canvas = cv2.GaussianBlur(rng.random((HEIGHT + 20, WIDTH + 2 * count + 20, 3)).astype(np.float32), (0, 0), 3)
    canvas = ((canvas - canvas.min()) / np.ptp(canvas) * 255).astype(np.uint8)
    frames = []
    for t in range(count):
        frame = np.ascontiguousarray(canvas[10:10 + HEIGHT, 2 * t:2 * t + WIDTH])
        save_image(frame, folder / f"{t:05d}.jpg")
        frames.append(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
    return frames


def raw_dis_ms(frames: list, threads: int) -> float:
    """Mean ms per pair of OpenCV DIS-medium on in-memory grey frames with ``threads`` OpenCV threads."""
    default = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        dis.calc(frames[0], frames[1], None)  # warm-up
        start = time.perf_counter()
        for a, b in zip(frames[:-1], frames[1:]):
            dis.calc(a, b, None)
        return (time.perf_counter() - start) * 1000 / (len(frames) - 1)
    finally:
        cv2.setNumThreads(default)


def tool_ms(folder: Path, out: Path, workers: int) -> float:
    """Mean ms per pair of the flow tool, wall clock, files in and out."""
    start = time.perf_counter()
    summary = generate_flow(folder, out, workers=workers, progress=False)
    return (time.perf_counter() - start) * 1000 / summary["written"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2, help="also time the tool with this many processes")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for each measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "Frame"
        frames = make_frames(folder, args.pairs + 1)
        generate_flow(folder, Path(tmp) / "warm", progress=False)  # warm caches and imports
        raw1, raw_all, tool, parallel = [], [], [], []
        for r in range(args.repeats):  # interleaved so that machine load affects all alike
            raw1.append(raw_dis_ms(frames, 1))
            raw_all.append(raw_dis_ms(frames, cv2.getNumThreads()))
            tool.append(tool_ms(folder, Path(tmp) / f"out{r}", 1))
            if args.workers > 1:
                parallel.append(tool_ms(folder, Path(tmp) / f"par{r}", args.workers))
    base = min(raw1)
    print(f"frames {WIDTH}x{HEIGHT}, {args.pairs} pairs, best of {args.repeats}")
    print(f"raw OpenCV DIS-medium calc, 1 thread   : {base:7.1f} ms/pair  (baseline)")
    print(f"raw OpenCV DIS-medium calc, {cv2.getNumThreads()} threads  : {min(raw_all):7.1f} ms/pair  "
          f"ratio {min(raw_all) / base:.2f}")
    print(f"utils.flow.generate tool, 1 worker               : {min(tool):7.1f} ms/pair  ratio {min(tool) / base:.2f}"
          f"  (DIS 1 thread + colour/write thread)")
    if parallel:
        print(f"utils.flow.generate tool, {args.workers} workers              : {min(parallel):7.1f} ms/pair  "
              f"ratio {min(parallel) / base:.2f}  (includes process start-up)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
