"""Run the whole FSNet pipeline on generated data: toy set + flow -> three training stages ->
inference (binary and saliency) -> DAVIS-2016 and V-SOD evaluation, untrained vs trained.

    python demo.py            # the documented demo recipe (< 10 min on 2 CPU cores)
    python demo.py --quick    # every phase for one or two iterations (what the tests run)

Every phase calls the same code as the command-line tools (``train.main``, ``inference.main``,
``eval.davis16.main``, ``eval.vsod.main``); there is no second training loop here. Re-running
reuses what exists (toy data, stage checkpoints, masks) unless ``--fresh``; an interrupted run
resumes from the last completed stage epoch.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

import inference
import train
from eval import davis16, vsod
from lib.fsnet import FSNet
from utils.checkpoint import save_checkpoint
from utils.inference.overlay import write_overlay_gif
from utils.data.toy import make_toy_dataset
from utils.training.state import is_finished

STAGES = ("pretrain_rgb", "pretrain_flow", "finetune")
TOY_DATASET = "Toy"


@dataclass(frozen=True)
class Recipe:
    """The demo's training recipe (documented in docs/training.md, section "The demo recipe (`demo.py`)")."""

    size: int             # train and test size (square, multiple of 32)
    epochs: Dict[str, int]
    batchsize: int
    lr: float
    max_samples: Optional[int]


FULL_RECIPE = Recipe(size=64, epochs={"pretrain_rgb": 12, "pretrain_flow": 8, "finetune": 12},
                     batchsize=8, lr=1e-2, max_samples=None)
