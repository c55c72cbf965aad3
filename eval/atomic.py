"""Atomic file writing for eval/ (which imports nothing from lib/ or utils/ so that it can be
used on its own; this mirrors ``utils.fileio.atomic_write_bytes``)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union


def write_atomic(path: Union[str, os.PathLike], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Union[str, os.PathLike], text: str) -> None:
    """Write ``text`` as UTF-8 atomically (see :func:`write_atomic`)."""
    write_atomic(path, text.encode("utf-8"))
