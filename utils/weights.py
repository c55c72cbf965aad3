"""Weights files: ImageNet and RAFT on first use (with an offline switch), the released FSNet model.

CLI::

    python -m utils.weights fsnet [--check [PATH]]
    python -m utils.weights imagenet [--backbone res2net50|resnet50] [--imagenet PATH] [--offline]
    python -m utils.weights raft [--raft_model raft_large|raft_small] [--raft_weights PATH] [--offline]

``fsnet`` says where to get the released checkpoint and where to put it; ``--check`` verifies a
copy (guarded load, backbone, key list, parameter count, SHA-256). ``imagenet`` and ``raft`` fetch
the file now (e.g. on a login node with internet) and check that it loads, so that later runs can
be ``--offline``. Lookup order and downloads: :mod:`lib.hub`; manual: docs/weights.md.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

from lib.backbones import BACKBONES, find_imagenet_file, load_imagenet_weights
from lib.checkpoint import build_fsnet
from lib.fsnet import FSNet
from lib.state_dict import read_weights_file
from lib.hub import (OFFLINE_ENV, REPO_ROOT, WeightsError, WeightsNotFoundError, file_name, find_or_download, hub_checkpoints_dir, sha256_of,
                     verify_hash_in_name)
from utils.cli import BadInputError, MissingInputError, UserError, add_debug_argument, make_parser, run_guarded

RELEASE_NAME = "2021-ICCV-FSNet-20epoch-new.pth"
#: Where inference.py looks for the released model by default (relative to the working folder).
RELEASE_PATH = Path("snapshot") / "FSNet" / RELEASE_NAME
#: The authors' links (GewelsJI/FSNet README, "How to Inference?").
RELEASE_LINKS = (
    "Google Drive: https://drive.google.com/file/d/1rXSG2ruiw1pzUJN-m8BJAfEcjxheYe0D/view?usp=sharing",
    "Baidu Pan (password 36lm): https://pan.baidu.com/s/1GRUg-n1EEV_nku-2nG3QRw",
)
#: The released checkpoint's layout (docs/model.md; tests/fixtures/fsnet_resnet50_state_dict.tsv).
RELEASE_BACKBONE = "resnet50"
RELEASE_KEYS = 2160
RELEASE_PARAMETERS = 102_301_698
#: torchvision weight enums of the RAFT variants (their ``DEFAULT`` member is used).
RAFT_WEIGHT_ENUMS = {"raft_large": "Raft_Large_Weights", "raft_small": "Raft_Small_Weights"}
RAFT_MODELS = tuple(RAFT_WEIGHT_ENUMS)
NO_IMAGENET_HINT = "or pass --no_imagenet to start from random weights (demo/tests only)"


# --------------------------------------------------------------------------- library

def user_error(error: WeightsError, also: str = "") -> UserError:
    """The CLI error for a :class:`lib.hub.WeightsError` (missing -> MissingInputError, else BadInputError)."""
    kind = MissingInputError if isinstance(error, FileNotFoundError) else BadInputError
    return kind(error.what, f"{error.fix}; {also}" if also else error.fix)


@contextlib.contextmanager
def user_errors(also: str = "") -> Iterator[None]:
    """Re-raise :class:`lib.hub.WeightsError` from the block as the CLIs' one-line user errors."""
    try:
        yield
    except WeightsError as error:
        raise user_error(error, also) from None


def add_offline_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--offline``: never download weights (as ``FSNET_OFFLINE=1``)."""
    parser.add_argument("--offline", action="store_true",
                        help=f"never download weights (same as {OFFLINE_ENV}=1): a missing ImageNet "
                             "or RAFT file is an error saying what to place where")


def set_offline(offline: bool) -> None:
    """Apply ``--offline`` to this process and its workers (sets ``FSNET_OFFLINE=1``)."""
    if offline:
        os.environ[OFFLINE_ENV] = "1"


def imagenet_init(model: nn.Module, path: Optional[str] = None, offline: bool = False) -> Path:
    """:func:`lib.backbones.load_imagenet_weights` for CLIs: errors become one-line user errors."""
    with user_errors(NO_IMAGENET_HINT):
        return load_imagenet_weights(model, path, offline)


def raft_url(model: str) -> str:
    """Download address of torchvision's ``DEFAULT`` weights for RAFT variant ``model``."""
    from torchvision.models import optical_flow

    return getattr(optical_flow, RAFT_WEIGHT_ENUMS[model]).DEFAULT.url


