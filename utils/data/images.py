"""Strict image and mask reading, and stem-indexed folder listing, for every data loader.

Masks are read by the shared reader (:func:`utils.io.read_mask_file`, rules in ``utils.io``);
``read_mask_official`` keeps the grey values, as the official loader does.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from utils.cli import BadInputError, MissingInputError, UserError
from utils.io import PathLike, mask_to_gray, natural_key, open_image, read_mask_file, to_uint8

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
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
    """Read a mask as ``uint8`` ``HxW`` with values {0, 255} (:func:`utils.io.read_mask_file`)."""
    return np.where(read_mask_file(path), 255, 0).astype(np.uint8)


def read_mask_official(path: PathLike) -> Image.Image:
    """Read a mask as grey, not thresholded, as the official loader does (PIL ``convert('L')``),
    with the encoding decided by the shared reader (a 0/1 mask becomes 0/255)."""
    return Image.fromarray(mask_to_gray(open_image(path), path))


def first_names(paths: List[str], limit: int = 5) -> str:
    """Comma-separated first ``limit`` names, with '...' when more exist."""
    shown = ", ".join(paths[:limit])
    return shown + (", ..." if len(paths) > limit else "")


# --------------------------------------------------------------------------- checking before work

HEADER_THREADS = 8
TAIL_BYTES = 1024
_END_MARKERS = {"PNG": b"IEND", "JPEG": b"\xff\xd9"}  # bytes a complete file ends with


class ImageHeader(NamedTuple):
    """What an image header tells without decoding the pixels."""

    width: int
    height: int
    mode: str  # PIL mode ("L", "P", "RGB", "RGBA", "I;16", ...)


def image_header(path: PathLike) -> ImageHeader:
    """Size and mode of an image from its header, without decoding the pixels.

    Also checks that the file is complete: an empty file is refused, and a PNG / JPEG whose end
    marker is not in its last KiB is decoded once in full to tell a truncated file from one
    with trailing bytes. So a broken copy is found here rather than when its batch comes up.
    Raises ``BadInputError`` (``MissingInputError`` if it does not exist) naming the file.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise OSError("empty file (0 bytes)")
        with Image.open(path) as image:
            header, fmt = ImageHeader(image.width, image.height, image.mode), image.format
            if not _ends_with_marker(path, fmt):
                try:
                    image.load()
                except Exception as error:  # PIL raises several unrelated exception types
                    raise OSError(f"truncated {fmt} file (no end marker; {error})") from error
        return header
    except FileNotFoundError as error:
        raise MissingInputError(f"image {path} not found", "check the path") from error
    except Exception as error:  # PIL raises several unrelated exception types
        raise BadInputError(f"Cannot read image {path}: {' '.join(str(error).split())}",
                            "re-export it as PNG/JPEG or remove it") from error


def is_complete_image(path: PathLike) -> bool:
    """True if ``path`` is a readable, complete image (what "already done" may rely on): not
    missing, not empty, header readable and PNG/JPEG end marker present (see
    :func:`image_header`). Cost: docs/inference.md ("Resuming")."""
    try:
        image_header(path)
    except UserError:
        return False
    return True


def _ends_with_marker(path: Path, image_format: Optional[str]) -> bool:
    """True if the file ends with its format's trailer (PNG ``IEND``, JPEG ``EOI``); False for
    other formats, which are then decoded to be checked."""
    marker = _END_MARKERS.get(image_format or "")
    if marker is None:
        return False
    with open(path, "rb") as handle:
        handle.seek(max(0, os.fstat(handle.fileno()).st_size - TAIL_BYTES))
        return marker in handle.read()


def check_images(paths: Iterable[PathLike], same_size: Iterable[Sequence[PathLike]] = (),
                 threads: int = HEADER_THREADS) -> Tuple[Dict[Path, ImageHeader], List[str]]:
    """Read every image header (in a thread pool) and compare sizes within each group.

    Returns ``(headers, problems)``: ``headers`` maps each readable path to its
    :class:`ImageHeader`; ``problems`` lists every unreadable file and every file whose size
    differs from the first file of its ``same_size`` group (groups' paths must be among
    ``paths``). Nothing is raised, so the caller can report all problems in one message.
    """
    unique = list(dict.fromkeys(Path(p) for p in paths))

    def probe(path: Path) -> Tuple[Path, Optional[ImageHeader], Optional[str]]:
        try:
            return path, image_header(path), None
        except UserError as error:
            return path, None, error.what

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = list(pool.map(probe, unique))
    sizes = {path: size for path, size, _ in results if size is not None}
    problems = [problem for _, _, problem in results if problem is not None]
    for group in same_size:
        known = [Path(p) for p in group if Path(p) in sizes]
        if not known:
            continue
        first = sizes[known[0]]
        problems += [f"{p}: {sizes[p].width}x{sizes[p].height} but {known[0]} is "
                     f"{first.width}x{first.height}" for p in known[1:] if sizes[p][:2] != first[:2]]
    return sizes, problems


def listing(items: Sequence[object], limit: int = 10) -> str:
    """The first ``limit`` items one per indented line, then how many more there are."""
    shown = "".join(f"\n  {item}" for item in items[:limit])
    return shown + (f"\n  ... and {len(items) - limit} more" if len(items) > limit else "")
