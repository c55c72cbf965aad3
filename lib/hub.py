"""Weights files on first use: a local file if there is one, else torch's downloader (unless offline).

Lookup order for a weights file (ImageNet backbones, torchvision RAFT): a path the user gave,
then ``snapshot/backbone/``, then the torch hub cache ``torch.hub.get_dir()/checkpoints`` (where
torchvision and timm keep theirs). Only when none holds the file is it downloaded, into the hub
cache, with ``torch.hub.download_url_to_file``: progress bar, SHA-256 checked against the
``-<hex>.`` prefix in the file name, nothing kept unless complete and correct.

Offline (``offline=True`` or ``FSNET_OFFLINE=1``) nothing is downloaded: a missing file is a
:class:`WeightsNotFoundError` saying what to place where. ``lib/`` imports nothing from
``utils/``, so the errors here carry ``what`` and ``fix`` and subclass ``FileNotFoundError`` /
``ValueError``; ``utils.weights.user_errors`` turns them into the CLIs' one-line errors.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import urllib.error
from pathlib import Path
from typing import Sequence

import torch

OFFLINE_ENV = "FSNET_OFFLINE"
REPO_ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT_WEIGHTS_DIR = REPO_ROOT / "snapshot" / "backbone"
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)


class WeightsError(Exception):
    """A weights file cannot be had; ``str()`` is ``"<what> — <fix>"``."""

    def __init__(self, what: str, fix: str) -> None:
        self.what, self.fix = what, fix
        super().__init__(f"{what} — {fix}")


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """No local file, and downloading is off or failed."""


class WeightsCorruptError(WeightsError, ValueError):
    """The file (local or downloaded) is damaged, mislabelled or does not fit."""


def is_offline(offline: bool = False) -> bool:
    """True when ``offline`` is set or the environment variable ``FSNET_OFFLINE`` is non-empty and not 0."""
    return offline or os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def hub_checkpoints_dir() -> Path:
    """The torch hub cache of weights files (honours ``TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def default_dirs() -> list[Path]:
    """Folders searched for weights after an explicit path: ``snapshot/backbone/``, the hub cache."""
    return [SNAPSHOT_WEIGHTS_DIR, hub_checkpoints_dir()]


def file_name(url: str) -> str:
    """The file name at the end of ``url`` (query string dropped)."""
    return url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def hash_prefix(name: str) -> str | None:
    """The SHA-256 prefix in a torch-hub style file name (``<name>-<8+ hex>.<ext>``), if any."""
    match = _HASH_IN_NAME.search(name)
    return match.group(1) if match else None


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_hash_in_name(path: Path) -> None:
    """If ``path``'s name carries a hash prefix, check that its SHA-256 starts with it."""
    prefix = hash_prefix(path.name)
    if prefix is None:
        return
    digest = sha256_of(path)
    if not digest.startswith(prefix):
        raise WeightsCorruptError(
            f"{path}: SHA-256 {digest[:len(prefix)]} does not match the prefix {prefix} in its name;"
            " the file is corrupt or mislabelled", "delete it and download it again")


def _place_hint(url: str, flag: str) -> str:
    return (f"download {url} on a machine with internet access and put it in "
            f"{SNAPSHOT_WEIGHTS_DIR} or {hub_checkpoints_dir()}, or pass {flag} PATH")


def download(url: str, what: str, searched: Sequence[Path] = (), flag: str = "the path",
             offline: bool = False, progress: bool = True) -> Path:
    """Download ``url`` into the hub cache (hash-checked) and return the file; no download offline.

    ``what`` names the file in messages (e.g. "ImageNet weights file for backbone 'resnet50'"),
    ``searched`` lists the places already looked at and ``flag`` is the option taking a local path.
    Raises :class:`WeightsNotFoundError` offline or when the network fails,
    :class:`WeightsCorruptError` on a hash mismatch (nothing is kept).
    """
    looked = f" (looked for {', '.join(str(p) for p in searched)})" if searched else ""
    if is_offline(offline):
        raise WeightsNotFoundError(
            f"no {what} found{looked} and downloads are off (--offline or {OFFLINE_ENV}=1)",
            _place_hint(url, flag))
    target = hub_checkpoints_dir() / file_name(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"Downloading {what}: {url} -> {target}", file=sys.stderr)
    try:
        torch.hub.download_url_to_file(url, str(target), hash_prefix(target.name), progress=progress)
    except RuntimeError as error:  # torch's hash check; the partial file is already removed
        raise WeightsCorruptError(
            f"the download of {url} failed its hash check ({error}); nothing was kept",
            "try again; if it fails again, " + _place_hint(url, flag)) from None
    except _NETWORK_ERRORS as error:
        raise WeightsNotFoundError(
            f"no {what} found{looked} and downloading {url} failed: {error}",
            f"check the network connection, or {_place_hint(url, flag)}") from None
    return target


def find_or_download(names: Sequence[str], url: str, what: str, dirs: Sequence[Path] | None = None,
                     flag: str = "the path", offline: bool = False) -> Path:
    """The first ``dir/name`` that exists (``dirs`` default: :func:`default_dirs`), else :func:`download`."""
    candidates = [Path(folder) / name for folder in (default_dirs() if dirs is None else dirs)
                  for name in names]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return download(url, what, candidates, flag, offline)
