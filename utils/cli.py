"""The command-line convention shared by every tool (torch-free, so ``eval/`` may import it).

Every tool is ``get_args_parser()`` + ``main(argv=None) -> int``. ``main`` parses its arguments
with a parser from :func:`make_parser` and runs its work inside :func:`run_guarded`, which turns
expected user errors into one line on stderr::

    error: <what happened> — <how to fix it>

and exit status 2, with no traceback (unless ``--debug`` or ``FSNET_DEBUG=1``). Expected errors
are :class:`UserError` (and its subclasses in ``eval/``), a full disk, a read-only file system, a
permission problem and Ctrl-C. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import time
from typing import Any, Callable, Iterable, Optional

from tqdm import tqdm

EXIT_USER_ERROR = 2
DEBUG_ENV = "FSNET_DEBUG"
PROGRESS_INTERVAL_S = 30.0


class UserError(Exception):
    """An expected error caused by the user's input; ``str()`` is ``"<what> — <fix>"``."""

    def __init__(self, what: str, fix: str = "") -> None:
        self.what, self.fix = what, fix
        super().__init__(f"{what} — {fix}" if fix else what)


class BadInputError(UserError, ValueError):
    """A user-supplied value or file is unusable (a ``ValueError`` for library callers)."""


class MissingInputError(UserError, FileNotFoundError):
    """A user-supplied file or folder does not exist (a ``FileNotFoundError`` for library callers)."""


class OutputExistsError(UserError, FileExistsError):
    """An output would replace a file or folder that holds something else (also a
    ``FileExistsError`` for library callers)."""


def check_all(checks: Iterable[Callable[[], Any]], what: str = "problems") -> None:
    """Run every check; raise nothing, the one :class:`UserError` raised, or one error listing
    all of them (so a run reports all its problems at once): of their common class when they
    share one (e.g. :class:`MissingInputError`), else a :class:`BadInputError`."""
    errors = []
    for check in checks:
        try:
            check()
        except UserError as error:
            errors.append(error)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        kind = type(errors[0]) if len({type(error) for error in errors}) == 1 else BadInputError
        raise kind(f"{len(errors)} {what}: " + " | ".join(map(str, errors)))


def os_error_message(error: OSError) -> Optional[str]:
    """One-line ``what — fix`` text for the OS errors a user can cause (``None`` for the others)."""
    where = error.filename or "a file"
    if error.errno == errno.ENOSPC:
        return f"no space left on device while writing {where} — free disk space or choose " \
               f"another output folder, then re-run (finished outputs are kept)"
    if error.errno == errno.EROFS:
        return f"read-only file system: cannot write {where} — choose an output folder on a " \
               f"writable disk"
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: {where} — fix the permissions or choose another path"
    if error.errno == errno.ENOTDIR:
        return f"not a folder: a part of {where} is a file — choose another path"
    if error.errno == errno.ENAMETOOLONG:
        return f"file name too long: {where} — use names of at most 255 bytes (shorter input " \
               f"file names or output paths)"
    if error.errno == errno.EDQUOT:
        return f"disk quota exceeded while writing {where} — free space or choose another folder"
    return None


def _debug_requested(debug: bool) -> bool:
    return debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def report_error(message: str) -> int:
    """Print ``error: message`` as one line on stderr and return the user-error exit status."""
    print("error: " + " ".join(message.split()), file=sys.stderr)
    return EXIT_USER_ERROR


INTERRUPTED = "interrupted by Ctrl-C"


def install_interrupt_hook() -> None:
    """Make a Ctrl-C that arrives before :func:`run_guarded` runs (while a tool imports torch)
    one ``error:`` line instead of a traceback; other uncaught exceptions are untouched."""
    def hook(kind: type, value: BaseException, trace: Any) -> None:
        if issubclass(kind, KeyboardInterrupt) and not _debug_requested(False):
            report_error(f"{INTERRUPTED} while starting — run the same command again")
        else:
            sys.__excepthook__(kind, value, trace)
    sys.excepthook = hook


def ignore_interrupts() -> None:
    """Initializer of worker processes: they leave Ctrl-C to the main process, which reports it
    in one line (instead of one traceback per worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_guarded(work: Callable[[], Any], debug: bool = False) -> int:
    """Run ``work()``; return 0, or 2 after one ``error:`` line for an expected error.

    ``work`` may return an int exit status (returned as is); any other result means success.
    """
    try:
        result = work()
    except KeyboardInterrupt:
        if _debug_requested(debug):
            raise
        return report_error(f"{INTERRUPTED} — run the same command again (finished outputs "
                            "are kept; inference.py and utils.flow skip them with --skip_existing, "
                            "train.py continues with --resume auto)")
    except UserError as error:
        if _debug_requested(debug):
            raise
        return report_error(str(error))
    except OSError as error:
        message = os_error_message(error)
        if message is None or _debug_requested(debug):
            raise
        return report_error(message)
    return result if isinstance(result, int) else 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the description's line breaks."""


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser named as the tool is called (e.g. ``python -m utils.flow``), showing
    defaults, with the shared ``--debug`` flag."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of errors (or set {DEBUG_ENV}=1)")
    return parser


class _LogLines:
    """File wrapper for tqdm when stderr is not a terminal: plain lines, at most one every 30 s
    per process counting all bars together (forced refreshes such as ``set_postfix`` and each
    bar's final state included; a state held back is dropped when a newer one comes)."""

    last_line_at = -float("inf")  # monotonic time of this process's last progress line

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line and time.monotonic() - _LogLines.last_line_at >= PROGRESS_INTERVAL_S:
            sys.stderr.write(line + "\n")
            _LogLines.last_line_at = time.monotonic()

    def flush(self) -> None:
        sys.stderr.flush()


def progress(iterable: Optional[Iterable] = None, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr; when stderr is not a terminal (CI, nohup, cluster logs) it prints
    plain lines instead of carriage-return updates, at most one every 30 s per process."""
    if sys.stderr.isatty():
        return tqdm(iterable, disable=not enabled, dynamic_ncols=True, **kwargs)
    kwargs.setdefault("mininterval", 1.0)  # keeps the count fresh; _LogLines limits the lines
    return tqdm(iterable, disable=not enabled, file=_LogLines(), ascii=True, **kwargs)
