"""FSNet checkpoint I/O: atomic save, guarded load, backbone detection, readable key errors.

Every tool reads checkpoints through :func:`load_torch_file`, which refuses a file holding a NaN or
inf tensor (naming the file and the first such tensor); train.py never writes one.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from lib.fsnet import FSNet
from lib.hub import WeightsCorruptError, WeightsNotFoundError
from lib.state_dict import (CHANNEL_KEY, RES2NET_STEM, RESNET_STEM, as_float32, backbone_of, compare_state_dicts,
                            first_non_finite, read_weights_file, strip_prefixes)
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


def load_state_dict_file(path: PathLike) -> dict[str, Tensor]:
    """Read a bare state_dict or a training checkpoint (``{"model": state_dict, ...}``).

    Loads on CPU with ``weights_only=True`` (tensors, numbers, strings and containers only) and
    strips ``module.`` / ``_orig_mod.`` prefixes.
    """
    obj = load_torch_file(
        path,
        missing_fix="The released model goes to snapshot/FSNet/2021-ICCV-FSNet-20epoch-new.pth: "
                    "python -m utils.weights fsnet prints where to get it.",
        unreadable_fix="download or export it again, or pass another checkpoint (a pickled "
                       "model object: save its state_dict() instead)")
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise BadInputError(
            f"{path} holds {_describe(obj)}, not an FSNet state_dict or a training checkpoint "
            "with a 'model' entry."
        )
    return strip_prefixes(obj)


def detect_backbone(state_dict: Mapping[str, Tensor]) -> str:
    """Return ``"resnet50"`` or ``"res2net50"`` from the stem keys (``ValueError`` otherwise)."""
    backbone = backbone_of(state_dict)
    if backbone is not None:
        return backbone
    raise BadInputError(
        f"Not an FSNet state_dict: neither {RESNET_STEM!r} (ResNet-50) nor {RES2NET_STEM!r} "
        f"(Res2Net-50) is present; it looks like {_describe(state_dict)}."
    )


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
        try:
            looks_like = f"an FSNet {detect_backbone(state_dict)} state_dict"
        except ValueError:
            looks_like = _describe(state_dict)
        raise BadInputError(
            f"State dict does not fit {type(model).__name__}"
            f"({getattr(model, 'backbone_name', '?')}): {diff.describe()}. The file looks like "
            f"{looks_like} with {len(state_dict)} keys."
        )
    model.load_state_dict(state_dict, strict=strict, assign=assign)
    return diff.missing, diff.unexpected


def build_model_from_checkpoint(
    path: PathLike, map_location: str | torch.device = "cpu"
) -> FSNet:
    """Build the FSNet matching the file's backbone and channel width, load it strictly.

    Returns the model in eval mode on ``map_location``, in float32. The network is built on the
    ``meta`` device and takes the file's tensors as they are: no random initialisation, and no
    second copy of the weights while loading.
    """
    state_dict = load_state_dict_file(path)
    backbone = detect_backbone(state_dict)
    channel = state_dict[CHANNEL_KEY].shape[0] if CHANNEL_KEY in state_dict else 32
    with torch.device("meta"):
        model = FSNet(backbone=backbone, channel=channel)
    try:
        load_model_weights(model, as_float32(state_dict), strict=True, assign=True)
    except ValueError as error:
        raise BadInputError(f"{path}: {error}") from error
    return model.to(map_location).eval()
