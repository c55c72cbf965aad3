"""Run the FSNet paper's ablation tables: train, predict and score every row; or list the rows;
or measure Table 4's cost columns.

    python -m experiments.ablation --list
    python -m experiments.ablation --table 3 --data_root dataset --out result/ablation
        [--rows t3-app t3-fsnet] [--datasets DAVIS MCL] [--seeds 0 1 2] [--backbone resnet50]
        [--launcher local|submitit_local|slurm --partition P --gpus_per_row 1 --timeout_min 1440]
    python -m experiments.ablation --table 4 --quick --out /tmp/ablation   # toy data, CPU, seconds
    python -m experiments.ablation --table 4 --cost_only [--out DIR]

Writes ``<out>/<row>/`` per row (experiments.runner) and ``<out>/table{N}.json`` / ``.md``.
Re-running the command resumes. docs/ablations.md describes the variants, the recipe and the
outputs.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Optional, Sequence

import inference
from experiments.cost import PAPER_SIZE, forward_seconds, measure_cost, time_ratios
from experiments.launch import LAUNCHERS, LaunchOptions, launch, require_submitit
from experiments.report import QUICK_NOTE, table_row, write_table
from experiments.runner import (PAPER_RECIPE, QUICK_RECIPE, Machine, Recipe, RowRun,
                                check_folder, is_done, result_of, run_folder)
from experiments.variants import PAPER_BACKBONE, PAPER_DATASETS, TABLES, VARIANTS, Variant, table_rows
from lib.backbones import BACKBONES
from utils.cli import BadInputError, MissingInputError, make_parser, run_guarded
from utils.data.synthetic import make_toy_dataset
from utils.device import resolve_device
from utils.io import write_text
from utils.safety import check_outputs_apart, check_writable

QUICK_DATASET = "Toy"


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python -m experiments.ablation``."""
    parser = make_parser("python -m experiments.ablation", __doc__)
    what = parser.add_argument_group("what to run")
    what.add_argument("--list", action="store_true", help="print every named row and exit")
    what.add_argument("--table", type=int, choices=TABLES, help="the paper's table to run")
    what.add_argument("--rows", nargs="+", metavar="NAME", help="only these rows of the table")
    what.add_argument("--seeds", type=int, nargs="+", default=[0],
                      help="train every row once per seed; tables report mean ± std")
    what.add_argument("--backbone", default=PAPER_BACKBONE, choices=BACKBONES,
                      help="backbone of every row (the paper's ablations use ResNet-50)")
    what.add_argument("--quick", action="store_true",
                      help="the whole table on the toy set with a tiny CPU recipe (not a reproduction)")
    what.add_argument("--cost_only", action="store_true",
                      help="only parameters, G MACs at 352x352 and forward-time ratios per row")
    what.add_argument("--cost_size", type=int, default=PAPER_SIZE,
                      help="--cost_only: input size of the timed forward passes")
    what.add_argument("--cost_repeats", type=int, default=3,
                      help="--cost_only: timed rounds over all rows (median per row)")
    data = parser.add_argument_group("data and output")
    data.add_argument("--data_root", help="folder holding TrainSet_StaticAndVideo/, TrainSet_Video/ "
                                          "and TestSet/ (--quick: default a generated toy set)")
    data.add_argument("--datasets", nargs="+", metavar="NAME",
                      help="test sets under <data_root>/TestSet to score (default: "
                           f"{' '.join(PAPER_DATASETS.values())}; --quick: {QUICK_DATASET})")
    data.add_argument("--out", help="output folder: <out>/<row>/ and <out>/table<N>.{json,md}")
    machine = parser.add_argument_group("machine")
    machine.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    machine.add_argument("--workers", type=int, default=4, help="data loader workers per process")
    machine.add_argument("--imagenet", metavar="PATH",
                         help="ImageNet backbone file (default: train.py's search and download)")
    machine.add_argument("--offline", action="store_true", help="never download")
    cluster = parser.add_argument_group("launcher (submitit)")
    defaults = LaunchOptions()
    cluster.add_argument("--launcher", choices=LAUNCHERS, default=defaults.launcher,
                         help="local: rows one after another here; submitit_local / slurm: one "
                              "submitit job per row")
    cluster.add_argument("--partition", help="SLURM partition")
    cluster.add_argument("--account", help="SLURM account")
    cluster.add_argument("--gpus_per_row", type=int, default=defaults.gpus_per_row,
                         help="GPUs of one row (its job's, with slurm); more than 1: every stage "
                              "trains under torchrun with one DDP process per GPU")
    cluster.add_argument("--cpus_per_task", type=int, default=defaults.cpus_per_task)
    cluster.add_argument("--mem_gb", type=int, default=defaults.mem_gb, help="memory per job")
    cluster.add_argument("--timeout_min", type=int, default=defaults.timeout_min,
                         help="time limit of one row's job, minutes")
    cluster.add_argument("--no_wait", action="store_true",
                         help="submit and exit; run the same command later to write the table")
    return parser


