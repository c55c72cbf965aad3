"""Run the whole FSNet pipeline on generated data: toy set + flow -> three training stages ->
inference (binary and saliency) -> DAVIS-2016 and V-SOD evaluation, untrained vs trained.

    python demo.py            # the demo recipe (docs/demo.md: recipe, phases, measured times)
    python demo.py --quick    # every phase for one or two iterations (what the tests run)

Every phase calls the same library code as the command-line tools (``train.train``,
``inference.predict``, ``eval.davis16.evaluate``, ``eval.vsod.evaluate_datasets``); there is no second
training loop here. Re-running reuses what exists (toy data, stage checkpoints, masks) unless
``--fresh``; an interrupted run resumes from the last completed stage epoch.
"""
from __future__ import annotations

from utils.cli import install_interrupt_hook

install_interrupt_hook()  # first: a Ctrl-C while torch is still being imported is one error line too

import argparse
import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, TypeVar

import torch

import inference
import train
from eval import davis16, vsod
from eval.davis.report import summary_table, to_json
from eval.sod.report import format_table, schema, write_json
from lib.checkpoint import checkpoint_dict
from lib.fsnet import FSNet
from utils.torch_files import save_checkpoint
from utils.cli import MissingInputError, add_device_argument, make_parser, run_guarded
from utils.data.synthetic import RECORD as TOY_RECORD, make_toy_dataset, remove_toy_files
from utils.device import resolve_device
from utils.inference.overlay import write_overlay_gif
from utils.io import write_text
from utils.safety import check_outputs_apart, check_writable, output_lock, real_path
from utils.training.state import is_finished

STAGES = ("pretrain_rgb", "pretrain_flow", "finetune")
DEFAULT_BACKBONE = "res2net50"
RESULT_FOLDERS = ("untrained-binary", "binary", "saliency")  # the masks of the three inferences
TOY_DATASET = "Toy"
T = TypeVar("T")


@dataclass(frozen=True)
class Recipe:
    """The demo's training and inference settings (documented in docs/demo.md)."""

    size: int                 # train and test size (square, multiple of 32)
    epochs: Dict[str, int]    # per stage; the last epoch of each runs at lr/10
    batchsize: int
    lr: float
    max_samples: Optional[int]
    infer_batchsize: int      # frames per forward pass at inference


FULL_RECIPE = Recipe(size=64, epochs={"pretrain_rgb": 6, "pretrain_flow": 4, "finetune": 8},
                     batchsize=8, lr=1e-2, max_samples=None, infer_batchsize=12)
QUICK_RECIPE = Recipe(size=64, epochs={s: 1 for s in STAGES}, batchsize=2, lr=1e-2, max_samples=4,
                      infer_batchsize=4)


@dataclass(frozen=True)
class DemoPaths:
    """Where one demo run reads and writes (everything under ``--workdir``)."""

    data: Path       # the toy data set
    snapshot: Path   # train.py's --save_path
    tag: str         # train.py's --run_name
    result: Path     # masks, reports, overlay GIF

    @property
    def run(self) -> Path:
        """The stage checkpoints' parent: ``<snapshot>/<tag>``."""
        return self.snapshot / self.tag

    @property
    def test_root(self) -> Path:
        """The toy test set in the FSNet test layout: ``<data>/TestSet``."""
        return self.data / "TestSet"

    @classmethod
    def under(cls, workdir: Path, args: argparse.Namespace) -> "DemoPaths":
        """The demo's folders under ``workdir``. ``--quick`` runs, and runs with another
        ``--backbone``, ``--seed`` or ``--imagenet`` file, use their own folders, so that a
        re-run never reuses data, stages or masks made with other settings."""
        variant = "".join((
            f"-{args.backbone}" if args.backbone != DEFAULT_BACKBONE else "",
            f"-seed{args.seed}" if args.seed else "",
            f"-imagenet-{hashlib.sha1(str(real_path(args.imagenet)).encode()).hexdigest()[:8]}"
            if args.imagenet else ""))
        tag = ("demo-quick" if args.quick else "demo") + variant
        data = ("ToyQuick" if args.quick else "Toy") + (f"-seed{args.seed}" if args.seed else "")
        return cls(data=workdir / "dataset" / data, snapshot=workdir / "snapshot", tag=tag,
                   result=workdir / "result" / tag)


