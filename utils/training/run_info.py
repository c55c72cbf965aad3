"""``run.json``: what produced a checkpoint (arguments, package versions, git commit, world size)."""
from __future__ import annotations

import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "torchvision", "numpy", "pillow", "tqdm", "tensorboardX")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit(repo: Path) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the repository at ``repo``."""
    def git(*argv: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(repo), *argv], capture_output=True, text=True,
                                  timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def collect_run_info(args: dict[str, Any], world_size: int, device: str) -> dict[str, Any]:
    """The ``run.json`` record of one invocation of train.py."""
    import torch

    return {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "args": args,
        "world_size": world_size,
        "device": device,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "git": git_commit(Path(__file__).resolve().parent.parent),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
    }
