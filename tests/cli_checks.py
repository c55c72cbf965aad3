"""Shared assertions of the bad-input tests: the error convention and untouched inputs."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Sequence, Union

REPO = Path(__file__).resolve().parents[1]
PathLike = Union[str, os.PathLike]


def checksums(*roots: PathLike) -> Dict[str, str]:
    """SHA-256 of every file under each root (a file or a folder), keyed by path."""
    sums = {}
    for root in roots:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            sums[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return sums


def assert_user_error(code: int, stderr: str, *fragments: str) -> str:
    """Exit status 2, exactly one ``error:`` line, no traceback; each fragment in that line."""
    assert code == 2, f"exit status {code}, stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, f"expected one error line, got:\n{stderr}"
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def run_module(module: str, argv: Sequence[str], cwd: PathLike = REPO, timeout: float = 300,
               env: Dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m module argv`` (or a script path) in a subprocess, capturing its output."""
    command = [sys.executable] + (["-m", module] if not module.endswith(".py") else [module])
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(command + list(argv), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)