def raft_weights_file(weights: Optional[str], model: str, offline: bool = False) -> Path:
    """The RAFT state_dict to load: ``weights`` if given, else torchvision's ``DEFAULT`` file for
    ``model`` from ``snapshot/backbone/`` or the hub cache, downloaded there on first use."""
    url = raft_url(model)
    if weights and not Path(weights).is_file():
        raise MissingInputError(
            f"RAFT weights file not found: {weights!r}",
            f"fix --raft_weights PATH (a {model} state_dict, e.g. {url}), or omit it to use "
            "torchvision's file (downloaded on first use), or use --method dis (no weights)")
    with user_errors():
        path = Path(weights) if weights else find_or_download(
            [file_name(url)], url, f"torchvision {model} weights file", flag="--raft_weights",
            offline=offline)
        verify_hash_in_name(path)
    return path


@functools.lru_cache(maxsize=2)
def load_raft(weights: Optional[str], model: str = "raft_large", device: str = "cpu",
              offline: bool = False) -> torch.nn.Module:
    """Build a torchvision RAFT with the weights of ``--raft_weights`` or torchvision's own file.

    ``weights`` (a local state_dict) is used as given. Without it torchvision's ``DEFAULT`` weights
    file is taken from ``snapshot/backbone/`` or the torch hub cache, else downloaded into the hub
    cache (hash-checked) unless ``offline`` or ``FSNET_OFFLINE=1`` (see :mod:`lib.hub`). Raises
    ``MissingInputError`` / ``BadInputError`` naming the file and how to obtain it.
    """
    from torchvision.models import optical_flow

    if model not in RAFT_MODELS:
        raise BadInputError(f"Unknown RAFT model '{model}': choose one of {RAFT_MODELS}")
    path = raft_weights_file(weights, model, offline)
    net = getattr(optical_flow, model)(weights=None)
    with user_errors():
        state = read_weights_file(path)
    try:
        net.load_state_dict(state)
    except RuntimeError as error:
        raise BadInputError(f"{path} is not a {model} state_dict: {error}") from error
    return net.eval().to(device)



@dataclass(frozen=True)
class CheckReport:
    """What ``fsnet --check`` found out about a checkpoint file."""

    path: Path
    sha256: str
    backbone: str
    keys: int
    parameters: int


def release_places() -> list[Path]:
    """Where the released model is looked for: ``snapshot/FSNet/`` of the working folder and of
    the checkout, then the torch hub cache."""
    places = [Path.cwd() / RELEASE_PATH, REPO_ROOT / RELEASE_PATH, hub_checkpoints_dir() / RELEASE_NAME]
    return list(dict.fromkeys(places))


def find_release() -> Path:
    """The released checkpoint's first place that holds it; ``MissingInputError`` saying where to
    get it and where to put it otherwise (it is shared by Google Drive / Baidu Pan only)."""
    places = release_places()
    for place in places:
        if place.is_file():
            return place
    raise MissingInputError(
        f"the released FSNet model {RELEASE_NAME} is not in {', '.join(map(str, places))}",
        f"download it from {RELEASE_LINKS[0]} (or {RELEASE_LINKS[1]}) and put it at {places[-1]} "
        f"or {REPO_ROOT / RELEASE_PATH}; python -m utils.weights fsnet --check PATH verifies it")