def format_listing(variants: Sequence[Variant]) -> str:
    """One line per row: name, table, label, configuration and the paper's numbers."""
    lines = []
    for variant in variants:
        config = ", ".join(f"{k}={v}" for k, v in asdict(variant.config).items() if k != "backbone")
        paper = "; ".join(f"{name} S {v['S']:.3f} MAE {v['MAE']:.3f}"
                          for name, v in variant.paper.items())
        cost = ("; " + ", ".join(f"{k} {v}" for k, v in variant.paper_cost.items())
                if variant.paper_cost else "")
        lines.append(f"{variant.name:16} table {variant.table}  {variant.row:28}  {config}  "
                     f"paper: {paper}{cost}")
    return "\n".join(lines)


def selected_rows(args: argparse.Namespace) -> list[Variant]:
    """The table's rows (all, or ``--rows`` in the given order); an unknown name is an error
    listing the table's names."""
    rows = {variant.name: variant for variant in table_rows(args.table)}
    unknown = [name for name in args.rows or [] if name not in rows]
    if unknown:
        raise BadInputError(f"--rows {' '.join(unknown)}: not a row of table {args.table}",
                            f"use some of {', '.join(rows)} (python -m experiments.ablation --list)")
    return [rows[name] for name in args.rows] if args.rows else list(rows.values())


def check_args(args: argparse.Namespace) -> None:
    """Argument checks that need no file."""
    if args.table is None:
        raise BadInputError("no --table given", "pass --table 3, 4 or 5 (or --list)")
    problems = [message for bad, message in (
        (not args.cost_only and not args.out, "--out is required"),
        (not args.cost_only and not args.quick and not args.data_root,
         "--data_root is required (or --quick)"),
        (any(seed < 0 for seed in args.seeds) or len(set(args.seeds)) != len(args.seeds),
         f"--seeds {args.seeds} must be distinct integers >= 0"),
        (args.gpus_per_row < 0, f"--gpus_per_row {args.gpus_per_row} must be >= 0"),
        ("LOCAL_RANK" in os.environ,
         "experiments.ablation runs its own torchrun for each stage: start it with python "
         "-m experiments.ablation --gpus_per_row N, not under torchrun"),
        (args.timeout_min < 1, f"--timeout_min {args.timeout_min} must be >= 1"),
        (args.workers < 0, f"--workers {args.workers} must be >= 0"),
        (args.cost_size < 32 or args.cost_size % 32, f"--cost_size {args.cost_size} must be a "
                                                     "positive multiple of 32"),
        (args.cost_repeats < 1, f"--cost_repeats {args.cost_repeats} must be >= 1"),
    ) if bad]
    if problems:
        raise BadInputError(f"{len(problems)} invalid argument(s): " + "; ".join(problems),
                            "python -m experiments.ablation --help describes each flag")


def recipe_of(args: argparse.Namespace) -> Recipe:
    """The paper's recipe, or the tiny one of ``--quick``."""
    return QUICK_RECIPE if args.quick else PAPER_RECIPE


def row_runs(args: argparse.Namespace, variants: Sequence[Variant], data_root: Path,
             datasets: Sequence[str]) -> list[RowRun]:
    """One run per (row, seed), in table order."""
    machine = Machine(device="cpu" if args.quick else args.device,
                      workers=0 if args.quick else args.workers, imagenet=args.imagenet,
                      offline=args.offline, processes=max(1, args.gpus_per_row),
                      keep_checkpoints=not args.quick)
    out = Path(args.out)
    return [RowRun(name=variant.name, table=variant.table,
                   config=replace(variant.config, backbone=args.backbone), seed=seed,
                   folder=run_folder(out, variant.name, seed), data_root=data_root,
                   datasets=tuple(datasets), recipe=recipe_of(args), machine=machine)
            for variant in variants for seed in args.seeds]


def data_root_of(args: argparse.Namespace) -> Path:
    """``--data_root``, checked and apart from ``--out``; ``--quick`` without it: the toy set's
    place, ``<out>/toy-data``."""
    if args.quick and not args.data_root:
        return Path(args.out) / "toy-data"
    data_root = Path(args.data_root)
    if not data_root.is_dir():
        raise MissingInputError(f"--data_root {data_root} does not exist",
                                "pass the folder holding TrainSet_* and TestSet/")
    check_outputs_apart({"--data_root": data_root}, {"--out": args.out})
    return data_root


def prepare_data(args: argparse.Namespace, data_root: Path) -> None:
    """Check that every requested test set exists under ``<data_root>/TestSet``; ``--quick``
    without ``--data_root`` first generates the quick toy set there (once)."""
    if args.quick and not args.data_root and not (data_root / "toy.json").is_file():
        make_toy_dataset(data_root, seed=0, quick=True)
    inference.resolve_datasets(data_root / "TestSet", requested_datasets(args))


def requested_datasets(args: argparse.Namespace) -> list[str]:
    """``--datasets``, or the paper's two sets (the toy set with ``--quick``)."""
    return args.datasets or ([QUICK_DATASET] if args.quick else list(PAPER_DATASETS.values()))