QUICK_RECIPE = Recipe(size=64, epochs={s: 1 for s in STAGES}, batchsize=2, lr=1e-2, max_samples=4)


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python demo.py``."""
    parser = argparse.ArgumentParser(description="FSNet end to end on a generated toy data set.")
    parser.add_argument("--quick", action="store_true",
                        help="one or two iterations per phase on a handful of frames (< 2 min)")
    parser.add_argument("--fresh", action="store_true",
                        help="delete this demo's data, checkpoints and results first")
    parser.add_argument("--workdir", default=".", help="root for dataset/, snapshot/, result/")
    parser.add_argument("--backbone", default="res2net50", choices=("res2net50", "resnet50"))
    parser.add_argument("--imagenet", default=None, metavar="PATH",
                        help="ImageNet backbone file; default: random initialisation")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    return parser


class PhaseTimer:
    """Runs named phases, prints a banner for each and keeps their wall-clock times."""

    def __init__(self) -> None:
        self.times: Dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], object]) -> object:
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        result = fn()
        self.times[name] = time.perf_counter() - start
        return result


def _paths(args: argparse.Namespace) -> Dict[str, Path]:
    root = Path(args.workdir)
    tag = "demo-quick" if args.quick else "demo"
    return {
        "data": root / "dataset" / ("ToyQuick" if args.quick else "Toy"),
        "snapshot": root / "snapshot",
        "run": root / "snapshot" / tag,
        "result": root / "result" / tag,
        "tag": Path(tag),
    }


def _stage_argv(args: argparse.Namespace, recipe: Recipe, paths: Dict[str, Path], stage: str) -> List[str]:
    argv = ["--train_type", stage, "--data_root", str(paths["data"]),
            "--save_path", str(paths["snapshot"]), "--run_name", str(paths["tag"]),
            "--backbone", args.backbone, "--epoch", str(recipe.epochs[stage]),
            "--decay_epoch", str(recipe.epochs[stage] - 1), "--lr", str(recipe.lr),
            "--batchsize", str(recipe.batchsize), "--trainsize", str(recipe.size), "--rates", "1",
            "--seed", str(args.seed), "--num_workers", "0", "--device", args.device,
            "--save_from_epoch", str(recipe.epochs[stage]), "--resume", "auto"]
    if recipe.max_samples:
        argv += ["--max_samples", str(recipe.max_samples)]
    argv += ["--imagenet", args.imagenet] if args.imagenet else ["--no_imagenet"]
    return argv


def _train_stage(args: argparse.Namespace, recipe: Recipe, paths: Dict[str, Path], stage: str) -> Path:
    """Train (or resume) one stage through ``train.main``; a finished stage is reused as is."""
    last = paths["run"] / stage / "last.pth"
    if is_finished(last):
        print(f"reusing the finished {stage} stage in {last.parent} (--fresh to retrain)")
    else:
        train.main(train.get_args_parser().parse_args(_stage_argv(args, recipe, paths, stage)))
    return last


def _save_untrained(args: argparse.Namespace, paths: Dict[str, Path]) -> Path:
    target = paths["run"] / "untrained.pth"
    if not target.exists():
        torch.manual_seed(args.seed)
        save_checkpoint(FSNet(backbone=args.backbone).state_dict(), target)
    return target


def _infer(args: argparse.Namespace, recipe: Recipe, paths: Dict[str, Path], checkpoint: Path,
           mode: str, out: Path) -> dict:
    argv = ["--model_path", str(checkpoint), "--dataset_path", str(paths["data"] / "TestSet"),
            "--datasets", TOY_DATASET, "--test_save", str(out), "--mode", mode,
            "--testsize", str(recipe.size), "--batchsize", "8", "--device", args.device,
            "--workers", "0", "--skip_existing"]
    return inference.main(inference.get_args_parser().parse_args(argv))


def _davis(paths: Dict[str, Path], pred: Path, name: str) -> dict:
    report = paths["result"] / f"davis16_{name}.json"
    code = davis16.main(["--pred", str(pred / TOY_DATASET), "--gt", str(paths["data"] / "TestSet" / TOY_DATASET),
                         "--json", str(report), "--workers", "1"])
    if code != 0:
        raise RuntimeError(f"eval.davis16 failed on {pred} (exit code {code})")
    return json.loads(report.read_text())


def _vsod(paths: Dict[str, Path], pred: Path) -> dict:
    report = paths["result"] / "vsod_trained.json"
    code = vsod.main(["--pred", str(pred), "--gt", str(paths["data"] / "TestSet"),
                      "--datasets", TOY_DATASET, "--json", str(report), "--workers", "1"])
    if code != 0:
        raise RuntimeError(f"eval.vsod failed on {pred} (exit code {code})")
    return json.loads(report.read_text())


def _overlay(paths: Dict[str, Path], pred: Path) -> Path:
    seq_dir = sorted((paths["data"] / "TestSet" / TOY_DATASET).iterdir())[0]
    masks = sorted((pred / TOY_DATASET / seq_dir.name).glob("*.png"))
    frames = [seq_dir / "Frame" / f"{mask.stem}.jpg" for mask in masks]
    out = paths["result"] / f"overlay_{seq_dir.name}.gif"
    write_overlay_gif(frames, masks, out)
    return out


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run every phase and return a summary (mean-J untrained/trained, tables, timings, paths)."""
    args = get_args_parser().parse_args(argv)
    recipe = QUICK_RECIPE if args.quick else FULL_RECIPE
    paths = _paths(args)
    if args.fresh:
        for key in ("data", "run", "result"):
            shutil.rmtree(paths[key], ignore_errors=True)
    paths["result"].mkdir(parents=True, exist_ok=True)
    timer = PhaseTimer()

    if not (paths["data"] / "toy.json").is_file():
        timer.run("toy data set + DIS optical flow",
                  lambda: make_toy_dataset(paths["data"], seed=args.seed, quick=args.quick, progress=True))
    else:
        print(f"reusing the toy data set in {paths['data']} (--fresh to regenerate)")
    checkpoints = {stage: timer.run(f"train: {stage}", lambda s=stage: _train_stage(args, recipe, paths, s))
                   for stage in STAGES}
    untrained = _save_untrained(args, paths)
    binary_untrained = paths["result"] / "untrained-binary"
    binary, saliency = paths["result"] / "binary", paths["result"] / "saliency"
    timer.run("inference: untrained model (binary)",
              lambda: _infer(args, recipe, paths, untrained, "binary", binary_untrained))
    timer.run("inference: finetuned model (binary)",
              lambda: _infer(args, recipe, paths, checkpoints["finetune"], "binary", binary))
    timer.run("inference: finetuned model (saliency)",
              lambda: _infer(args, recipe, paths, checkpoints["finetune"], "saliency", saliency))
    scores_untrained = timer.run("eval.davis16: untrained", lambda: _davis(paths, binary_untrained, "untrained"))
    scores = timer.run("eval.davis16: finetuned", lambda: _davis(paths, binary, "trained"))
    sod = timer.run("eval.vsod: finetuned", lambda: _vsod(paths, saliency))
    gif = timer.run("overlay GIF", lambda: _overlay(paths, binary))

    summary = {
        "mean_J_untrained": scores_untrained["overall"]["J"]["mean"],
        "mean_J_trained": scores["overall"]["J"]["mean"],
        "davis16": scores["overall"],
        "vsod": sod["datasets"][TOY_DATASET],
        "phase_seconds": timer.times,
        "result_dir": str(paths["result"]),
        "overlay_gif": str(gif),
        "checkpoints": {stage: str(path) for stage, path in checkpoints.items()},
    }
    _print_summary(summary)
    return summary


def _print_summary(summary: dict) -> None:
    print("\n=== summary ===")
    print(f"mean-J on the toy test set: untrained {summary['mean_J_untrained']:.3f}  "
          f"->  finetuned {summary['mean_J_trained']:.3f}")
    for name, seconds in summary["phase_seconds"].items():
        print(f"  {seconds:7.1f} s  {name}")
    print(f"  {sum(summary['phase_seconds'].values()):7.1f} s  total")
    print(f"results: {summary['result_dir']}\noverlay: {summary['overlay_gif']}")


if __name__ == "__main__":
    main()
