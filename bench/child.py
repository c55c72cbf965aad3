"""Run one measurement in a child process of its own, so that its peak memory is its own."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_child(module: str, argv: list[str], env: dict[str, str] | None = None) -> tuple[dict, float, int]:
    """``python -m module --_child *argv`` in the repository (``env`` added to the environment):
    the JSON object on its last stdout line, its wall seconds and its peak RSS in MB
    (``os.wait4``); a failed child raises."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", module, "--_child", *argv], cwd=REPO,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise RuntimeError(f"{module} child failed (status {status}):\n{output[-2000:]}")
    result = json.loads(output.strip().splitlines()[-1])
    return result, round(time.perf_counter() - start, 1), round(usage.ru_maxrss / 1024)  # kB on Linux
