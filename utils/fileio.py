"""Atomic file writing and strict image reading shared by every tool in the repository.

Nothing here is FSNet-specific: a checkpoint, a mask PNG or a JSON report is written to a
temporary file in the destination folder and moved into place with ``os.replace``, so an
interrupted run never leaves a truncated file behind.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import numpy as np
from PIL import Image

PathLike = Union[str, os.PathLike]


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_current_umask())  # mkstemp creates 0600 files
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
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
        raise ValueError(f"Unsupported image suffix for {path}: use .png or .jpg")
    options = {"quality": 95} if fmt == "JPEG" else {}
    atomic_write_with(path, lambda buf: Image.fromarray(array).save(buf, format=fmt, **options))


def save_json(obj: Any, path: PathLike) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def open_image(path: PathLike) -> Image.Image:
    """Open and fully decode an image; raise ``ValueError`` naming the file if it is unreadable."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except FileNotFoundError:
        raise
    except Exception as error:  # PIL raises several unrelated exception types
        raise ValueError(
            f"Cannot read image {path}: {error}. Re-export it as PNG/JPEG or remove it."
        ) from error
