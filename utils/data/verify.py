"""Cheap verification of a run's input samples before any work starts (shared by every tool).

A *sample* maps a role (``"image"``, ``"flow"``, ``"gt"``, ...) to a file. :func:`verify_samples`
reads every file's header once (:func:`utils.data.images.check_images`: thread pool, empty and
truncated files found, see :func:`utils.data.images.image_header`), compares the sizes of the
files of each sample, refuses a ``gt`` mask of a mode the mask reader cannot read, and reports
**all** problems in one error. Pairing itself (every role
present) is the caller's listing step. Measured cost: docs/training.md ("Checks before training").
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Sequence, Tuple

from utils.cli import BadInputError
from utils.data.images import check_images
from utils.io import MASK_MODES, PathLike

SHOWN_PROBLEMS = 20


def verify_samples(samples: Sequence[Mapping[str, PathLike]], same_size: bool = True,
                   workers: int = 16, what: str = "input") -> Dict[str, Tuple[int, int]]:
    """Raise one ``BadInputError`` listing every problem of ``samples``; return the
    ``(width, height)`` of every file, keyed by ``str(path)``."""
    paths = [path for sample in samples for path in sample.values()]
    groups = [list(sample.values()) for sample in samples] if same_size else []
    headers, problems = check_images(paths, groups, threads=workers)
    masks = {Path(sample["gt"]) for sample in samples if "gt" in sample}
    problems += [f"{path}: a mask of image mode {header.mode!r}, which has no single reading as "
                 "a mask (save it as 8-bit grey PNG)" for path, header in headers.items()
                 if path in masks and header.mode not in MASK_MODES]
    if problems:
        shown = problems[:SHOWN_PROBLEMS]
        more = f"; ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise BadInputError(
            f"{len(problems)} problem(s) in the {what} files ({len(set(map(str, paths)))} files of "
            f"{len(samples)} samples checked): " + "; ".join(shown) + more,
            "re-export or replace these files (or remove the whole sample from every folder), "
            "then run again")
    return {str(path): (header.width, header.height) for path, header in headers.items()}
