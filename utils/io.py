"""The shared I/O layer (torch-free, so ``eval/`` may import it): atomic writing, strict image
and mask reading, natural sorting.

Writing: a checkpoint, a mask PNG or a JSON report is written to a temporary file in the
destination folder and moved into place with ``os.replace``, so an interrupted run never leaves a
truncated file behind; files get the permissions the umask gives (never mkstemp's 0600).

Masks (:func:`mask_to_gray` and :func:`read_mask_file`, the one mask reader of the training
loader, ``eval.davis16`` and ``eval.vsod``): the encoding is decided once per file, from its mode
and then its value range, so 0/255 and 0/1 masks, 8- and 16-bit, palette and RGBA masks mean the
same in every tool:

* ``1`` (bilevel): set pixels are foreground.
* ``P`` / ``PA`` (palette): palette **index > 0** is foreground, like DAVIS annotations
  (index 0 is the background whatever its palette colour).
* ``L`` / ``RGB`` (luminance, ITU-R 601-2) and ``LA`` / ``RGBA`` (composited over black:
  transparent = background, then luminance), 8 bit; ``I;16*`` / ``I``: 16 bit, values 0..65535.
  Then by value range: a mask holding only 0 and 1, or only 0 and one other value (0/255,
  0/65535, 0/128, ...), is two-level: that value is foreground (grey 255). Any other mask is
  grey (16-bit scaled with ``round(v * 255 / 65535)``).
* other modes (float, CMYK, YCbCr, ...) are refused: their values have no single reading.

Foreground is grey > 128 (``main_VSOD.m``'s rule), so JPEG ringing and soft edges are
thresholded at the middle.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np
from PIL import Image

from utils.cli import BadInputError
from utils.job import Job, current_job, job_from_tag

PathLike = Union[str, os.PathLike]
FOREGROUND_ABOVE = 128  # a mask pixel is foreground where its decided grey exceeds this
#: PIL modes a mask may have (others, e.g. float or CMYK, have no single reading as a mask)
MASK_MODES = ("1", "P", "PA", "L", "LA", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L", "I;16N")
NAME_MAX = 255  # bytes in one file name (ext4, xfs, btrfs, APFS, NTFS)
TEMP_SUFFIX = ".tmp"
TEMP_RANDOM_CHARS = 8  # tempfile.mkstemp's random part


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_prefix(path: Path) -> str:
    """``.<name>.<job tag>.``: the start of the name of ``path``'s temporary file. It names the
    writing job (utils.job) so that only a dead job's temporaries are ever removed, and the name
    is shortened so that the whole temporary name stays within the file system's name limit."""
    tag = current_job().tag
    room = NAME_MAX - len(f"..{tag}.") - TEMP_RANDOM_CHARS - len(TEMP_SUFFIX)
    name = path.name.encode()[:room].decode(errors="ignore")
    return f".{name}.{tag}."


