"""V-SOD evaluation with FSNet's ``eval/main_VSOD.m`` protocol (DAVSOD toolbox), in Python.

    python -m eval.vsod --pred results/FSNet --gt dataset/TestSet [--datasets DAVIS FBMS]
                        [--workers N] [--json OUT] [--csv OUT] [--plot DIR]

Reads ``<gt>/<Dataset>/<seq>/GT/*.png`` (or ``<seq>/*.png``) and the predictions
``<pred>/<Dataset>/<seq>/<frame>.png`` that ``inference.py --mode saliency`` writes, skips the first
and last GT frame of every sequence, averages per sequence and then over sequences, and prints
S, max-E, max-F, MAE (the paper's columns) plus meanE, adpE, meanF, adpF and wF per dataset.
Inputs are only read; predictions of another size are resized in memory.

Before any scoring, the report paths (--json/--csv/--plot) are checked: none may be, contain or
lie in --pred or --gt, and they must be writable; then the trees are planned and the header of
every evaluated GT and prediction file read, with all problems in one error.
"""
from __future__ import annotations

from utils.cli import install_interrupt_hook

install_interrupt_hook()  # first: a Ctrl-C while numpy/scipy are still being imported is one error line too

import argparse
import logging
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from eval.common import check_report_files, format_listing
from eval.sod.aggregate import DatasetScores, aggregate_dataset, aggregate_sequence
from eval.sod.images import NOTE_TEXT, Note, VSODInputError, supported_mode
from eval.sod.report import format_table, schema, write_csv, write_json
from eval.sod.runner import run_sequences
from eval.sod.tree import SHORT_SEQUENCE_POLICIES, SequencePlan, plan_dataset, resolve_datasets
from utils.cli import ListAction, make_parser, progress as progress_bar, run_guarded
from utils.data.images import check_images
from utils.safety import check_writable

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


def check_files(jobs: Sequence[SequencePlan]) -> None:
    """Read the header of every evaluated GT and prediction file (thread pool); all unreadable,
    truncated or undecodable (image mode) files are reported in one :class:`VSODInputError`."""
    roles = {job.gt_dir / name: "gt" for job in jobs for name in job.frames}
    roles.update({job.pred_dir / name: "pred" for job in jobs for name in job.frames})
    headers, problems = check_images(list(roles))
    problems += [f"{path}: unsupported image mode {header.mode!r}" for path, header in headers.items()
                 if not supported_mode(header.mode, roles[path])]
    if problems:
        raise VSODInputError(f"{len(problems)} unusable file(s) (unreadable, truncated or of an "
                             "unsupported image mode):" + format_listing(problems)
                             + "\nFix: replace or remove them (save masks as 8-bit grey PNG; "
                             "predictions: re-run inference).")


def evaluate_datasets(pred_root: str | Path, gt_root: str | Path, datasets: Sequence[str] | None = None, *,
                      workers: int = 1, fix_adaptive_e: bool = False, short_sequences: str = "error",
                      strict: bool = False, progress: bool = False) -> dict[str, DatasetScores]:
    """Full results (numbers, curves, per-sequence scores) per dataset; see :func:`evaluate`."""
    if int(workers) < 1:
        raise VSODInputError(f"--workers must be at least 1, got {workers}")
    pred_root, gt_root = Path(pred_root), Path(gt_root)
    names = resolve_datasets(pred_root, gt_root, list(datasets) if datasets else None)
    plans = [plan_dataset(pred_root, gt_root, name, short_sequences) for name in names]
    for plan in plans:
        for warning in plan.warnings:
            LOG.warning(warning)
    jobs = [job for plan in plans for job in plan.jobs]
    check_files(jobs)
    sequences: dict[str, dict] = {name: {} for name in names}
    notes: list[Note] = []
    bar = progress_bar(run_sequences(jobs, workers=workers), total=len(jobs), desc="V-SOD",
                       unit="sequence", enabled=progress)
    for result in bar:
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


