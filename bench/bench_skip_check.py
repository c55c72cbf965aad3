"""Cost of trusting only complete outputs under ``--skip_existing`` (inference and flow).

    python -m bench.bench_skip_check --root ../shared/real/DAVIS2016-sample

Times, in one process on the same files (every JPEG and PNG under ``--root``), what deciding
"already done" costs per file: ``Path.is_file`` (what was trusted before), the completeness
check :func:`utils.data.images.is_complete_image` (header + end marker in the last KiB), and a
full decode for comparison. Best of ``--repeats`` runs; page cache warm after the first.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable, List

from utils.data.images import is_complete_image
from utils.io import open_image


def _best_of(repeats: int, paths: List[Path], check: Callable[[Path], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for path in paths:
            check(path)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    """Print the microseconds per file of each check and their ratios."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_skip_check", description=__doc__)
    parser.add_argument("--root", default="../shared/real/DAVIS2016-sample",
                        help="folder whose JPEG/PNG files are checked")
    parser.add_argument("--repeats", type=int, default=5, help="best of this many runs")
    args = parser.parse_args()
    paths = sorted(p for p in Path(args.root).rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    if not paths:
        raise SystemExit(f"no JPEG/PNG files under {args.root}")
    times = {name: _best_of(args.repeats, paths, check) for name, check in (
        ("is_file", Path.is_file), ("is_complete_image", is_complete_image),
        ("full decode", open_image))}
    print(f"{len(paths)} files under {args.root}")
    for name, seconds in times.items():
        print(f"  {name:18s} {seconds / len(paths) * 1e6:9.1f} us/file  "
              f"{seconds / times['is_file']:7.1f}x is_file  {seconds / times['full decode']:6.3f}x decode")


if __name__ == "__main__":
    main()
