"""Which process wrote a file (torch-free): a job is its host, PID and process start time, so
that a PID the system has since given to another process is not mistaken for the job.

The start time is field 22 of ``/proc/<pid>/stat`` (clock ticks since boot) together with the
boot id, on Linux; elsewhere it is unknown (empty) and a live PID counts as the job.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

LIVE, DEAD, UNKNOWN = "live", "dead", "unknown"
_TAG = re.compile(r"^j([0-9a-f]{8})-(\d+)-([0-9a-z]*)$")


def host_key(host: str) -> str:
    """8 hex digits naming a host in file names (host names may hold dots and be long)."""
    return hashlib.sha1(host.encode()).hexdigest()[:8]


def process_start(pid: int) -> str:
    """The process's start time as ``<ticks>b<boot id prefix>`` ('' where it cannot be read)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = stat[stat.rindex(")") + 2:].split()[19]  # field 22; the name may hold spaces
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:8]
    except (OSError, ValueError, IndexError):
        return ""
    return f"{ticks}b{boot}"


@dataclass(frozen=True)
class Job:
    """A process that writes outputs: its host (name and key), PID and start time."""

    host: str
    pid: int
    start: str

    @property
    def tag(self) -> str:
        """The job in file names: ``j<host key>-<pid>-<start>`` (ASCII, at most ~40 bytes)."""
        return f"j{host_key(self.host)}-{self.pid}-{self.start}"

    def state(self) -> str:
        """``live``, ``dead`` (no such process here, or its PID now belongs to a process started
        at another time) or ``unknown`` (it ran on another host)."""
        if self.host != socket.gethostname():
            return UNKNOWN
        if not _pid_alive(self.pid):
            return DEAD
        now = process_start(self.pid)
        return DEAD if self.start and now and now != self.start else LIVE


@functools.lru_cache(maxsize=1)
def _this_process(pid: int) -> Job:
    return Job(socket.gethostname(), pid, process_start(pid))


def current_job() -> Job:
    """This process (recomputed in a forked child, whose PID differs)."""
    return _this_process(os.getpid())


def job_from_tag(tag: str) -> Optional[Job]:
    """The job a file-name tag names (its host known by key only), or None if it is no tag."""
    match = _TAG.match(tag)
    if match is None:
        return None
    key, pid, start = match.groups()
    here = socket.gethostname()
    return Job(here if key == host_key(here) else f"host {key}", int(pid), start)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True