class PhaseTimer:
    """Runs named phases, prints a banner for each and keeps their wall-clock times."""

    def __init__(self) -> None:
        self.times: Dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` as the phase ``name``; return its result."""
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        result = fn()
        self.times[name] = time.perf_counter() - start
        print(f"--- {name}: {self.times[name]:.1f} s", flush=True)
        return result


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python demo.py``."""
    parser = make_parser("python demo.py", "FSNet end to end on a generated toy data set.")
    parser.add_argument("--quick", action="store_true",
                        help="one or two iterations per phase on a handful of frames (< 2 min)")
    parser.add_argument("--fresh", action="store_true",
                        help="delete this demo's data, checkpoints and results first")
    parser.add_argument("--workdir", default=".", help="root for dataset/, snapshot/, result/")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=("res2net50", "resnet50"),
                        help="backbone network")
    parser.add_argument("--imagenet", default=None, metavar="PATH",
                        help="ImageNet backbone file; default: random initialisation")
    add_device_argument(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of the toy data, init and data order")
    return parser


def check_inputs(args: argparse.Namespace, paths: DemoPaths) -> None:
    """Every check that can fail on the user's input, before any work starts."""
    resolve_device(args.device)
    if args.imagenet and not Path(args.imagenet).is_file():
        raise MissingInputError(f"--imagenet {args.imagenet} does not exist",
                                "pass an ImageNet backbone file, or drop --imagenet")
    check_outputs_apart({"--imagenet": args.imagenet}, {
        "the toy data set": paths.data, "the run folder": paths.run, "the result folder": paths.result})
    for folder in (paths.data.parent, paths.snapshot, paths.result):
        check_writable(folder)


def clear_outputs(paths: DemoPaths) -> None:
    """``--fresh``: delete what this demo wrote (the toy files recorded in its toy.json, the
    stage folders, the untrained checkpoint, masks, reports and GIFs); anything else stays."""
    remove_toy_files(paths.data)
    (paths.data / TOY_RECORD).unlink(missing_ok=True)  # so that the toy set is made again
    for folder in [paths.run / stage for stage in STAGES] + [paths.result / name for name in RESULT_FOLDERS]:
        shutil.rmtree(folder, ignore_errors=True)
    for path in [paths.run / "untrained.pth", *paths.result.glob("davis16_*.json"),
                 paths.result / "vsod_trained.json", *paths.result.glob("overlay_*.gif")]:
        path.unlink(missing_ok=True)


def make_data(args: argparse.Namespace, paths: DemoPaths) -> Path:
    """Write the toy data set (frames, masks, DIS flow) into ``paths.data``."""
    return make_toy_dataset(paths.data, seed=args.seed, quick=args.quick, progress=True)


def train_stage(args: argparse.Namespace, recipe: Recipe, paths: DemoPaths, stage: str) -> None:
    """Train (or resume) one stage with train.py's library entry (writes ``<run>/<stage>/``)."""
    epochs = recipe.epochs[stage]
    train.train(train.TrainConfig(
        train_type=stage, data_root=str(paths.data), save_path=str(paths.snapshot),
        run_name=paths.tag, backbone=args.backbone, epoch=epochs, decay_epoch=epochs - 1,
        lr=recipe.lr, batchsize=recipe.batchsize, trainsize=recipe.size, rates=[1.0],
        seed=args.seed, workers=0, channels_last=True, device=args.device,
        save_from_epoch=epochs, resume="auto",
        max_samples=recipe.max_samples, imagenet=args.imagenet, no_imagenet=not args.imagenet))


def predict(args: argparse.Namespace, recipe: Recipe, paths: DemoPaths, checkpoint: Path,
            mode: str, out: Path) -> None:
    """Write ``mode`` maps of the toy test set into ``out`` with inference.py's library entry
    (plain forward: no export or tracing cost for 36 tiny frames)."""
    inference.predict(inference.InferenceConfig(
        model_path=str(checkpoint), dataset_path=str(paths.test_root), datasets=[TOY_DATASET],
        test_save=str(out), mode=mode, testsize=recipe.size, batchsize=recipe.infer_batchsize,
        device=args.device, workers=0, skip_existing=True, backend="plain"))


def trained_stages(args: argparse.Namespace, recipe: Recipe, paths: DemoPaths,
                   timer: PhaseTimer) -> Dict[str, Path]:
    """The three stages' ``last.pth``, training the stages that are not finished yet."""
    checkpoints = {stage: paths.run / stage / "last.pth" for stage in STAGES}
    for stage, last in checkpoints.items():
        if is_finished(last):
            print(f"reusing the finished {stage} stage in {last.parent} (--fresh to retrain)")
        else:
            timer.run(f"train: {stage}", lambda s=stage: train_stage(args, recipe, paths, s))
    return checkpoints


def save_untrained(args: argparse.Namespace, paths: DemoPaths) -> Path:
    """The seeded, untrained FSNet as a checkpoint (the "before" of the comparison)."""
    target = paths.run / "untrained.pth"
    if not target.exists():
        torch.manual_seed(args.seed)
        save_checkpoint(checkpoint_dict(FSNet(backbone=args.backbone)), target)
    return target


def score_davis(paths: DemoPaths, pred: Path, name: str) -> dict:
    """DAVIS-2016 J/F/T of binary masks ``pred`` (report written to ``davis16_<name>.json``)."""
    report = davis16.evaluate(pred / TOY_DATASET, paths.test_root / TOY_DATASET, workers=1)
    write_text(paths.result / f"davis16_{name}.json", to_json(report))
    print(summary_table(report))
    return report


def score_vsod(paths: DemoPaths, pred: Path) -> dict:
    """V-SOD S/E/F/MAE of saliency maps ``pred`` on the toy set (report: ``vsod_trained.json``)."""
    results = vsod.evaluate_datasets(pred, paths.test_root, [TOY_DATASET], workers=1)
    write_json(results, paths.result / "vsod_trained.json")
    print(format_table(results))
    return schema(results)["datasets"][TOY_DATASET]


def write_overlay(paths: DemoPaths, pred: Path) -> Path:
    """Overlay GIF of the first test sequence's predicted masks over its frames."""
    seq_dir = sorted((paths.test_root / TOY_DATASET).iterdir())[0]
    masks = sorted((pred / TOY_DATASET / seq_dir.name).glob("*.png"))
    frames = [seq_dir / "Frame" / f"{mask.stem}.jpg" for mask in masks]
    out = paths.result / f"overlay_{seq_dir.name}.gif"
    write_overlay_gif(frames, masks, out)
    return out


def run_demo(args: argparse.Namespace) -> dict:
    """Run every phase and return a summary (mean-J untrained/trained, tables, timings, paths)."""
    recipe = QUICK_RECIPE if args.quick else FULL_RECIPE
    paths = DemoPaths.under(Path(args.workdir), args)
    check_inputs(args, paths)
    with output_lock(paths.result, "demo.py"):
        if args.fresh:
            clear_outputs(paths)
        return _run_phases(args, recipe, paths)


def _run_phases(args: argparse.Namespace, recipe: Recipe, paths: DemoPaths) -> dict:
    timer, start = PhaseTimer(), time.perf_counter()
    if (paths.data / TOY_RECORD).is_file():
        print(f"reusing the toy data set in {paths.data} (--fresh to regenerate)")
    else:
        timer.run("toy data set + DIS optical flow", lambda: make_data(args, paths))
    checkpoints = trained_stages(args, recipe, paths, timer)
    untrained = save_untrained(args, paths)
    binary_untrained, binary, saliency = (paths.result / name for name in RESULT_FOLDERS)
    for name, checkpoint, mode, out in (("untrained model (binary)", untrained, "binary", binary_untrained),
                                        ("finetuned model (binary)", checkpoints["finetune"], "binary", binary),
                                        ("finetuned model (saliency)", checkpoints["finetune"], "saliency",
                                         saliency)):
        timer.run(f"inference: {name}", lambda c=checkpoint, m=mode, o=out: predict(args, recipe, paths, c, m, o))
    scores_untrained = timer.run("eval.davis16: untrained", lambda: score_davis(paths, binary_untrained, "untrained"))
    scores = timer.run("eval.davis16: finetuned", lambda: score_davis(paths, binary, "trained"))
    sod = timer.run("eval.vsod: finetuned", lambda: score_vsod(paths, saliency))
    gif = timer.run("overlay GIF", lambda: write_overlay(paths, binary))
    summary = {
        "mean_J_untrained": scores_untrained["overall"]["J"]["mean"],
        "mean_J_trained": scores["overall"]["J"]["mean"],
        "davis16": scores["overall"],
        "vsod": sod,
        "phase_seconds": timer.times,
        "wall_seconds": time.perf_counter() - start,
        "result_dir": str(paths.result),
        "overlay_gif": str(gif),
        "checkpoints": {stage: str(path) for stage, path in checkpoints.items()},
    }
    print_summary(summary)
    return summary


def print_summary(summary: dict) -> None:
    """The closing lines: mean-J before/after, every phase's time, where the results are."""
    print("\n=== summary ===")
    print(f"mean-J on the toy test set: untrained {summary['mean_J_untrained']:.3f}  "
          f"->  finetuned {summary['mean_J_trained']:.3f}")
    for name, seconds in summary["phase_seconds"].items():
        print(f"  {seconds:7.1f} s  {name}")
    print(f"  {summary['wall_seconds']:7.1f} s  total (wall clock, after start-up)")
    print(f"results: {summary['result_dir']}\noverlay: {summary['overlay_gif']}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input)."""
    args = get_args_parser().parse_args(argv)
    return run_guarded(lambda: run_demo(args), args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