def load_release(path: Path) -> FSNet:
    """The released FSNet from ``path`` (eval mode, CPU): loaded strictly, then required to have
    the release's backbone, key and parameter counts and finite values; ``BadInputError`` otherwise."""
    model = _build_named(path)
    state = model.state_dict()
    layout = (model.backbone_name, len(state), sum(p.numel() for p in model.parameters()))
    if layout != (RELEASE_BACKBONE, RELEASE_KEYS, RELEASE_PARAMETERS):
        raise BadInputError(
            f"{path} is an FSNet checkpoint ({layout[0]}, {layout[1]} keys, {layout[2]:,} "
            f"parameters) but not the released model ({RELEASE_BACKBONE}, {RELEASE_KEYS} keys, "
            f"{RELEASE_PARAMETERS:,} parameters)",
            f"download {RELEASE_NAME} again (python -m utils.weights fsnet)")
    broken = [key for key, value in state.items()
              if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise BadInputError(f"{path} holds non-finite values in {len(broken)} tensors, e.g. {broken[:5]}",
                            f"download {RELEASE_NAME} again")
    return model


def _build_named(path: Path) -> FSNet:
    """:func:`lib.checkpoint.build_fsnet` (the architecture the file records, or the released one
    its keys show; loaded strictly) with the file named in every message."""
    try:
        with user_errors():
            return build_fsnet(path)
    except BadInputError as error:
        if str(path) in error.what:
            raise
        raise BadInputError(f"{path}: {error.what}", error.fix or
                            f"download {RELEASE_NAME} again (python -m utils.weights fsnet)") from None


def check_fsnet_file(path: Path) -> CheckReport:
    """Verify that ``path`` is the released FSNet checkpoint (:func:`load_release`) and report
    its SHA-256, backbone, key and parameter counts; ``BadInputError`` otherwise."""
    model = load_release(path)
    return CheckReport(Path(path), sha256_of(Path(path)), model.backbone_name, len(model.state_dict()),
                       sum(p.numel() for p in model.parameters()))


def checkpoint_file(path_or_url: str, offline: bool = False) -> Path:
    """A checkpoint as a local file: a path as given (it must exist), or a URL (``https://``,
    ``file://``) taken from the torch hub cache, else downloaded there (SHA-256 checked against a
    ``-<hex>`` prefix in its name; never when offline or with ``FSNET_OFFLINE=1``)."""
    if "://" not in path_or_url:
        path = Path(path_or_url)
        if not path.is_file():
            raise MissingInputError(f"checkpoint file not found: {path_or_url!r}",
                                    "give the path of a checkpoint written by train.py, or its URL")
        return path
    cache = hub_checkpoints_dir()
    try:
        path = find_or_download([file_name(path_or_url)], path_or_url, "FSNet checkpoint", [cache],
                                offline=offline)
        verify_hash_in_name(path)
    except WeightsNotFoundError as error:
        raise MissingInputError(error.what, f"download {path_or_url} on a machine with internet access "
                                f"and put it in {cache}, or pass the local file's path") from None
    except WeightsError as error:
        raise user_error(error) from None
    return path


# --------------------------------------------------------------------------- CLI

def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python -m utils.weights``."""
    parser = make_parser("python -m utils.weights",
                         "Get and check FSNet's weights files (see docs/weights.md).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     help="fsnet, imagenet or raft (each has its own --help)")
    fsnet = commands.add_parser("fsnet", help="where to get the released FSNet model; --check a copy")
    fsnet.add_argument("--check", nargs="?", const=str(RELEASE_PATH), default=None, metavar="PATH",
                       help=f"verify a downloaded checkpoint (default PATH: {RELEASE_PATH})")
    imagenet = commands.add_parser("imagenet", help="fetch and check the ImageNet backbone file")
    imagenet.add_argument("--backbone", choices=BACKBONES, default="res2net50", help="backbone network")
    imagenet.add_argument("--imagenet", default=None, metavar="PATH",
                          help="a local file or folder to use instead of searching/downloading")
    raft = commands.add_parser("raft", help="fetch and check torchvision's RAFT weights")
    raft.add_argument("--raft_model", choices=RAFT_MODELS, default="raft_large",
                      help="RAFT variant")
    raft.add_argument("--raft_weights", default=None, metavar="PATH",
                      help="a local state_dict to check instead of searching/downloading")
    for command in (imagenet, raft):
        add_offline_argument(command)
    for command in (fsnet, imagenet, raft):  # --debug also after the command name
        add_debug_argument(command, argparse.SUPPRESS)
    return parser


def _release_info() -> None:
    status = ("present; verify it with: python -m utils.weights fsnet --check"
              if RELEASE_PATH.is_file() else "not there yet")
    print(f"The released FSNet model (ICCV 2021, ResNet-50): {RELEASE_NAME}")
    print("It is not downloaded automatically (the authors share it by Google Drive / Baidu Pan).")
    print("Get it from:")
    for link in RELEASE_LINKS:
        print(f"  {link}")
    print(f"Put it at:  {RELEASE_PATH}  (inference.py's default --model_path; {status})")
    print("Then check it: python -m utils.weights fsnet --check [PATH]")


def _check(path: str) -> None:
    report = check_fsnet_file(Path(path))
    print(f"file:       {report.path}")
    print(f"SHA-256:    {report.sha256}")
    print(f"backbone:   {report.backbone}")
    print(f"keys:       {report.keys} (release: {RELEASE_KEYS})")
    print(f"parameters: {report.parameters:,} (release: {RELEASE_PARAMETERS:,})")
    print("OK: the released FSNet layout; loads strictly. Compare the SHA-256 with a trusted copy.")


def _imagenet(args: argparse.Namespace) -> None:
    with user_errors():  # find (or download) the file before building the model
        path = find_imagenet_file(args.backbone, args.imagenet, args.offline)
        load_imagenet_weights(FSNet(backbone=args.backbone), path)
    print(f"ImageNet weights for {args.backbone}: {path}")
    print(f"SHA-256: {sha256_of(path)}; fits all three backbone streams.")


def _raft(args: argparse.Namespace) -> None:
    path = raft_weights_file(args.raft_weights, args.raft_model, args.offline)
    load_raft(str(path), args.raft_model)
    print(f"torchvision {args.raft_model} weights: {path}")
    print(f"SHA-256: {sha256_of(path)}; loads into torchvision's {args.raft_model}.")


def _run(args: argparse.Namespace) -> None:
    if args.command == "fsnet":
        _check(args.check) if args.check else _release_info()
    elif args.command == "imagenet":
        _imagenet(args)
    else:
        _raft(args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input)."""
    args = get_args_parser().parse_args(argv)
    return run_guarded(lambda: _run(args), args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
