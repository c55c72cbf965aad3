"""PyTorch files for the tools: atomic save, guarded load, strict weight load with readable key
errors.

Training files are read through :func:`load_torch_file`, which refuses a file holding a NaN or
inf tensor (naming the file and the first such tensor); train.py never writes one. A checkpoint
becomes a network through :func:`lib.checkpoint.build_fsnet`, the one builder.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from lib.hub import WeightsCorruptError, WeightsNotFoundError
from lib.state_dict import compare_state_dicts, first_non_finite, read_weights_file, strip_prefixes
from utils.cli import BadInputError, MissingInputError
from utils.io import PathLike, atomic_path


class _WriteErrors:
    """Writable file wrapper that remembers the ``OSError`` of a failed write: ``torch.save``
    reports it as an unrelated ``RuntimeError`` (e.g. "unexpected pos"), losing "disk full"."""

    def __init__(self, handle: Any) -> None:
        self.handle, self.error = handle, None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


def save_checkpoint(obj: Any, path: PathLike) -> None:
    """``torch.save(obj, path)`` through a temp file + ``os.replace`` (no partial file on error).

    A failed write (e.g. no space left on device) raises its ``OSError`` naming ``path``.
    """
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            writer = _WriteErrors(handle)
            try:
                torch.save(obj, writer)
            except RuntimeError:
                if writer.error is None:
                    raise
                raise writer.error from None
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        if error.filename is None or Path(error.filename).name.endswith(".tmp"):
            error.filename = str(path)
        raise


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj)
        return f"a dict with {len(keys)} keys, first {keys[:5]}"
    return f"a {type(obj).__name__}"


def load_torch_file(path: PathLike, missing_fix: str, unreadable_fix: str, mmap: bool = False) -> Any:
    """``torch.load`` on CPU with ``weights_only=True``; a missing or unreadable file, or one
    holding a NaN/inf tensor, raises an error naming ``path`` followed by the caller's fix.
    ``mmap=True`` maps the file instead of reading it and skips the NaN/inf scan (metadata peeks)."""
    try:
        obj = read_weights_file(path, mmap=mmap)
    except WeightsNotFoundError:
        raise MissingInputError(f"Checkpoint {path} does not exist. {missing_fix}") from None
    except WeightsCorruptError as error:
        raise BadInputError(f"Cannot read checkpoint {error.what[len('cannot read '):]}",
                            unreadable_fix) from error
    bad = None if mmap else first_non_finite(obj)
    if bad is not None:
        raise BadInputError(
            f"checkpoint {path} holds non-finite values, first {bad}",
            "the weights are broken (a diverged training); use an earlier checkpoint, or resume "
            "the run's last good last.pth with a lower --lr")
    return obj


def load_model_weights(
    model: nn.Module, state_dict: Mapping[str, Tensor], strict: bool = True, assign: bool = False
) -> tuple[list[str], list[str]]:
    """Load ``state_dict`` into ``model``; return ``(missing, unexpected)`` keys.

    With ``strict=True`` any missing/unexpected key or shape mismatch raises ``ValueError``
    listing up to 10 of each; with ``strict=False`` only shape mismatches raise. ``assign`` makes
    the file's tensors the model's own (no copy; for a model built on the ``meta`` device).
    """
    state_dict = strip_prefixes(state_dict)
    diff = compare_state_dicts(model.state_dict(), state_dict)
    if diff.mismatched or (strict and diff):
        raise BadInputError(
            f"State dict does not fit {type(model).__name__}"
            f"({getattr(model, 'config', '?')}): {diff.describe()}. The file holds "
            f"{_describe(state_dict)}."
        )
    model.load_state_dict(state_dict, strict=strict, assign=assign)
    return diff.missing, diff.unexpected
