"""Strict image and mask reading, and stem-indexed folder listing, for every data loader.

Masks are converted to grey by :func:`utils.io.mask_to_gray` (rules there); then foreground is
``value > 127`` (so JPEG ringing and soft edges are thresholded at the middle grey). ``read_mask_official`` instead reproduces the official loader:
``convert('L')`` with no threshold.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image

from utils.cli import BadInputError, MissingInputError
from utils.io import PathLike, mask_to_gray, natural_key, open_image, to_uint8

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MASK_THRESHOLD = 127
SEQUENCE_SEPARATOR = "_"


def sequence_name(stem: str) -> str:
    """Sequence of a frame in a flat folder named ``<seq>_<frame>``: the text before the last
    underscore (the whole stem if there is none)."""
    return stem.rsplit(SEQUENCE_SEPARATOR, 1)[0]


def is_image_file(path: Path) -> bool:
    """True for a non-hidden file with an image suffix (jpg, jpeg, png, bmp; any case)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: PathLike) -> Dict[str, Path]:
    """Map stem -> path for the image files in ``folder``, in natural order of the stems.

    Raises ``FileNotFoundError`` if the folder is missing and ``ValueError`` if two files share a
    stem (e.g. ``a.jpg`` and ``a.png``), since pairing by stem would then be ambiguous.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInputError(f"Folder not found: {folder}")
    by_stem: Dict[str, Path] = {}
    for path in folder.iterdir():
        if not is_image_file(path):
            continue
        if path.stem in by_stem:
            raise BadInputError(
                f"Two images share the stem '{path.stem}' in {folder}: {by_stem[path.stem].name} and "
                f"{path.name}. Keep one of them so that files can be paired by name."
            )
        by_stem[path.stem] = path
    return {stem: by_stem[stem] for stem in sorted(by_stem, key=natural_key)}


def read_rgb(path: PathLike) -> Image.Image:
    """Read an image as 8-bit RGB (grey, palette and RGBA inputs converted like the official code)."""
    image = open_image(path)
    if image.mode.startswith("I") or image.mode == "F":
        image = Image.fromarray(to_uint8(np.asarray(image), path))
    return image.convert("RGB")


def read_mask(path: PathLike) -> np.ndarray:
    """Read a mask as ``uint8`` ``HxW`` with values {0, 255}: foreground = converted value > 127."""
    gray = mask_to_gray(open_image(path), path)
    return np.where(gray > MASK_THRESHOLD, 255, 0).astype(np.uint8)


def read_mask_official(path: PathLike) -> Image.Image:
    """Read a mask exactly as the official loader does: PIL ``convert('L')``, not thresholded."""
    return open_image(path).convert("L")


def first_names(paths: List[str], limit: int = 5) -> str:
    """Comma-separated first ``limit`` names, with '...' when more exist."""
    shown = ", ".join(paths[:limit])
    return shown + (", ..." if len(paths) > limit else "")
