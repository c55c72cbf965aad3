"""Guards that keep a user's data safe (torch-free), all applied before any work starts: every
read and write path of a run compared after full resolution (outputs never touch inputs or each
other), one live job per output folder (locks naming the job: host, PID, process start time; only
a dead job's temporaries are removed), records of what made a folder's outputs, and outputs
checked writable.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import FrozenSet, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from utils.cli import UserError, os_error_message
from utils.io import read_json_object, save_json, temporary_job
from utils.job import DEAD, LIVE, Job, current_job

PathLike = Union[str, os.PathLike]
LOCK_NAME = ".fsnet.lock"
SOURCE_RECORD = ".fsnet-source.json"  # what made the outputs of a folder
FRESH_LOCK_S = 10.0  # a lock this young with no readable owner may be one being written
PathSpec = Union[PathLike, Iterable[PathLike], None]  # one path, several, or None (not used)
SHOWN_CONFLICTS = 10


def real_path(path: PathLike) -> Path:
    """Absolute path with ``~``, ``..`` and symlinks resolved (the path need not exist)."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


@dataclass(frozen=True)
class _Place:
    """A path as given and where it really is: its real path, and the (device, inode) of the
    real path and of each existing parent, so that hard links and bind mounts compare equal."""

    name: str
    given: str
    real: Path
    node: Optional[Tuple[int, int]]
    parents: FrozenSet[Tuple[int, int]]

    def same(self, other: "_Place") -> bool:
        return self.real == other.real or (self.node is not None and self.node == other.node)

    def inside(self, other: "_Place") -> bool:
        """True if this path lies strictly inside ``other``."""
        return other.real in self.real.parents or (other.node is not None
                                                   and other.node in self.parents)


def _node(path: Path) -> Optional[Tuple[int, int]]:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _place(name: str, path: PathLike) -> _Place:
    real = real_path(path)
    parents = frozenset(filter(None, (_node(parent) for parent in real.parents)))
    return _Place(name, os.fspath(path), real, _node(real), parents)


def _places(paths: Mapping[str, PathSpec]) -> List[_Place]:
    places = []
    for name, spec in paths.items():
        if spec is None:
            continue
        many = not isinstance(spec, (str, bytes, os.PathLike))
        places += [_place(name, path) for path in (spec if many else [spec]) if path is not None]
    return places


def path_conflicts(inputs: Mapping[str, PathSpec], outputs: Mapping[str, PathSpec]) -> List[str]:
    """Every way an output would touch an input or another output, as readable lines.

    ``inputs`` / ``outputs`` map a description (e.g. ``"--frames"``) to a path, a list of paths
    or ``None``. Paths are compared after full resolution (``~``, ``..``, symlinks, relative vs
    absolute) and by (device, inode), which also catches hard links and bind mounts. An output
    conflicts with an input it equals, lies inside or contains; two outputs conflict when they
    are the same file.
    """
    reads, writes = _places(inputs), _places(outputs)
    problems = []
    for out in writes:
        for read in reads:
            relation = ("the same file" if out.same(read) else "lies inside it"
                        if out.inside(read) else "contains it" if read.inside(out) else None)
            if relation:
                problems.append(f"{out.name} {out.given} overlaps {read.name} {read.given} "
                                f"({relation})")
    for index, first in enumerate(writes):
        problems += [f"{first.name} {first.given} and {second.name} {second.given} both name one "
                     "file" for second in writes[index + 1:] if first.same(second)]
    return list(dict.fromkeys(problems))


def check_outputs_apart(inputs: Mapping[str, PathSpec], outputs: Mapping[str, PathSpec]) -> None:
    """Refuse any output that is, contains or lies inside an input, and any two outputs that are
    one file (see :func:`path_conflicts`); all conflicts are reported in one error."""
    problems = path_conflicts(inputs, outputs)
    if problems:
        shown = "; ".join(problems[:SHOWN_CONFLICTS])
        more = f"; ... and {len(problems) - SHOWN_CONFLICTS} more" if len(problems) > SHOWN_CONFLICTS else ""
        raise UserError(f"refusing to write where the inputs are read or another output is "
                        f"written ({len(problems)} conflict(s)): {shown}{more}",
                        "choose output paths outside every input file and folder, one per output")


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
    """Delete the temporary files that a job which is no longer running left in ``folder``
    itself (not in its sub-folders): only files named by :func:`utils.io.atomic_path` whose job
    (host, PID, start time) is dead on this host. Returns how many were removed."""
    removed = 0
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for path in Path(folder).iterdir():
            job = temporary_job(path)
            if job is not None and job.state() == DEAD and path.is_file():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
    return removed


def _read_lock(path: Path) -> dict:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _lock_job(info: dict) -> Optional[Job]:
    pid, host = info.get("pid"), info.get("host")
    if not isinstance(pid, int) or not isinstance(host, str):
        return None
    start = info.get("process_start")
    return Job(host, pid, start if isinstance(start, str) else "")


def _just_made(lock: Path) -> bool:
    """A lock with no readable owner that is seconds old may be one another job is writing."""
    with contextlib.suppress(OSError):
        return time.time() - lock.stat().st_mtime < FRESH_LOCK_S
    return False


def _owner(info: dict) -> str:
    return (f"process {info.get('pid', '?')} on {info.get('host', '?')} "
            f"(started {info.get('started', '?')}: {info.get('command', '?')})")


def _refuse_lock(lock: Path, info: dict, state: str) -> UserError:
    folder = lock.parent
    if state == LIVE:
        unsure = "" if info.get("process_start") else (  # a lock that cannot tell a reused PID
            f" (if process {info.get('pid', '?')} is not that job, delete {lock})")
        return UserError(f"{folder} is in use by {_owner(info)}",
                         f"wait for that job to finish, or choose another output folder{unsure}")
    return UserError(f"{folder} is locked by {_owner(info)}, which this machine cannot check",
                     f"if that job no longer runs, delete {lock}; else choose another output "
                     "folder")


@contextlib.contextmanager
def output_lock(folder: PathLike, tool: str) -> Iterator[Path]:
    """Hold an exclusive lock on an output folder for the life of a job.

    The lock file ``<folder>/.fsnet.lock`` records the job (host, PID, process start time, see
    utils.job) and its command. The lock of a job that no longer runs on this host (its PID is
    gone or now belongs to a later process) is taken over with a warning; a live one, or one
    from another host, stops this job with an error naming it. The dead jobs' temporary files
    in ``folder`` itself are removed once the lock is held.
    """
    folder = check_writable(folder)
    lock = folder / LOCK_NAME
    job = current_job()
    info = {"host": job.host, "pid": job.pid, "process_start": job.start, "tool": tool,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
    payload = json.dumps(info).encode()
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = _read_lock(lock)
            holder = _lock_job(other)
            state = holder.state() if holder is not None else LIVE if _just_made(lock) else DEAD
            if state != DEAD:
                raise _refuse_lock(lock, other, state) from None
            print(f"warning: taking over the stale lock {lock} of {_owner(other)}",
                  file=sys.stderr)
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            continue
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        break
    else:
        raise UserError(f"could not take the lock {lock}", "run the command again")
    try:
        remove_stale_temporaries(folder)
        yield lock
    finally:
        if _lock_job(_read_lock(lock)) == job:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()


def recorded_source(folder: PathLike) -> Optional[dict]:
    """The record of the job whose outputs ``folder`` holds (``None`` without a readable one)."""
    return read_json_object(Path(folder) / SOURCE_RECORD)


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
