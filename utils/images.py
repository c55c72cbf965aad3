"""Strict image and mask reading, and stem-indexed folder listing, for every data loader.

Mask conversion rules (documented in dataset/README.md):

* ``1`` (bilevel): set pixels are foreground.
* ``P`` / ``PA`` (palette): palette **index > 0** is foreground, like DAVIS annotations
  (index 0 is the background whatever its palette colour).
* ``I;16*`` / ``I`` (16-bit): scaled to 8 bits with ``round(v * 255 / 65535)``.
* ``LA`` / ``RGBA``: composited over black (transparent = background), then luminance.
* anything else (``L``, ``RGB``, JPEG masks, ...): PIL ``convert('L')`` (ITU-R 601-2 luminance).

After conversion to 8 bits, foreground is ``value > 127`` (so JPEG ringing and soft edges are
thresholded at the middle grey). ``read_mask_official`` instead reproduces the official loader:
``convert('L')`` with no threshold.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image

from utils.fileio import PathLike, open_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MASK_THRESHOLD = 127
SEQUENCE_SEPARATOR = "_"


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically (``f2`` before ``f10``)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


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
        raise FileNotFoundError(f"Folder not found: {folder}")
    by_stem: Dict[str, Path] = {}
    for path in folder.iterdir():
        if not is_image_file(path):
            continue
        if path.stem in by_stem:
            raise ValueError(
                f"Two images share the stem '{path.stem}' in {folder}: {by_stem[path.stem].name} and "
                f"{path.name}. Keep one of them so that files can be paired by name."
            )
        by_stem[path.stem] = path
    return {stem: by_stem[stem] for stem in sorted(by_stem, key=natural_key)}


def read_rgb(path: PathLike) -> Image.Image:
    """Read an image as 8-bit RGB (grey, palette and RGBA inputs converted like the official code)."""
    image = open_image(path)
    if image.mode.startswith("I") or image.mode == "F":
        image = Image.fromarray(_to_uint8(np.asarray(image), path))
    return image.convert("RGB")


def mask_to_gray(image: Image.Image, path: PathLike = "<mask>") -> np.ndarray:
    """Convert a mask image of any supported mode to an 8-bit grey ``HxW`` array (rules above)."""
    mode = image.mode
    if mode == "1":
        return np.asarray(image, dtype=np.uint8) * 255
    if mode in ("P", "PA"):
        index = np.asarray(image.getchannel(0) if mode == "PA" else image)
        gray = np.where(index > 0, 255, 0).astype(np.uint8)
        if mode == "PA":
            gray = np.where(np.asarray(image.getchannel("A")) > 0, gray, 0).astype(np.uint8)
        return gray
    if mode.startswith("I") or mode == "F":
        return _to_uint8(np.asarray(image), path)
    if mode in ("LA", "RGBA"):
        alpha = np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0
        luminance = np.asarray(image.convert("RGB").convert("L"), dtype=np.float32)
        return np.round(luminance * alpha).astype(np.uint8)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def _to_uint8(array: np.ndarray, path: PathLike) -> np.ndarray:
    """Scale a 16-bit (or 32-bit integer holding 16-bit) array to 8 bits."""
    if array.dtype.kind == "f":
        raise ValueError(f"Floating-point image {path} is not supported: save it as 8- or 16-bit PNG.")
    if array.min() < 0 or array.max() > 65535:
        raise ValueError(f"Image {path} has values outside 0..65535: save it as 8- or 16-bit PNG.")
    return np.round(array.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)


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
