"""DAVIS-2016 evaluation: J, F and T with mean / recall / decay, as the MATLAB toolbox computes them.

    python -m eval.davis16 --pred results/DAVIS16 --gt dataset/DAVIS16 --set val --json out.json

Before any scoring, the report paths (--json/--csv) are checked: none may be, contain or lie in
--pred or --gt, and their folders must be writable; then every sequence is listed and every
header read, with all problems in one error.

Scores frames 1 .. N-2 of every sequence (first and last excluded), T on consecutive predicted
pairs inside them and only on the sequences the toolbox marks stable, then averages the
per-sequence statistics over sequences. See eval/davis/ for the measures and
docs/evaluation-davis16.md for the specification.
"""
from __future__ import annotations

from utils.cli import install_interrupt_hook

install_interrupt_hook()  # first: a Ctrl-C while numpy/scipy are still being imported is one error line too

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from utils.cli import ListAction, make_parser, run_guarded
from eval.common import check_report_files, write_report
from eval.davis.io import GT_LAYOUTS, DavisInputError, gt_sequences, plan_sequences, pred_sequences
from eval.davis.report import sequence_tables, summary_table, to_csv, to_json
from eval.davis.runner import METRICS, score_sequences, summarise
from eval.davis.sequences import SETS, UNSTABLE_SEQUENCES


def _choose_sequences(pred_dir: Path, gt_seqs: dict[str, Path], seqs: list[str] | None,
                      subset: str | None) -> list[str]:
    """The sequences to score: ``subset``, ``seqs`` or every prediction folder; all in the GT."""
    if seqs and subset:
        raise DavisInputError("Pass either --seqs or --set, not both.")
    if subset:
        chosen = list(SETS[subset])
    elif seqs:
        chosen = list(dict.fromkeys(seqs))
    else:
        chosen = pred_sequences(pred_dir)
        if not chosen:
            raise DavisInputError(f"No sequence folders under {pred_dir} (--pred).")
    unknown = [s for s in chosen if s not in gt_seqs]
    if unknown:
        raise DavisInputError(
            f"Unknown sequence(s) {unknown}: not in the GT ({len(gt_seqs)} sequences, e.g. "
            f"{list(gt_seqs)[:5]}). Check --seqs/--set, or remove the extra prediction folders.")
    return chosen


def evaluate(pred_dir: str | Path, gt_dir: str | Path, seqs: list[str] | None = None,
             subset: str | None = None, metrics: tuple[str, ...] = METRICS,
             threshold: float | None = None, workers: int = 1, gt_layout: str = "auto",
             allow_missing: bool = False, t_all: bool = False, progress: bool = False) -> dict:
    """Evaluate predictions ``<pred_dir>/<seq>/<frame>.png`` against the GT under ``gt_dir``.

    Returns ``{"overall": {"J": {mean, recall, decay}, "F": {...}, "T": {mean}},
    "sequences": {seq: {n_frames, J, F, T: {mean, evaluated}, per_frame: {J, F, T}}},
    "meta": {...}}``; NaN values are None. ``per_frame`` J and F hold frames 1 .. N-2, T the
    pairs (k, k+1) for k = 1 .. N-3 (x5). Raises :class:`DavisInputError` on bad input.
    """
    unknown_metrics = [m for m in metrics if m not in METRICS]
    if unknown_metrics or not metrics:
        raise DavisInputError(f"Unknown metric(s) {unknown_metrics}; choose from J, F, T.")
    metrics = tuple(m for m in METRICS if m in metrics)
    if int(workers) < 1:
        raise DavisInputError(f"--workers must be at least 1, got {workers}.")
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if not pred_dir.is_dir():
        raise DavisInputError(f"Prediction folder {pred_dir} does not exist (--pred).")
    gt_seqs = gt_sequences(gt_dir, gt_layout)
    names = _choose_sequences(pred_dir, gt_seqs, seqs, subset)
    jobs = plan_sequences(names, gt_seqs, pred_dir, allow_missing)
    t_sequences = {n for n in names if t_all or n not in UNSTABLE_SEQUENCES}
    per_frame = score_sequences(jobs, metrics, threshold, t_sequences, workers, progress)
    report = summarise(jobs, per_frame, metrics, t_sequences)
    report["meta"] = {
        "pred": str(pred_dir), "gt": str(gt_dir), "metrics": list(metrics),
        "threshold": "matlab" if threshold is None else threshold,
        "t_sequences": sorted(t_sequences) if "T" in metrics else [],
        "missing_predictions": {job.name: job.missing for job in jobs if job.missing},
    }
    return report