def table_header(args: argparse.Namespace, data_root: Path) -> str:
    """The lines above a table: what was run, and in quick mode that it is no reproduction."""
    recipe = recipe_of(args)
    lines = [f"Backbone {args.backbone}; seeds {' '.join(map(str, args.seeds))}; data "
             f"{data_root}; recipe {json.dumps(asdict(recipe))}. Paper numbers: Tables 3–5 of "
             "the FSNet paper (ResNet-50, FlowNet 2.0 flow). S-measure and MAE by eval.vsod; "
             "BPM cost: FlopCounterMode G multiply-accumulates at 352×352."]
    if args.quick:
        lines.insert(0, f"**{QUICK_NOTE}**")
    return "\n\n".join(lines)


def run_table(args: argparse.Namespace) -> int:
    """Check everything, run (or submit) the rows, write the table."""
    variants = selected_rows(args)
    if args.launcher != "local":
        require_submitit()
    out = Path(args.out)
    data_root = data_root_of(args)
    runs = row_runs(args, variants, data_root, requested_datasets(args))
    for run in runs:
        check_folder(run)
    check_writable(out)
    prepare_data(args, data_root)
    todo = [run for run in runs if not is_done(run)]
    print(f"table {args.table}: {len(runs) - len(todo)} of {len(runs)} row run(s) finished, "
          f"{len(todo)} to run -> {out}")
    options = LaunchOptions(args.launcher, args.partition, args.account, args.gpus_per_row,
                            args.cpus_per_task, args.mem_gb, args.timeout_min, not args.no_wait)
    if launch(todo, options, out / "submitit") is None:
        return 0
    results = [result_of(run) for run in runs]
    rows = [table_row(variant, [r for r in results if r["name"] == variant.name], args.quick)
            for variant in variants]
    for path in write_table(out, args.table, rows, table_header(args, data_root)):
        print(f"wrote {path}")
    print((out / f"table{args.table}.md").read_text())
    return 0


def run_cost(args: argparse.Namespace) -> int:
    """``--cost_only``: every row's parameters and G MACs at 352×352, and forward-time ratios to
    the released configuration (N = 4) measured in one run."""
    variants = selected_rows(args)
    device = resolve_device(args.device)
    if args.out:
        check_writable(args.out)
    configs = [replace(variant.config, backbone=args.backbone) for variant in variants]
    reference = next((i for i, c in enumerate(configs) if c.is_released), None)
    costs = [measure_cost(config) for config in configs]
    seconds = forward_seconds(configs, args.cost_size, device, repeats=args.cost_repeats)
    ratios = time_ratios(seconds, reference)
    rows = [{"name": v.name, "row": v.row, **asdict(cost), "forward_ratio": ratio,
             "forward_s": s if device.type == "cuda" else None, "paper_cost": v.paper_cost}
            for v, cost, ratio, s in zip(variants, costs, ratios, seconds)]
    text = format_cost(rows, args, device)
    print(text)
    if args.out:
        out = Path(args.out)
        write_text(out / f"cost_table{args.table}.md", text)
        write_text(out / f"cost_table{args.table}.json", json.dumps(rows, indent=1) + "\n")
    return 0


def format_cost(rows: Sequence[dict[str, Any]], args: argparse.Namespace, device: Any) -> str:
    """The cost table as Markdown, with how it was measured."""
    lines = [f"Cost of table {args.table}'s rows ({args.backbone}). Params: every parameter; "
             "G MACs: FlopCounterMode FLOPs / 2 at 352×352, batch 1 (convolutions and matrix "
             f"products only). Forward: median of {args.cost_repeats} rounds at {args.cost_size}×"
             f"{args.cost_size} on {device}, rows timed in turns in one run, ratio to N = 4.", "",
             "| row | variant | BPM params (M) | paper | BPM G MACs | paper | params (M) | "
             "G MACs | forward ratio | forward s |", "|" + "---|" * 10]
    for row in rows:
        paper = row["paper_cost"] or {}
        ratio = "—" if row["forward_ratio"] is None else f"{row['forward_ratio']:.2f}"
        seconds = "—" if row["forward_s"] is None else f"{row['forward_s']:.4f}"
        lines.append(f"| {row['row']} | `{row['name']}` | {row['bpm_params_m']:.3f} | "
                     f"{_paper(paper, 'bpm_params_m')} | {row['bpm_gflops']:.3f} | "
                     f"{_paper(paper, 'bpm_gflops')} | {row['params_m']:.3f} | "
                     f"{row['gflops']:.2f} | {ratio} | {seconds} |")
    return "\n".join(lines) + "\n"


def _paper(cost: dict[str, float], key: str) -> str:
    return f"{cost[key]:.3f}" if key in cost else "—"


def run(args: argparse.Namespace) -> int:
    """Dispatch: ``--list``, ``--cost_only`` or a table run."""
    if args.list:
        print(format_listing(list(VARIANTS.values())))
        return 0
    check_args(args)
    return run_cost(args) if args.cost_only else run_table(args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point: exit status 0, or 2 after one ``error:`` line."""
    args = get_args_parser().parse_args(argv)
    return run_guarded(lambda: run(args), args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
