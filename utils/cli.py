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
import sys
import time
from typing import Any, Callable, Iterable, Optional, TextIO

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


def run_guarded(work: Callable[[], Any], debug: bool = False) -> int:
    """Run ``work()``; return 0, or 2 after one ``error:`` line for an expected error.

    ``work`` may return an int exit status (returned as is); any other result means success.
    """
    try:
        result = work()
    except KeyboardInterrupt:
        if _debug_requested(debug):
            raise
        return report_error("interrupted by Ctrl-C — run the same command again to continue "
                            "(finished outputs are kept; train.py continues with --resume)")
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
    """File wrapper for tqdm when stderr is not a terminal: one plain line at most every 30 s
    (forced refreshes such as ``set_postfix`` included); the last state is kept for ``close``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.pending, self.last = stream, "", -float("inf")

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if not line:
            return
        if time.monotonic() - self.last >= PROGRESS_INTERVAL_S:
            self.stream.write(line + "\n")
            self.pending, self.last = "", time.monotonic()
        else:
            self.pending = line

    def flush(self) -> None:
        self.stream.flush()

    def write_pending(self) -> None:
        """Print the last state held back by the rate limit (the bar's final line)."""
        if self.pending:
            self.stream.write(self.pending + "\n")
            self.pending = ""


class _LogTqdm(tqdm):
    """tqdm whose final state reaches the log when the bar closes."""

    log_lines: Optional[_LogLines] = None

    def close(self) -> None:
        super().close()
        if self.log_lines is not None:
            self.log_lines.write_pending()


def progress(iterable: Optional[Iterable] = None, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr; when stderr is not a terminal (CI, nohup, cluster logs) it prints one
    plain line at most every 30 s instead of carriage-return updates."""
    if sys.stderr.isatty():
        return tqdm(iterable, disable=not enabled, dynamic_ncols=True, **kwargs)
    log_lines = _LogLines(sys.stderr)
    kwargs.setdefault("mininterval", 1.0)  # keeps the count fresh; _LogLines limits the lines
    bar = _LogTqdm(iterable, disable=not enabled, file=log_lines, ascii=True, **kwargs)
    bar.log_lines = log_lines
    return bar
