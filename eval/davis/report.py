"""Text tables, CSV and JSON output of a DAVIS-2016 evaluation report."""
from __future__ import annotations

import json

from eval.common import csv_text

SUMMARY_COLUMNS = (("J", "mean"), ("J", "recall"), ("J", "decay"),
                   ("F", "mean"), ("F", "recall"), ("F", "decay"), ("T", "mean"))


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def _columns(report: dict) -> list[tuple[str, str]]:
    return [(m, s) for m, s in SUMMARY_COLUMNS if m in report["overall"]]


def summary_table(report: dict) -> str:
    """The summary table of docs/evaluation-davis16.md §9: mean-J recall-J decay-J mean-F recall-F decay-F T."""
    cols = _columns(report)
    head = " | ".join(f"{s}-{m}" if m != "T" else "T" for m, s in cols)
    values = " | ".join(_fmt(report["overall"][m][s]).rjust(len(f"{s}-{m}") if m != "T" else 5)
                        for m, s in cols)
    rule = " | ".join("---" for _ in cols)
    return f"| {head} |\n| {rule} |\n| {values} |"


def sequence_tables(report: dict) -> str:
    """One row per sequence with the same columns (T '-' when not evaluated)."""
    cols = _columns(report)
    width = max([len("sequence")] + [len(name) for name in report["sequences"]])
    head = f"| {'sequence'.ljust(width)} | frames | " + " | ".join(
        f"{s}-{m}" if m != "T" else "T" for m, s in cols) + " |"
    rule = "| " + " | ".join("---" for _ in range(len(cols) + 2)) + " |"
    lines = [head, rule]
    for name, entry in report["sequences"].items():
        cells = [_fmt(entry[m][s]) for m, s in cols]
        lines.append(f"| {name.ljust(width)} | {entry['n_frames']:6d} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_csv(report: dict) -> str:
    """Per-sequence CSV: sequence, n_frames, then one column per statistic."""
    cols = _columns(report)
    return csv_text(["sequence", "n_frames"] + [f"{m}_{s}" for m, s in cols],
                    ([name, entry["n_frames"]] + [entry[m][s] for m, s in cols]
                     for name, entry in report["sequences"].items()))


def to_json(report: dict) -> str:
    """Indented JSON (NaN values are already None, written as null)."""
    return json.dumps(report, indent=1, allow_nan=False) + "\n"
