"""Cheap verification of a run's input images before any work starts (shared by every tool).

A *sample* maps a role (``"image"``, ``"flow"``, ``"gt"``, ...) to a file. :func:`verify_samples`
checks every file of every sample, in parallel threads, and reports **all** problems in one
error: an empty (0-byte) file, a header PIL cannot read, a truncated file, and paired files of
different sizes. Pairing itself (every role present) is the caller's listing step.

Cost per file: ``Image.open`` + ``.size`` (the header only) and a read of the file's last bytes.
A PNG must end with its ``IEND`` chunk and a JPEG with its ``EOI`` marker; a file that does not
(or another format) is fully decoded once to decide, so a valid file with trailing bytes passes
and a truncated one fails. Measured cost: docs/training.md ("Checks before training").
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from PIL import Image

from utils.cli import BadInputError
from utils.io import PathLike

Size = Tuple[int, int]
#: Trailer of a complete file, by PIL format name: PNG's IEND chunk type + CRC, JPEG's EOI.
END_MARKERS = {"PNG": b"IEND\xaeB`\x82", "JPEG": b"\xff\xd9"}
TAIL_BYTES = 64
SHOWN_PROBLEMS = 20


def _ends_complete(path: Path, image_format: Optional[str]) -> bool:
    """True if the file ends with its format's trailer (PNG ``IEND``, JPEG ``EOI``)."""
    marker = END_MARKERS.get(image_format or "")
    if marker is None:
        return False
    with open(path, "rb") as handle:
        handle.seek(max(0, os.fstat(handle.fileno()).st_size - TAIL_BYTES))
        return marker in handle.read()


def check_image(path: PathLike) -> Tuple[Optional[Size], Optional[str]]:
    """``((width, height), None)`` for a readable, complete image, ``(None, problem)`` otherwise."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return None, f"{path}: empty file (0 bytes)"
        with Image.open(path) as image:
            size = image.size
            if not _ends_complete(path, image.format):
                image.load()  # no trailer: decode fully to tell a truncated file from an odd one
    except FileNotFoundError:
        return None, f"{path}: file not found"
    except Exception as error:  # PIL raises several unrelated exception types
        return None, f"{path}: cannot be decoded ({' '.join(str(error).split())})"
    return size, None


def _size_problem(sample: Mapping[str, PathLike], sizes: Dict[str, Optional[Size]]) -> Optional[str]:
    known = {role: sizes[str(path)] for role, path in sample.items() if sizes[str(path)]}
    if len(set(known.values())) <= 1:
        return None
    return "paired files differ in size: " + ", ".join(
        f"{sample[role]} {w}x{h}" for role, (w, h) in known.items())


def find_problems(samples: Sequence[Mapping[str, PathLike]], same_size: bool = True,
                  workers: int = 16) -> Tuple[List[str], Dict[str, Optional[Size]]]:
    """Check every file of ``samples`` (each file once, ``workers`` threads); return the list of
    problems (file problems first, then size mismatches) and the size of every readable file."""
    paths = list(dict.fromkeys(str(p) for sample in samples for p in sample.values()))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(check_image, paths))
    sizes = {path: size for path, (size, _) in zip(paths, results)}
    problems = [problem for _, problem in results if problem]
    if same_size:
        problems += [p for p in (_size_problem(s, sizes) for s in samples) if p]
    return problems, sizes


def verify_samples(samples: Sequence[Mapping[str, PathLike]], same_size: bool = True,
                   workers: int = 16, what: str = "input") -> Dict[str, Optional[Size]]:
    """Raise one ``BadInputError`` listing every problem of ``samples`` (see module docstring);
    return the ``(width, height)`` of every file, keyed by ``str(path)``."""
    problems, sizes = find_problems(samples, same_size, workers)
    if problems:
        shown = problems[:SHOWN_PROBLEMS]
        more = f"; ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise BadInputError(
            f"{len(problems)} problem(s) in the {what} files ({len(sizes)} files of "
            f"{len(samples)} samples checked): " + "; ".join(shown) + more,
            "re-export or replace these files (or remove the whole sample from every folder), "
            "then run again")
    return sizes
