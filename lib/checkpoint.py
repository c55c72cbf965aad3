"""From a checkpoint file to an FSNet: the one builder every tool uses, and the ``config`` entry.

Every checkpoint the project writes is a dict ``{"model": state_dict, "config": {...}, ...}``
whose ``config`` is :func:`dataclasses.asdict` of the network's :class:`~lib.fsnet.FSNetConfig`
(:func:`checkpoint_dict`). A file without one (the authors' release, a bare state_dict, files
written before the entry existed) is the released architecture when its keys say so; anything
else is refused with one message saying what is missing. :func:`build_fsnet` rebuilds whatever
variant a file holds, on the ``meta`` device (no random initialisation, no second copy of the
weights). :func:`init_from_state` initialises a variant from any full-model state_dict (shared
keys by name and shape) and reports what was not used.

Errors are :mod:`lib.hub`'s ``WeightsNotFoundError`` (a ``FileNotFoundError``) and
``WeightsCorruptError`` (a ``ValueError``), each naming the file and the fix (``lib`` imports
nothing from ``utils``; ``utils.weights.user_errors`` makes them one-line CLI errors).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import Tensor

from lib.fsnet import FSNet, FSNetConfig
from lib.hub import WeightsCorruptError, WeightsNotFoundError
from lib.state_dict import (CHANNEL_KEY, as_float32, backbone_of, compare_state_dicts,
                            first_non_finite, read_weights_file, strip_prefixes)

PathLike = Union[str, Path]
#: Checkpoint entry holding ``asdict(FSNetConfig)`` (also a key of train.py's run.json).
CONFIG_KEY = "config"
NOT_FSNET_FIX = ("pass an FSNet checkpoint written by train.py (it records the architecture) or "
                 "the released file (python -m utils.weights fsnet says where to get it)")


def config_from_dict(entry: Any, source: str) -> FSNetConfig:
    """The :class:`FSNetConfig` of a checkpoint's or run.json's ``config`` entry.

    ``WeightsCorruptError`` naming ``source`` if it is not a dict of valid fields.
    """
    names = [f.name for f in fields(FSNetConfig)]
    if not isinstance(entry, Mapping) or set(entry) - set(names):
        raise WeightsCorruptError(
            f"{source}: its {CONFIG_KEY!r} entry {entry!r} is not an FSNet configuration (fields "
            f"{names})", "the file is damaged or not written by this project; use another copy")
    try:
        return FSNetConfig(**entry)
    except (TypeError, ValueError) as error:
        raise WeightsCorruptError(f"{source}: invalid {CONFIG_KEY!r} entry: {error}",
                                  "the file is damaged or not written by this project; use "
                                  "another copy") from None


def config_difference(found: FSNetConfig, wanted: FSNetConfig) -> tuple[str, str]:
    """The fields in which two configurations differ, as ``("rcam='app2mo'", "rcam='duplex'")``."""
    names = [f.name for f in fields(FSNetConfig) if getattr(found, f.name) != getattr(wanted, f.name)]
    return tuple(", ".join(f"{n}={getattr(c, n)!r}" for n in names) for c in (found, wanted))


def checkpoint_dict(model: FSNet, prefix: str = "", **extra: Any) -> dict[str, Any]:
    """``{"model": state_dict (keys prefixed with prefix), "config": asdict(config), **extra}``:
    the form of every checkpoint the project writes."""
    state = {f"{prefix}{key}": value for key, value in model.state_dict().items()}
    return {"model": state, CONFIG_KEY: asdict(model.config), **extra}


@dataclass
class Checkpoint:
    """A checkpoint's weights (prefixes stripped) and its ``config`` entry (``None`` if absent)."""

    path: Path
    state: dict[str, Tensor]
    config_entry: Optional[Mapping[str, Any]]

    def config(self) -> FSNetConfig:
        """The architecture: the ``config`` entry, or the released one when the keys match it.

        ``WeightsCorruptError`` (one line) saying what is missing otherwise.
        """
        if self.config_entry is not None:
            return config_from_dict(self.config_entry, str(self.path))
        backbone = backbone_of(self.state)
        channel = self.state[CHANNEL_KEY].shape[0] if CHANNEL_KEY in self.state else 32
        released = FSNetConfig(backbone=backbone or "resnet50", channel=channel)
        diff = compare_state_dicts(_meta_model(released).state_dict(), self.state)
        if backbone is None or diff:
            raise WeightsCorruptError(
                f"{self.path} records no {CONFIG_KEY!r} (architecture) entry and its weights are "
                f"not those of the released FSNet ({diff.describe()})", NOT_FSNET_FIX)
        return released