def temporary_job(path: Path) -> Optional[Job]:
    """The job that writes the temporary file ``path`` (None if it is not one of ours)."""
    if not (path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX)):
        return None
    parts = path.name[:-len(TEMP_SUFFIX)].rsplit(".", 2)
    return job_from_tag(parts[1]) if len(parts) == 3 else None


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_current_umask())  # mkstemp creates 0600 files
        os.replace(tmp_path, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if isinstance(error, OSError) and not error.filename:
            error.filename = str(path)  # so "disk full" names the file being written
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (flushed and fsynced before the rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_with(path: PathLike, writer: Callable[[io.BytesIO], Any]) -> None:
    """Serialise into memory with ``writer(buffer)``, then write the bytes atomically."""
    buffer = io.BytesIO()
    writer(buffer)
    atomic_write_bytes(path, buffer.getvalue())


def save_image(array: np.ndarray, path: PathLike) -> None:
    """Save a uint8 ``HxW`` or ``HxWx3`` array as an image (format from the suffix), atomically."""
    if array.dtype != np.uint8:
        raise TypeError(f"save_image expects uint8, got {array.dtype} for {path}")
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(Path(path).suffix.lower())
    if fmt is None:
        raise BadInputError(f"Unsupported image suffix for {path}: use .png or .jpg")
    options = {"quality": 95} if fmt == "JPEG" else {}
    atomic_write_with(path, lambda buf: Image.fromarray(array).save(buf, format=fmt, **options))


def save_json(obj: Any, path: PathLike) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json_object(path: PathLike) -> Optional[dict]:
    """The JSON object stored in ``path``; ``None`` when the file is missing, unreadable, not JSON
    or not an object (a record that cannot be trusted counts as absent)."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def open_image(path: PathLike) -> Image.Image:
    """Open and fully decode an image; raise ``ValueError`` naming the file if it is unreadable."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except FileNotFoundError:
        raise
    except Exception as error:  # PIL raises several unrelated exception types
        raise BadInputError(f"Cannot read image {path}: {' '.join(str(error).split())}",
                            "re-export it as PNG/JPEG or remove it") from error


def write_text(path: PathLike, text: str) -> None:
    """Write ``text`` as UTF-8, atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically (``f2`` before ``f10``)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def mask_to_gray(image: Image.Image, path: PathLike = "<mask>") -> np.ndarray:
    """Convert a mask of any supported encoding to 8-bit grey ``HxW`` (rules in the module
    docstring): the encoding is decided once, from the mode and then the value range."""
    mode = image.mode
    if mode == "1":
        return np.asarray(image, dtype=np.uint8) * 255
    if mode in ("P", "PA"):
        index = np.asarray(image.getchannel(0) if mode == "PA" else image)
        gray = np.where(index > 0, 255, 0).astype(np.uint8)
        if mode == "PA":
            gray = np.where(np.asarray(image.getchannel("A")) > 0, gray, 0).astype(np.uint8)
        return gray
    if mode not in MASK_MODES:
        raise BadInputError(f"mask {path} has the image mode {mode!r}, whose values cannot be read "
                            "as a mask unambiguously",
                            "save it as an 8-bit grey PNG (0 = background, 255 = foreground)")
    if mode.startswith("I"):
        values = _as_16_bit(np.asarray(image), path)
    elif mode in ("LA", "RGBA"):
        alpha = np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0
        luminance = np.asarray(image.convert("RGB").convert("L"), dtype=np.float32)
        values = np.round(luminance * alpha).astype(np.uint8)
    else:
        values = np.asarray(image.convert("L"), dtype=np.uint8)
    return _levels_to_gray(values, path)


def _levels_to_gray(values: np.ndarray, path: PathLike) -> np.ndarray:
    """Two-level masks (0 and one other value, or only 0/1) become 0/255; anything else is
    grey (16-bit values scaled to 8 bits)."""
    top = int(values.max()) if values.size else 0
    nonzero = values[values != 0]
    if top <= 1 or (nonzero.size < values.size and bool(np.all(nonzero == top))):
        return np.where(values == top, 255, 0).astype(np.uint8) if top else np.zeros_like(values, np.uint8)
    return values if values.dtype == np.uint8 else to_uint8(values, path)


def read_mask_file(path: PathLike) -> np.ndarray:
    """The one mask reader: foreground (``bool`` ``HxW``) = decided grey > 128."""
    return mask_to_gray(open_image(path), path) > FOREGROUND_ABOVE


def _as_16_bit(array: np.ndarray, path: PathLike) -> np.ndarray:
    if array.size and (array.min() < 0 or array.max() > 65535):
        raise BadInputError(f"image {path} has values outside 0..65535",
                            "save it as an 8-bit grey PNG (0 = background, 255 = foreground)")
    return array


def to_uint8(array: np.ndarray, path: PathLike) -> np.ndarray:
    """Scale a 16-bit (or 32-bit integer holding 16-bit) array to 8 bits."""
    if array.dtype.kind == "f":
        raise BadInputError(f"Floating-point image {path} is not supported: save it as 8- or 16-bit PNG.")
    return np.round(_as_16_bit(array, path).astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