@dataclass
class Davis16Config:
    """Everything one evaluation run needs (the command-line options as typed fields)."""

    pred: Path
    gt: Path
    seqs: Optional[list[str]] = None
    subset: Optional[str] = None
    metrics: tuple[str, ...] = METRICS
    threshold: Optional[float] = None
    workers: int = 1
    gt_layout: str = "auto"
    allow_missing: bool = False
    t_all: bool = False
    progress: bool = False
    json: Optional[Path] = None
    csv: Optional[Path] = None


@dataclass
class Davis16Result:
    """The report of :func:`evaluate` and the report files written."""

    report: dict
    written: list[Path] = field(default_factory=list)


def check_report_paths(config: Davis16Config) -> None:
    """Before any work: the report files are apart from the inputs, distinct and writable."""
    seqs = config.seqs or []
    check_report_files({"--pred": config.pred, "--gt": config.gt,
                        "--seqs": [Path(root) / seq for root in (config.pred, config.gt) for seq in seqs]},
                       {"--json": config.json, "--csv": config.csv})


def run(config: Davis16Config) -> Davis16Result:
    """Check the report paths, evaluate, and write the requested reports."""
    check_report_paths(config)
    report = evaluate(config.pred, config.gt, seqs=config.seqs, subset=config.subset,
                      metrics=config.metrics, threshold=config.threshold, workers=config.workers,
                      gt_layout=config.gt_layout, allow_missing=config.allow_missing,
                      t_all=config.t_all, progress=config.progress)
    result = Davis16Result(report)
    for path, text in ((config.json, to_json), (config.csv, to_csv)):
        if path is not None:
            write_report(path, text(report))
            result.written.append(Path(path))
    return result


def _threshold(text: str) -> float | None:
    """--binarize value: None for 'matlab', else a fraction in [0, 1)."""
    if text == "matlab":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'matlab' nor a fraction in [0, 1) — "
                                         "give --binarize matlab or e.g. --binarize 0.5")
    return value


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python -m eval.davis16``."""
    parser = make_parser("python -m eval.davis16", __doc__)
    parser.add_argument("--pred", required=True, type=Path, help="predictions: <pred>/<seq>/<frame>.png")
    parser.add_argument("--gt", required=True, type=Path, help="GT: DAVIS-2016 root (Annotations/480p/), "
                        "FSNet test layout (<seq>/GT/) or a folder of <seq>/*.png")
    parser.add_argument("--gt_layout", default="auto", choices=GT_LAYOUTS,
                        help="GT layout (auto: detected from the folder)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--seqs", action=ListAction,
                       help="sequences to score (default: every folder under --pred)")
    group.add_argument("--set", dest="subset", choices=sorted(SETS),
                       help="an official DAVIS-2016 subset (val: the 20 sequences)")
    parser.add_argument("--metrics", action=ListAction, default=["J", "F", "T"],
                        help="measures to compute, any of J F T")
    parser.add_argument("--binarize", dest="threshold", default="matlab", type=_threshold, metavar="matlab|T",
                        help="non-binary predictions: 'matlab' (value > round(max/2)) "
                        "or a fraction t of the largest value (value > t*255 for 8-bit PNGs); binary PNGs "
                        "are always > 0")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes, at least 1")
    parser.add_argument("--allow_missing", action="store_true",
                        help="score missing prediction frames as empty masks (listed)")
    parser.add_argument("--t_all", action="store_true",
                        help="compute T on every sequence, also the ones the MATLAB toolbox "
                        "excludes as unstable")
    parser.add_argument("--json", type=Path, help="write the full report (per frame) as JSON")
    parser.add_argument("--csv", type=Path, help="write per-sequence statistics as CSV")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.accept_old_spellings({"--threshold": "--binarize", "--num_workers": "--workers"})
    return parser


def config_from_args(args: argparse.Namespace) -> Davis16Config:
    """The typed configuration of parsed command-line options."""
    return Davis16Config(args.pred, args.gt, args.seqs, args.subset, tuple(args.metrics), args.threshold,
                         args.workers, args.gt_layout, args.allow_missing, args.t_all,
                         not args.no_progress, args.json, args.csv)


def _print_result(result: Davis16Result) -> None:
    report = result.report
    print(sequence_tables(report))
    print()
    print(summary_table(report))
    for name, frames in report["meta"]["missing_predictions"].items():
        print(f"missing predictions scored as empty in {name}: {', '.join(frames)}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit status (2 on unusable input)."""
    args = get_args_parser().parse_args(argv)
    return run_guarded(lambda: _print_result(run(config_from_args(args))), args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
