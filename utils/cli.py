"""The command-line convention shared by every tool (torch-free, so ``eval/`` may import it).

Every tool is ``get_args_parser()`` + ``main(argv=None) -> int``. ``main`` parses its arguments
with a parser from :func:`make_parser` and runs its work inside :func:`run_guarded`, which turns
expected user errors into one line on stderr::

    error: <what happened> — <how to fix it>

and exit status 2, with no traceback (unless ``--debug`` or ``FSNET_DEBUG=1``). Expected errors
are :class:`UserError` (and its subclasses in ``eval/``), a full disk, a read-only file system, a
permission problem and Ctrl-C. Anything else is a bug and keeps its traceback. A mistake on the
command line itself (unknown option, invalid choice or number) is the same kind of line, from
:class:`ArgumentParser`, with the usage text under ``--help`` only.

Flags mean the same in every tool: ``--device`` (``auto`` by default), ``--workers``, ``--amp``
(bare: bf16), ``--offline``, ``--flow_method``/``--raft_model``/``--raft_weights``,
``--skip_existing``, ``--overwrite``, ``--no_progress``, ``--debug``; ``--data_root`` is the folder
holding ``TrainSet_*/`` and ``TestSet/``; list options take values separated by spaces or commas.
Older spellings stay accepted (:meth:`ArgumentParser.accept_old_spellings`).
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import os
import re
import signal
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, NoReturn, Optional, Sequence

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


@contextlib.contextmanager
def children_ignore_interrupts() -> Iterator[None]:
    """Start worker processes inside this block: they inherit an ignored Ctrl-C from their first
    instruction (also spawned ones, which would otherwise get it while still importing torch)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


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


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that keeps the description's line breaks, shows each default once (none for flags,
    required options or ``None``, and none where the help text already speaks of its default) and
    lists an option under its current spellings only (older ones go to the epilog)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.required or not action.option_strings or action.default in (None, False)
                or action.default is argparse.SUPPRESS or re.search(r"\bdefault\b", text, re.I)):
            return text
        if isinstance(action.default, (list, tuple)):  # as typed on the command line
            return text + f" (default: {' '.join(map(str, action.default))})".replace("%", "%%")
        return text + " (default: %(default)s)"

    def _format_action_invocation(self, action: argparse.Action) -> str:
        old = getattr(action, "old_spellings", ())
        if not old:
            return super()._format_action_invocation(action)
        current = [name for name in action.option_strings if name not in old]
        shown = argparse.Action(current, action.dest, nargs=action.nargs, metavar=action.metavar)
        return super()._format_action_invocation(shown)


class ArgumentParser(argparse.ArgumentParser):
    """The parser of every tool: :class:`HelpFormatter`, older flag spellings kept as hidden
    aliases, and argparse's own errors (unknown option, invalid choice or number, missing value)
    as one ``error: <what> — <fix>`` line with exit status 2; the usage text only under ``--help``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def accept_old_spellings(self, spellings: Mapping[str, str]) -> None:
        """Accept each ``old`` flag of ``{old: current}`` as the ``current`` one (published commands
        keep working); ``--help`` lists the options under their current names and the old
        spellings once, in its last lines."""
        for old, current in spellings.items():
            action = self._option_string_actions[current]
            action.option_strings.append(old)
            action.old_spellings = (*getattr(action, "old_spellings", ()), old)
            self._option_string_actions[old] = action
        listed = ", ".join(f"{old} (= {current})" for old, current in spellings.items())
        self.epilog = "\n".join(filter(None, [self.epilog, f"Older spellings, still accepted: {listed}."]))

    def error(self, message: str) -> NoReturn:
        """Print one ``error: <what> — <fix>`` line and exit with status 2."""
        what, fix = usage_error(self, message)
        self.exit(EXIT_USER_ERROR, f"error: {' '.join(what.split())} — {fix}\n")


def _names(text: str) -> str:
    """argparse's quoted listing (``'a', 'b'``) as ``a, b``."""
    return ", ".join(part.strip().strip("'\"") for part in text.split(","))


