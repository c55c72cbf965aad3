"""Reading weight files and comparing state_dicts: the repository's one guarded ``torch.load``
and its one readable key diff (used by ``lib`` and, through ``utils.torch_files``, every tool).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from lib.hub import WeightsCorruptError, WeightsNotFoundError

PREFIXES = ("module.", "_orig_mod.")
#: Keys that tell the backbone (a 4-D 7x7 stem conv: ResNet; a deep stem: Res2Net) and the width.
RESNET_STEM = "resnet.conv1_rgb.weight"
RES2NET_STEM = "resnet.conv1_rgb.0.weight"
CHANNEL_KEY = "reduce_a1.reduce.0.conv_bn.0.weight"
SHOWN_KEYS = 10
UNREADABLE_FIX = "download or export it again (a model object: save its state_dict() instead)"


def read_weights_file(path: str | Path, mmap: bool = False) -> Any:
    """``torch.load`` on the CPU with ``weights_only=True`` (no code from the file runs).

    Raises :class:`~lib.hub.WeightsNotFoundError` (a ``FileNotFoundError``) or
    :class:`~lib.hub.WeightsCorruptError` (a ``ValueError``) naming the file. ``mmap=True`` maps
    the file instead of reading it (cheap metadata peeks).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"{path} does not exist", "check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except PermissionError:
        raise  # named as such by the tools' error handler
    except Exception as error:  # the unpickler raises many types (KeyError, IndexError, ...)
        raise WeightsCorruptError(f"cannot read {path}: {_unreadable_reason(path, error)}",
                                  UNREADABLE_FIX) from error


def _unreadable_reason(path: Path, error: Exception) -> str:
    """Why ``torch.load`` failed, told from the file itself (torch's own advice, such as
    "weights_only=False will likely succeed", does not apply to a file that is no checkpoint)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError:
        head = b""
    text = head.lstrip().lower()
    if not head:
        return "it is empty"
    if text.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body")):
        return "it is an HTML/XML page (a web page saved instead of the file?), not a PyTorch checkpoint"
    if head.startswith(b"PK"):
        return "it is a zip archive that is not a complete PyTorch checkpoint (cut short?)"
    if "Unsupported global: GLOBAL" in str(error):
        return ("it stores Python objects other than tensors/numbers/strings/containers (a whole "
                "pickled model?)")
    return "it is not a PyTorch checkpoint, or it is damaged"


def as_float32(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state_dict`` with floating-point tensors in float32 (others, e.g. BN counters, as they are);
    float32 tensors are not copied."""
    return {key: value.float() if value.is_floating_point() else value
            for key, value in state_dict.items()}


def strip_prefixes(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove leading ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile)."""
    out = {}
    for key, value in state_dict.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix):], True
        out[key] = value
    return out


@dataclass
class KeyDiff:
    """How a given state_dict differs from the expected one (keys in the expected order)."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "key: file (shape) vs model (shape)"

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        """``"2 missing [...], 1 unexpected [...], 0 shape mismatches []"`` (first 10 of each)."""
        return (f"{len(self.missing)} missing {self.missing[:SHOWN_KEYS]}, "
                f"{len(self.unexpected)} unexpected {self.unexpected[:SHOWN_KEYS]}, "
                f"{len(self.mismatched)} shape mismatches {self.mismatched[:SHOWN_KEYS]}")


def compare_state_dicts(expected: Mapping[str, Tensor], given: Mapping[str, Tensor],
                        optional: Callable[[str], bool] = lambda key: False) -> KeyDiff:
    """Missing (unless ``optional(key)``), unexpected and mis-shaped keys of ``given``; a tensor
    whose kind (floating point or integer) differs from the model's counts as mis-shaped."""
    return KeyDiff(
        missing=[k for k in expected if k not in given and not optional(k)],
        unexpected=[k for k in given if k not in expected],
        mismatched=[f"{k}: file {_describe_tensor(given[k])} vs model {_describe_tensor(v)}"
                    for k, v in expected.items() if k in given and _misfits(given[k], v)])


def _misfits(given: Tensor, expected: Tensor) -> bool:
    return (not isinstance(given, Tensor) or given.shape != expected.shape
            or given.is_floating_point() != expected.is_floating_point())


def _describe_tensor(value: object) -> str:
    if not isinstance(value, Tensor):
        return type(value).__name__
    kind = "" if value.is_floating_point() else f" {str(value.dtype).removeprefix('torch.')}"
    return f"{tuple(value.shape)}{kind}"


def backbone_of(state_dict: Mapping[str, Tensor]) -> str | None:
    """``"resnet50"`` or ``"res2net50"`` from an FSNet state_dict's stem keys, else ``None``."""
    if RES2NET_STEM in state_dict:
        return "res2net50"
    if RESNET_STEM in state_dict and state_dict[RESNET_STEM].dim() == 4:
        return "resnet50"
    return None


def first_non_finite(obj: Any, name: str = "") -> str | None:
    """``"<key path> (<n> of <m> values are NaN/inf)"`` for the first floating-point tensor in
    ``obj`` (nested dicts, lists, tuples) holding a NaN or inf, or ``None`` if every one is finite."""
    if isinstance(obj, Tensor):
        if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
            bad = int((~torch.isfinite(obj)).sum())
            return f"{name or 'tensor'} ({bad} of {obj.numel()} values are NaN/inf)"
        return None
    if isinstance(obj, Mapping):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = first_non_finite(value, f"{name}.{key}" if name else str(key))
        if found is not None:
            return found
    return None
