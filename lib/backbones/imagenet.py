"""ImageNet initialisation of FSNet's three backbone streams from a local file (never downloads).

As in the official code, one ImageNet state_dict is copied into the appearance, motion and merge
streams (``fc.*`` dropped). Accepted files: torchvision ``resnet50-0676ba61.pth`` /
``resnet50-11ad3fa6.pth`` and ``res2net50_v1b_26w_4s-3cf99910.pth`` (= timm ``res2net50d``).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from lib.backbones.streams import STREAMS, backbone_spec

REPO_ROOT = Path(__file__).resolve().parents[2]
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")


def default_dirs() -> list[Path]:
    """Folders searched after an explicit path: ``snapshot/backbone/``, torch-hub checkpoints."""
    return [REPO_ROOT / "snapshot" / "backbone", Path(torch.hub.get_dir()) / "checkpoints"]


def find_imagenet_file(backbone: str, path: str | Path | None = None) -> Path:
    """Locate the ImageNet file for ``backbone``.

    ``path`` may be a file (used as is) or a folder (searched first). Raises
    ``FileNotFoundError`` naming every place looked at and the file names wanted.
    """
    spec = backbone_spec(backbone)
    dirs = default_dirs()
    if path is not None:
        path = Path(path).expanduser()
        if path.is_file():
            return path
        if not path.is_dir():
            raise FileNotFoundError(
                f"ImageNet weights file {path} does not exist. Put "
                f"{' or '.join(spec.IMAGENET_FILES)} there, or omit the path to search "
                f"{', '.join(str(d) for d in dirs)}."
            )
        dirs.insert(0, path)
    candidates = [folder / name for folder in dirs for name in spec.IMAGENET_FILES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"No ImageNet weights for backbone {backbone!r}. Looked for "
        + ", ".join(str(c) for c in candidates)
        + f". Download {spec.IMAGENET_URL} into {REPO_ROOT / 'snapshot' / 'backbone'}"
        " (nothing is downloaded automatically)."
    )


def verify_hash_in_name(path: Path) -> None:
    """If the name carries ``-<hex>.`` (torch-hub style), check it prefixes the file's SHA-256."""
    match = _HASH_IN_NAME.search(path.name)
    if match is None:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(match.group(1)):
        raise ValueError(
            f"{path}: SHA-256 {digest.hexdigest()[:len(match.group(1))]} does not match the "
            f"prefix {match.group(1)} in its name; the file is corrupt or mislabelled. "
            "Download it again."
        )


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
    fix = "Download it again (see lib/backbones/imagenet.py for the accepted files)."
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"Cannot read ImageNet weights {path}: {error}. {fix}") from error
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path} is not a bare state_dict (name -> tensor). {fix}")
    return obj


def load_imagenet_weights(model: nn.Module, path: str | Path | None = None) -> Path:
    """Copy one ImageNet state_dict into all three backbone streams of ``model`` (an FSNet).

    ``fc.*`` is dropped; a missing ``num_batches_tracked`` keeps the model's value. Any other
    missing, unexpected or mis-shaped key raises ``ValueError``. Returns the file used.
    """
    file = find_imagenet_file(model.backbone_name, path)
    verify_hash_in_name(file)
    source = {k: v for k, v in _read_state_dict(file).items() if not k.startswith("fc.")}
    targets = model.resnet.state_dict()
    wanted = {_source_key(key) for key in targets}
    missing = sorted(
        k for k in wanted - source.keys() if not k.endswith("num_batches_tracked")
    )
    unexpected = sorted(source.keys() - wanted)
    mismatched = sorted(
        k for k in targets
        if _source_key(k) in source and source[_source_key(k)].shape != targets[k].shape
    )
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{file} does not fit backbone {model.backbone_name!r}: "
            f"{len(missing)} missing (e.g. {missing[:10]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:10]}), {len(mismatched)} with other shapes "
            f"(e.g. {mismatched[:10]}). Use {' or '.join(backbone_spec(model.backbone_name).IMAGENET_FILES)}."
        )
    with torch.no_grad():
        for key, target in targets.items():
            if _source_key(key) in source:
                target.copy_(source[_source_key(key)])
    return file