def usage_error(parser: argparse.ArgumentParser, message: str) -> tuple[str, str]:
    """``(what, fix)`` for one of argparse's own error messages about ``parser``'s command line."""
    more = f"{parser.prog} --help lists the options"
    patterns: list[tuple[str, Callable[[re.Match], str]]] = [
        (r"argument (?P<arg>[^:]+): invalid choice: (?P<value>.+?) \(choose from (?P<choices>.+)\)$",
         lambda m: f"choose one of {_names(m['choices'])}"),
        (r"argument (?P<arg>[^:]+): invalid int value: ", lambda m: f"give {m['arg']} a whole number"),
        (r"argument (?P<arg>[^:]+): invalid float value: ", lambda m: f"give {m['arg']} a number"),
        (r"argument (?P<arg>[^:]+): expected .*argument", lambda m: f"give {m['arg']} a value ({more})"),
        (r"argument (?P<arg>[^:]+): not allowed with argument (?P<other>.+)$",
         lambda m: f"use only one of {m['arg']} and {m['other']}"),
        (r"ambiguous option: (?P<opt>\S+) could match (?P<matches>.+)$",
         lambda m: f"spell the option out: one of {m['matches']}"),
        (r"the following arguments are required: (?P<args>.+)$", lambda m: _required(parser, m["args"], more)),
        (r"unrecognized arguments: (?P<args>.+)$", lambda m: _did_you_mean(parser, m["args"], more)),
    ]
    for pattern, fix in patterns:
        match = re.match(pattern, message)
        if match:
            return message.split(" (choose from ")[0], fix(match)
    if " — " in message:  # a type function's own "what — fix"
        what, _, fix = message.partition(" — ")
        return what, fix
    return message, more


def _required(parser: argparse.ArgumentParser, missing: str, more: str) -> str:
    """The fix for missing arguments; a missing sub-command lists the commands."""
    names = {name.strip() for name in missing.split(",")}
    for action in parser._actions:
        if action.choices and names & {action.metavar, action.dest, *action.option_strings}:
            which = f"{action.option_strings[0]} with one of" if action.option_strings else "one of"
            return f"add {which} {', '.join(action.choices)} ({more})"
    return f"add {missing} ({more})"


def _did_you_mean(parser: argparse.ArgumentParser, unknown: str, more: str) -> str:
    """Close option names for the first unknown option, if any."""
    options = [name for name, action in parser._option_string_actions.items()
               if name not in getattr(action, "old_spellings", ())]
    first = unknown.split()[0]
    close = difflib.get_close_matches(first.split("=")[0], options, n=3, cutoff=0.6)
    return f"did you mean {' or '.join(close)}? ({more})" if close else f"remove it ({more})"


class ListAction(argparse.Action):
    """A list option: values separated by spaces (``--seqs a b``) or commas (``--seqs a,b``)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("nargs", "+")
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: Optional[str] = None) -> None:
        setattr(namespace, self.dest, [item for value in values for item in value.split(",") if item])


def add_device_argument(container: Any, default: str = "auto", what: str = "") -> None:
    """Add ``--device``: ``auto`` (CUDA if available), ``cpu``, ``cuda`` or ``cuda:N``."""
    container.add_argument("--device", default=default,
                           help=f"{what + ': ' if what else ''}auto (CUDA if available), cpu, cuda or cuda:N")


def make_parser(prog: str, description: str) -> ArgumentParser:
    """An :class:`ArgumentParser` named as the tool is called (e.g. ``python -m utils.flow``),
    with the shared ``--debug`` flag."""
    parser = ArgumentParser(prog=prog, description=description)
    add_debug_argument(parser)
    return parser


def add_debug_argument(parser: argparse.ArgumentParser, default: Any = False) -> None:
    """Add ``--debug`` (a sub-command's passes ``argparse.SUPPRESS``, keeping the main one's value)."""
    parser.add_argument("--debug", action="store_true", default=default,
                        help=f"show the full traceback of errors (or set {DEBUG_ENV}=1)")


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
