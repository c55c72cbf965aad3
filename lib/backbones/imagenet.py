"""ImageNet initialisation of FSNet's three backbone streams (a local file, else downloaded once).

As in the official code, one ImageNet state_dict is copied into the appearance, motion and merge
streams (``fc.*`` dropped). Accepted files: torchvision ``resnet50-0676ba61.pth`` /
``resnet50-11ad3fa6.pth`` and ``res2net50_v1b_26w_4s-3cf99910.pth`` (= timm ``res2net50d``).
Where a file is looked for and when it is downloaded: :mod:`lib.hub` (docs/weights.md).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from lib import hub
from lib.backbones.streams import STREAMS, backbone_spec
from lib.hub import WeightsCorruptError, WeightsNotFoundError, verify_hash_in_name
from lib.state_dict import compare_state_dicts, read_weights_file

FLAG = "--imagenet"


def default_dirs() -> list[Path]:
    """Folders searched after an explicit path: ``snapshot/backbone/``, torch-hub checkpoints."""
    return hub.default_dirs()


def find_imagenet_file(backbone: str, path: str | Path | None = None, offline: bool = False) -> Path:
    """Locate the ImageNet file for ``backbone``, downloading it into the hub cache if need be.

    ``path`` may be a file (used as is) or a folder (searched first). Without a local file the
    backbone's published file is downloaded (hash-checked) unless ``offline`` or ``FSNET_OFFLINE=1``;
    then :class:`~lib.hub.WeightsNotFoundError` names every place looked at and what to put there.
    """
    spec = backbone_spec(backbone)
    dirs = default_dirs()
    if path is not None:
        path = Path(path).expanduser()
        if path.is_file():
            return path
        if not path.is_dir():
            raise WeightsNotFoundError(
                f"ImageNet weights file {path} does not exist",
                f"put {' or '.join(spec.IMAGENET_FILES)} there, or omit {FLAG} to search "
                f"{', '.join(str(d) for d in dirs)} (and download if not found)")
        dirs.insert(0, path)
    return hub.find_or_download(spec.IMAGENET_FILES, spec.IMAGENET_URL,
                                f"ImageNet weights file for backbone {backbone!r}", dirs, FLAG, offline)


def _source_key(stream_key: str) -> str:
    """``layer1_rgb.0.conv1.weight`` -> ``layer1.0.conv1.weight`` (merge keys unchanged)."""
    first, _, rest = stream_key.partition(".")
    for stream in STREAMS[:-1]:
        if first.endswith(stream):
            first = first[: -len(stream)]
            break
    return f"{first}.{rest}" if rest else first


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """The bare state_dict stored in ``path``; ``ValueError`` naming the file otherwise."""
    fix = "download it again (docs/weights.md lists the accepted files)"
    obj = read_weights_file(path)
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsCorruptError(f"{path} is not a bare state_dict (name -> tensor)", fix)
    return obj


def load_imagenet_weights(model: nn.Module, path: str | Path | None = None,
                          offline: bool = False) -> Path:
    """Copy one ImageNet state_dict into all three backbone streams of ``model`` (an FSNet).

    The file is found (or downloaded unless ``offline``) by :func:`find_imagenet_file`. ``fc.*``
    is dropped; a missing ``num_batches_tracked`` keeps the model's value. Any other missing,
    unexpected or mis-shaped key raises :class:`~lib.hub.WeightsCorruptError` (a ``ValueError``).
    Returns the file used.
    """
    file = find_imagenet_file(model.backbone_name, path, offline)
    verify_hash_in_name(file)
    source = {k: v for k, v in _read_state_dict(file).items() if not k.startswith("fc.")}
    targets = model.resnet.state_dict()
    wanted = {_source_key(key): value for key, value in targets.items()}
    diff = compare_state_dicts(wanted, source, optional=lambda k: k.endswith("num_batches_tracked"))
    if diff:
        raise WeightsCorruptError(
            f"{file} does not fit backbone {model.backbone_name!r}: {diff.describe()}",
            f"use {' or '.join(backbone_spec(model.backbone_name).IMAGENET_FILES)}")
    with torch.no_grad():
        for key, target in targets.items():
            if _source_key(key) in source:
                target.copy_(source[_source_key(key)])
    return file
