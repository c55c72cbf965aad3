"""Small helpers shared by the DAVIS-2016 (eval/davis) and V-SOD (eval/sod) evaluators.

Like the rest of eval/, this imports nothing from lib/ and only torch-free modules of utils/.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Mapping, Optional, Sequence, Union

from utils.data.images import listing
from utils.io import write_text
from utils.safety import PathSpec, check_file_writable, check_outputs_apart

PathLike = Union[str, Path]

MAX_LISTED = 10  # entries named in an error or warning before "... and N more"


def format_listing(items: Sequence[object]) -> str:
    """The first MAX_LISTED ``items`` one per indented line (each line starts with a newline),
    then how many more there are; appended to error and warning messages that name files."""
    return listing(items, MAX_LISTED)


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """CSV text with ``\\n`` line ends: strings as they are, None as an empty cell, numbers
    with ``repr`` (full precision)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if cell is None else cell if isinstance(cell, str) else repr(cell)
                         for cell in row])
    return buffer.getvalue()


def check_report_files(inputs: Mapping[str, PathSpec], reports: Mapping[str, Optional[PathLike]],
                       folders: Mapping[str, Optional[PathLike]] = MappingProxyType({})) -> None:
    """Before any work: every report file (flag -> path; None = not asked for) and report
    ``folders`` lie apart from every input and from each other (resolved paths, see
    :func:`utils.safety.check_outputs_apart`), and each report file can be written."""
    check_outputs_apart(inputs, {**reports, **folders})
    for what, path in reports.items():
        if path is not None:
            check_file_writable(path, f"{what} report")


def write_report(path: PathLike, text: str) -> None:
    """Write a report atomically; an OS error (disk full, read-only ...) names ``path``, so the
    one-line error of ``utils.cli.run_guarded`` says which file could not be written."""
    try:
        write_text(path, text)
    except OSError as error:
        if not error.filename:
            error.filename = str(path)
        raise
