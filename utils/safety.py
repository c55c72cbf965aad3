"""Guards that keep a user's data safe (torch-free): outputs never touch inputs, one live job per
output folder, and outputs are checked writable before any work starts.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Mapping, Optional, Union

from utils.cli import UserError, os_error_message
from utils.io import save_json

PathLike = Union[str, os.PathLike]
LOCK_NAME = ".fsnet.lock"
SOURCE_RECORD = ".fsnet-source.json"  # what made the outputs of a folder
TEMP_PATTERN = ".*.tmp"  # what utils.io.atomic_path leaves behind when a process is killed


def real_path(path: PathLike) -> Path:
    """Absolute path with symlinks followed (the path need not exist)."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _related(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_outputs_apart(inputs: Mapping[str, Optional[PathLike]],
                        outputs: Mapping[str, Optional[PathLike]]) -> None:
    """Refuse any output that is, contains or lies inside an input (real paths compared).

    ``inputs`` and ``outputs`` map a description (e.g. ``"--frames"``) to a path; ``None``
    entries are ignored. All conflicts are reported in one error.
    """
    problems = []
    for out_name, out_path in outputs.items():
        if out_path is None:
            continue
        out_real = real_path(out_path)
        for in_name, in_path in inputs.items():
            if in_path is not None and _related(out_real, real_path(in_path)):
                problems.append(f"{out_name} {out_path} overlaps {in_name} {in_path}")
    if problems:
        raise UserError("refusing to write where the inputs are read: " + "; ".join(problems),
                        "choose an output path outside every input file and folder")


def check_writable(folder: PathLike, what: str = "output folder") -> Path:
    """Create ``folder`` (with parents) and prove it writable with a temporary file."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test.", suffix=".tmp"):
            pass
    except FileExistsError as error:
        raise UserError(f"{what} {folder} exists and is not a folder",
                        "choose a folder path") from error
    except OSError as error:
        error.filename = error.filename or str(folder)
        message = os_error_message(error)
        if message is None:
            raise
        raise UserError(f"{what} {folder} is not writable: {message}") from error
    return folder


def check_file_writable(path: PathLike, what: str = "output file") -> Path:
    """Check that ``path`` can be written: its folder is writable and it is not a folder."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder", "give a file name")
    check_writable(path.parent if str(path.parent) else Path("."), f"folder of the {what}")
    return path


def remove_stale_temporaries(folder: PathLike) -> int:
    """Delete the temporary files a killed atomic write left in ``folder`` (recursively)."""
    removed = 0
    for path in Path(folder).rglob(TEMP_PATTERN):
        if path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_lock(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _owner(info: dict) -> str:
    return (f"process {info.get('pid', '?')} on {info.get('host', '?')} "
            f"(started {info.get('started', '?')}: {info.get('command', '?')})")


@contextlib.contextmanager
def output_lock(folder: PathLike, tool: str) -> Iterator[Path]:
    """Hold an exclusive lock on an output folder for the life of a job.

    The lock file ``<folder>/.fsnet.lock`` records host, PID, start time and command. A lock
    whose process is gone (same host) is taken over with a warning; a live one stops this job
    with an error naming the other process. Leftover temporary files of killed writes are
    removed once the lock is held.
    """
    folder = check_writable(folder)
    lock = folder / LOCK_NAME
    info = {"host": socket.gethostname(), "pid": os.getpid(), "tool": tool,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
    payload = json.dumps(info).encode()
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = _read_lock(lock)
            pid = other.get("pid")
            same_host = other.get("host") == info["host"]
            if isinstance(pid, int) and (not same_host or _process_alive(pid)):
                raise UserError(f"{folder} is in use by {_owner(other)}",
                                "wait for that job to finish, or choose another output folder "
                                f"(if it is dead on another machine, delete {lock})")
            print(f"warning: taking over the stale lock {lock} of {_owner(other)}",
                  file=sys.stderr)
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            continue
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        break
    else:
        raise UserError(f"could not take the lock {lock}", "retry, or delete the lock file")
    try:
        remove_stale_temporaries(folder)
        yield lock
    finally:
        if _read_lock(lock).get("pid") == info["pid"]:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()


def recorded_source(folder: PathLike) -> Optional[dict]:
    """The record of the job whose outputs ``folder`` holds (``None`` without a readable one)."""
    try:
        record = json.loads((Path(folder) / SOURCE_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def source_differences(folder: PathLike, record: dict) -> list[str]:
    """The keys in which ``folder``'s recorded source differs from ``record`` (none when it has
    no record or the same one)."""
    previous = recorded_source(folder)
    if previous is None or previous == record:
        return []
    return sorted(k for k in set(record) | set(previous) if record.get(k) != previous.get(k))


def record_source(folder: PathLike, record: dict) -> None:
    """Write ``folder``'s source record (atomically)."""
    save_json(record, Path(folder) / SOURCE_RECORD)
