"""torch.hub entry points: FSNet built from ``lib/``, weights found or downloaded through ``lib.hub``.

From a checkout (no install needed)::

    import torch
    model = torch.hub.load("path/to/checkout", "fsnet", source="local", weights="run/best.pth")
    model = torch.hub.load("path/to/checkout", "fsnet_resnet50", source="local", pretrained=True)

``model(image, flow)`` returns the appearance and motion logits ``(N, 1, H, W)`` for ``image`` and
its colour-coded ``flow``, both ``(N, 3, H, W)`` normalised with the ImageNet mean and std, H and W
multiples of 32 (docs/model.md). A network with weights is returned in eval mode, on the CPU.
"""
from __future__ import annotations

import pathlib
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # names imported at run time would be listed by torch.hub.list as entry points
    from typing import Any, Optional

    from lib.fsnet import FSNet

# Checked by torch.hub before an entry point runs: what the network and its loader import.
dependencies = ["torch", "numpy", "PIL", "tqdm"]

_ROOT = pathlib.Path(__file__).resolve().parent


def _check_own_packages() -> None:
    """Refuse to run against another project's ``lib``/``utils`` already in ``sys.modules``: this
    checkout's packages have these common names and Python imports each name once."""
    for name in ("lib", "utils"):
        module = sys.modules.get(name)
        where = getattr(module, "__file__", None) or ""
        if module is not None and not pathlib.Path(where).resolve().is_relative_to(_ROOT):
            raise ImportError(
                f"a module named {name!r} from {where or 'elsewhere'} is already imported, and FSNet's "
                f"hub entry points need the one in {_ROOT} — call torch.hub.load before importing "
                f"that module, or run in a process that does not import it")


def fsnet(pretrained: bool = False, weights: Optional[str] = None, offline: bool = False,
          **config: Any) -> FSNet:
    """FSNet (Ji et al., ICCV 2021), a video object segmentation network.

    Args:
        pretrained: the authors' released model (ResNet-50). It is shared by Google Drive /
            Baidu Pan only, so it is never downloaded: put ``2021-ICCV-FSNet-20epoch-new.pth`` in
            ``snapshot/FSNet/`` or the torch hub cache (``python -m utils.weights fsnet`` says
            how); the error names every place looked at.
        weights: a checkpoint written by this project (``train.py``'s epoch files, a bare
            state_dict): a local path, or a URL (``https://``, ``file://``) downloaded once into the
            torch hub cache, SHA-256 checked when its name ends in ``-<hex>.pth``. The network is
            built with the configuration saved in the file.
        offline: never download (as ``FSNET_OFFLINE=1``): a URL not yet in the hub cache is an
            error saying where to put the file.
        **config: any ``lib.fsnet.FSNetConfig`` field: ``backbone`` (``"res2net50"``, the
            default, or ``"resnet50"``), ``channel`` (32), ``num_bpm`` (4), ``rcam``
            (``"duplex"``, ``"app2mo"``, ``"mo2app"``, ``"concat"``), ``bpm`` (``"duplex"``,
            ``"to_motion"``, ``"to_appearance"``), ``streams`` (``"both"``, ``"appearance"``,
            ``"motion"``); the defaults are the released architecture. With weights, the file's
            recorded configuration is used, and any value given must equal it.

    Returns:
        ``FSNet``; ``model(image, flow) -> (pred_s, pred_e)`` logits.
    """
    _check_own_packages()
    from dataclasses import asdict

    from lib.checkpoint import build_fsnet
    from lib.fsnet import FSNet, FSNetConfig
    from utils.weights import checkpoint_file, find_release, load_release

    if pretrained and weights is not None:
        raise ValueError("pass pretrained=True or weights=..., not both")
    if not (pretrained or weights is not None):
        return FSNet(FSNetConfig(**config))
    model = load_release(find_release()) if pretrained else build_fsnet(checkpoint_file(str(weights), offline))
    saved = asdict(model.config)
    unknown = sorted(set(config) - set(saved))
    if unknown:
        raise TypeError(f"FSNetConfig has no field {', '.join(unknown)}; its fields: {', '.join(saved)}")
    clashes = [f"{key}={value!r} (the file has {saved[key]!r})"
               for key, value in config.items() if saved[key] != value]
    if clashes:
        raise ValueError(f"the checkpoint's configuration differs: {', '.join(clashes)}; "
                         "leave these arguments out to use the file's")
    return model


def fsnet_resnet50(pretrained: bool = False, weights: Optional[str] = None, offline: bool = False,
                   **config: Any) -> FSNet:
    """FSNet with a ResNet-50 backbone, the paper's and the released model's (``pretrained=True``).

    Same arguments as ``fsnet``; ``backbone`` is ``"resnet50"``.
    """
    return fsnet(pretrained, weights, offline, **{**config, "backbone": "resnet50"})


def fsnet_res2net50(pretrained: bool = False, weights: Optional[str] = None, offline: bool = False,
                    **config: Any) -> FSNet:
    """FSNet with a Res2Net-50 v1b 26w4s backbone, the official code's default.

    Same arguments as ``fsnet``; ``backbone`` is ``"res2net50"``. No released model has this
    backbone, so ``pretrained=True`` is an error; use ``weights=`` with your own checkpoint.
    """
    if pretrained:
        raise ValueError("the released FSNet model has a ResNet-50 backbone: use fsnet_resnet50")
    return fsnet(pretrained, weights, offline, **{**config, "backbone": "res2net50"})
