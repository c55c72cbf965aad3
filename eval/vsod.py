"""V-SOD evaluation with FSNet's ``eval/main_VSOD.m`` protocol (DAVSOD toolbox), in Python.

    python -m eval.vsod --pred results/FSNet --gt dataset/TestSet [--datasets DAVIS FBMS]
                        [--workers N] [--json OUT] [--csv OUT] [--plot DIR]

Reads ``<gt>/<Dataset>/<seq>/GT/*.png`` (or ``<seq>/*.png``) and the predictions
``<pred>/<Dataset>/<seq>/<frame>.png`` that ``inference.py --mode saliency`` writes, skips the first
and last GT frame of every sequence, averages per sequence and then over sequences, and prints
S, max-E, max-F, MAE (the paper's columns) plus meanE, adpE, meanF, adpF and wF per dataset.
Inputs are only read; predictions of another size are resized in memory.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from eval.sod.aggregate import DatasetScores, aggregate_dataset, aggregate_sequence
from eval.sod.images import NOTE_TEXT, Note, VSODInputError
from eval.sod.report import format_table, schema, write_csv, write_json
from eval.sod.runner import run_sequences
from eval.sod.tree import SHORT_SEQUENCE_POLICIES, plan_dataset, resolve_datasets

LOG = logging.getLogger("eval.vsod")
_MAX_NAMED = 5


def _note_messages(notes: list[Note]) -> list[str]:
    """One message per note kind: what was done and the first few files."""
    by_kind: dict[str, list[str]] = defaultdict(list)
    for note in notes:
        by_kind[note.kind].append(note.path)
    messages = []
    for kind, paths in by_kind.items():
        more = f" (+{len(paths) - _MAX_NAMED} more)" if len(paths) > _MAX_NAMED else ""
        named = ", ".join(paths[:_MAX_NAMED]) + more
        messages.append(f"{NOTE_TEXT[kind]}: {len(paths)} file(s): {named}")
    return messages


def evaluate_datasets(pred_root: str | Path, gt_root: str | Path, datasets: Sequence[str] | None = None, *,
                      workers: int = 1, fix_adaptive_e: bool = False, short_sequences: str = "error",
                      strict: bool = False) -> dict[str, DatasetScores]:
    """Full results (numbers, curves, per-sequence scores) per dataset; see :func:`evaluate`."""
    pred_root, gt_root = Path(pred_root), Path(gt_root)
    names = resolve_datasets(pred_root, gt_root, list(datasets) if datasets else None)
    plans = [plan_dataset(pred_root, gt_root, name, short_sequences) for name in names]
    for plan in plans:
        for warning in plan.warnings:
            LOG.warning(warning)
    jobs = [job for plan in plans for job in plan.jobs]
    sequences: dict[str, dict] = {name: {} for name in names}
    notes: list[Note] = []
    for result in run_sequences(jobs, workers=workers):
        sequences[result.job.dataset][result.job.name] = aggregate_sequence(result.frames, fix_adaptive_e)
        notes += result.notes
    messages = _note_messages(notes)
    if strict and messages:
        raise VSODInputError("--strict: inputs that need MATLAB-specific handling:\n  " + "\n  ".join(messages))
    for message in messages:
        LOG.warning(message)
    return {name: aggregate_dataset(sequences[name]) for name in names}


def evaluate(pred_root: str | Path, gt_root: str | Path, datasets: Sequence[str] | None = None, *,
             workers: int = 1, fix_adaptive_e: bool = False, short_sequences: str = "error",
             strict: bool = False) -> dict:
    """Evaluate predictions against GT with main_VSOD.m's protocol.

    Returns ``{"datasets": {name: {"S", "maxE", "meanE", "adpE", "maxF", "meanF", "adpF", "wF",
    "MAE", "n_sequences", "n_frames"}}}`` (NaN as None).  ``datasets``: names under both roots
    (default: every folder under ``pred_root``).  ``fix_adaptive_e``: divide the sequence adpE by
    n instead of main_VSOD.m's n + 1.  ``short_sequences``: "error" or "exclude" for sequences with
    <= 2 GT frames.  ``strict``: raise instead of warning on RGB / 16-bit / palette / resized
    inputs.  Raises :class:`VSODInputError` naming the files on unusable input.
    """
    return schema(evaluate_datasets(pred_root, gt_root, datasets, workers=workers, fix_adaptive_e=fix_adaptive_e,
                                    short_sequences=short_sequences, strict=strict))


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python -m eval.vsod``."""
    parser = argparse.ArgumentParser(prog="python -m eval.vsod", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", required=True, help="prediction root: <pred>/<Dataset>/<seq>/<frame>.png")
    parser.add_argument("--gt", required=True,
                        help="GT root: <gt>/<Dataset>/<seq>/GT/<frame>.png (or <seq>/<frame>.png)")
    parser.add_argument("--datasets", nargs="+", help="datasets to evaluate (default: every folder under --pred)")
    parser.add_argument("--workers", type=int, default=1, help="processes, parallel across sequences (default 1)")
    parser.add_argument("--json", type=Path, help="write {'datasets': {name: {...}}} here")
    parser.add_argument("--csv", type=Path, help="write one row per dataset here")
    parser.add_argument("--plot", type=Path, help="write PR and F-threshold curves per dataset here (needs matplotlib)")
    parser.add_argument("--fix_adaptive_e", action="store_true",
                        help="divide each sequence's adpE by n instead of main_VSOD.m's n+1 (index bug, docs/deviations.md D43)")
    parser.add_argument("--short_sequences", choices=SHORT_SEQUENCE_POLICIES, default="error",
                        help="sequences with <= 2 GT frames: stop with a list (default) or leave them out")
    parser.add_argument("--strict", action="store_true",
                        help="fail instead of warning on RGB, 16-bit, palette or differently sized inputs")
    parser.add_argument("--digits", type=int, default=3, help="decimals in the printed table (default 3)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on unusable input)."""
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        if args.plot is not None:
            from eval.sod.plot import require_matplotlib, save_curves
            require_matplotlib()
        results = evaluate_datasets(args.pred, args.gt, args.datasets, workers=args.workers,
                                    fix_adaptive_e=args.fix_adaptive_e, short_sequences=args.short_sequences,
                                    strict=args.strict)
    except (VSODInputError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(results, digits=args.digits))
    if args.json is not None:
        write_json(results, args.json)
    if args.csv is not None:
        write_csv(results, args.csv)
    if args.plot is not None:
        for path in save_curves(results, args.plot):
            LOG.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