@dataclass
class VsodConfig:
    """Everything one evaluation run needs (the command-line options as typed fields)."""

    pred: Path
    gt: Path
    datasets: Optional[list[str]] = None
    workers: int = 1
    fix_adaptive_e: bool = False
    short_sequences: str = "error"
    strict: bool = False
    progress: bool = False
    json: Optional[Path] = None
    csv: Optional[Path] = None
    plot: Optional[Path] = None


@dataclass
class VsodResult:
    """Results per dataset (see :func:`evaluate_datasets`) and the report files written."""

    datasets: dict[str, DatasetScores]
    written: list[Path] = field(default_factory=list)


def check_report_paths(config: VsodConfig) -> None:
    """Before any work: every report path apart from the inputs, distinct and writable;
    matplotlib present for --plot."""
    datasets = config.datasets or []
    inputs = {"--pred": config.pred, "--gt": config.gt,
              "--datasets": [Path(root) / name for root in (config.pred, config.gt) for name in datasets]}
    if config.plot is not None:
        from eval.sod.plot import require_matplotlib
        require_matplotlib()
    check_report_files(inputs, {"--json": config.json, "--csv": config.csv}, {"--plot": config.plot})
    if config.plot is not None:
        check_writable(config.plot, "--plot folder")


def run(config: VsodConfig) -> VsodResult:
    """Check the report paths, evaluate, and write the requested reports and curves."""
    check_report_paths(config)
    results = evaluate_datasets(config.pred, config.gt, config.datasets, workers=config.workers,
                                fix_adaptive_e=config.fix_adaptive_e,
                                short_sequences=config.short_sequences, strict=config.strict,
                                progress=config.progress)
    result = VsodResult(results)
    for path, writer in ((config.json, write_json), (config.csv, write_csv)):
        if path is not None:
            writer(results, Path(path))
            result.written.append(Path(path))
    if config.plot is not None:
        from eval.sod.plot import save_curves
        result.written += save_curves(results, Path(config.plot))
    return result


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python -m eval.vsod``."""
    parser = make_parser("python -m eval.vsod", __doc__)
    parser.add_argument("--pred", required=True, type=Path,
                        help="prediction root: <pred>/<Dataset>/<seq>/<frame>.png")
    parser.add_argument("--gt", required=True, type=Path,
                        help="GT root: <gt>/<Dataset>/<seq>/GT/<frame>.png (or <seq>/<frame>.png)")
    parser.add_argument("--datasets", action=ListAction, help="datasets to evaluate (default: every folder under --pred)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes, parallel across sequences, at least 1")
    parser.add_argument("--json", type=Path, help="write {'datasets': {name: {...}}} here")
    parser.add_argument("--csv", type=Path, help="write one row per dataset here")
    parser.add_argument("--plot", type=Path, help="write PR and F-threshold curves per dataset here (needs matplotlib)")
    parser.add_argument("--fix_adaptive_e", action="store_true",
                        help="divide each sequence's adpE by n instead of main_VSOD.m's n+1 (index bug, docs/deviations.md D43)")
    parser.add_argument("--short_sequences", choices=SHORT_SEQUENCE_POLICIES, default="error",
                        help="sequences with <= 2 GT frames: stop with a list (error) or leave them out (exclude)")
    parser.add_argument("--strict", action="store_true",
                        help="fail instead of warning on RGB, 16-bit, palette, transparent or differently sized inputs")
    parser.add_argument("--digits", type=int, default=3, help="decimals in the printed table")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.accept_old_spellings({"--num_workers": "--workers"})
    return parser


def config_from_args(args: argparse.Namespace) -> VsodConfig:
    """The typed configuration of parsed command-line options."""
    return VsodConfig(args.pred, args.gt, args.datasets, args.workers, args.fix_adaptive_e,
                      args.short_sequences, args.strict, not args.no_progress, args.json, args.csv,
                      args.plot)


def _run_and_print(args: argparse.Namespace) -> None:
    if args.digits < 0:
        raise VSODInputError(f"--digits must be 0 or more, got {args.digits}")
    result = run(config_from_args(args))
    print(format_table(result.datasets, digits=args.digits))
    for path in result.written:
        LOG.info("wrote %s", path)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on unusable input)."""
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    return run_guarded(lambda: _run_and_print(args), args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
