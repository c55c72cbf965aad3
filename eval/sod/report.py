"""Table, CSV and JSON output of dataset results (files are written atomically)."""
from __future__ import annotations

import json
from pathlib import Path

from eval.common import csv_text, write_report
from eval.sod.aggregate import DatasetScores

# Paper order first (FSNet Table: S, max-E, max-F, MAE), then the other main_VSOD.m numbers.
COLUMNS = ("S", "maxE", "maxF", "MAE", "meanE", "adpE", "meanF", "adpF", "wF", "n_sequences", "n_frames")


def schema(results: dict[str, DatasetScores]) -> dict:
    """The --json document: {"datasets": {name: {S, maxE, ..., n_sequences, n_frames}}}."""
    return {"datasets": {name: scores.summary() for name, scores in results.items()}}


def format_table(results: dict[str, DatasetScores], digits: int = 3) -> str:
    """Plain-text table, one row per dataset, COLUMNS order, ``digits`` decimals (MATLAB prints 3)."""
    header = ("Dataset",) + COLUMNS
    rows = []
    for name, scores in results.items():
        summary = scores.summary()
        cells = [name]
        for key in COLUMNS:
            value = summary[key]
            cells.append("nan" if value is None else str(value) if isinstance(value, int) else f"{value:.{digits}f}")
        rows.append(cells)
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [header] + rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def write_json(results: dict[str, DatasetScores], path: Path) -> None:
    """Write the schema document as indented JSON."""
    write_report(path, json.dumps(schema(results), indent=2) + "\n")


def write_csv(results: dict[str, DatasetScores], path: Path) -> None:
    """One row per dataset: ``dataset`` then COLUMNS at full precision (empty cell for NaN)."""
    summaries = {name: scores.summary() for name, scores in results.items()}
    rows = ([name] + [summary[k] for k in COLUMNS] for name, summary in summaries.items())
    write_report(path, csv_text(("dataset",) + COLUMNS, rows))