def _meta_model(config: FSNetConfig) -> FSNet:
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        return FSNet(config)


def read_checkpoint(path: PathLike) -> Checkpoint:
    """Read a bare state_dict or a ``{"model": state_dict, "config": ...}`` checkpoint.

    Raises ``WeightsNotFoundError`` / ``WeightsCorruptError`` naming the file; refuses a file
    that holds no state_dict or non-finite weights.
    """
    path = Path(path)
    try:
        obj = read_weights_file(path)
    except WeightsNotFoundError as error:
        raise WeightsNotFoundError(error.what, NOT_FSNET_FIX) from None
    entry = obj.get(CONFIG_KEY) if isinstance(obj, Mapping) else None
    state = obj["model"] if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping) else obj
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise WeightsCorruptError(f"{path} holds no FSNet state_dict", NOT_FSNET_FIX)
    bad = first_non_finite(state)
    if bad is not None:
        raise WeightsCorruptError(f"{path} holds non-finite values, first {bad}",
                                  "the weights are broken (a diverged training); use an earlier "
                                  "checkpoint of the run")
    return Checkpoint(path, strip_prefixes(state), entry)


def build_fsnet(path: PathLike, expected: Optional[FSNetConfig] = None,
                map_location: Union[str, torch.device] = "cpu") -> FSNet:
    """The FSNet variant that ``path`` holds, with its weights (float32, eval mode).

    ``expected``: the configuration the caller needs; a checkpoint of another variant is a
    ``WeightsCorruptError`` naming both. Built on the ``meta`` device and loaded strictly with
    the file's own tensors.
    """
    checkpoint = read_checkpoint(path)
    config = checkpoint.config()
    if expected is not None and config != expected:
        found, wanted = config_difference(config, expected)
        raise WeightsCorruptError(
            f"{path} holds an FSNet with {found}, not the expected {wanted}", "pass a checkpoint of that variant, or use the "
            "configuration the file records")
    model = _meta_model(config)
    diff = compare_state_dicts(model.state_dict(), checkpoint.state)
    if diff:
        raise WeightsCorruptError(f"{path} does not fit its recorded {config!r}: "
                                  f"{diff.describe()}", "the file is damaged; use another copy")
    model.load_state_dict(as_float32(checkpoint.state), assign=True)
    return model.to(map_location).eval()


@dataclass
class InitReport:
    """What :func:`init_from_state` did: keys loaded, keys of the source it did not use (absent
    from the variant or of another shape) and keys of the variant it left as they were."""

    loaded: list[str]
    unused: list[str]
    missing: list[str]

    def __str__(self) -> str:
        return (f"{len(self.loaded)} tensors loaded; {len(self.unused)} of the source unused "
                f"{self.unused[:5]}; {len(self.missing)} of the network not in the source "
                f"{self.missing[:5]}")


def init_from_state(model: FSNet, state: Mapping[str, Tensor]) -> InitReport:
    """Copy every tensor of ``state`` (a full-model or any FSNet state_dict, prefixes stripped
    here) whose key the variant ``model`` shares with the same shape; report the rest."""
    state = strip_prefixes(state)
    own = model.state_dict()
    shared = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(shared, strict=False)
    return InitReport(loaded=list(shared), unused=[k for k in state if k not in shared],
                      missing=[k for k in own if k not in shared])
