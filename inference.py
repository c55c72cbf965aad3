"""Write FSNet masks for the benchmark test sets or for your own video.

Test sets (official defaults)::

    python inference.py [--model_path snapshot/FSNet/2021-ICCV-FSNet-20epoch-new.pth]
        [--dataset_path dataset/TestSet] [--datasets DAVIS FBMS ...] [--test_save result/FSNet]
        [--mode saliency|binary] [--threshold 0.5] [--crf] [--skip_existing]

writes ``<test_save>/<Dataset>/<seq>/<frame>.png`` at each frame's original size.

Own video (a video file or a folder of frames)::

    python inference.py --video clip.mp4 --mode binary

extracts the frames, computes flow (``utils.flow.generate``, last frame by backward flow so every frame
gets a mask), and writes ``<test_save>/Video/<name>/<frame>.png`` plus ``<test_save>/Video/<name>.gif``
(mask tinted over the frames). See docs/inference.md for the two modes, the
last-frame policy, the CRF option, the backends and the checks made before any work.

Library use: ``predict(InferenceConfig(...)) -> InferenceResult``; command line:
``main(argv) -> exit status``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from utils.cli import (BadInputError, MissingInputError, OutputExistsError, UserError, make_parser,
                       run_guarded)
from utils.data.dataset import TestDataset
from utils.data.images import list_images
from utils.data.verify import verify_samples
from utils.device import resolve_device
from utils.flow.generate import METHODS as FLOW_METHODS
from utils.flow.generate import RAFT_MODELS, extract_frames, generate_flow
from utils.inference.overlay import write_overlay_gif
from utils.inference.postprocess import MODES
from utils.inference.predict import (AMP_DTYPES, BACKENDS, PredictionStats, PredictOptions,
                                     check_no_empty_sequence, load_predictor, output_path,
                                     predict_dataset, require_checkpoint, resolve_backend,
                                     resolve_batchsize)
from utils.io import save_json
from utils.safety import check_outputs_apart, output_lock, real_path, record_source, recorded_source

DEFAULT_DATASETS = ("DAVIS", "FBMS", "SegTrack-V2", "MCL", "DAVSOD",
                    "DAVSOD-Easy-35", "DAVSOD-Normal-25", "DAVSOD-Difficult-20")
DEFAULT_MODEL = "./snapshot/FSNet/2021-ICCV-FSNet-20epoch-new.pth"
VIDEO_DATASET = "Video"
VIDEO_FLOW_FOLDER = "Flow"


@dataclass
class InferenceConfig:
    """Everything one inference run needs (the command-line flags of ``inference.py``)."""

    model_path: str = DEFAULT_MODEL
    backbone: str = "auto"
    dataset_path: str = "./dataset/TestSet/"
    datasets: Optional[List[str]] = None
    test_save: str = "./result/FSNet/"
    testsize: int = 352
    batchsize: Union[int, str] = "auto"
    device: str = "auto"
    backend: str = "auto"
    amp: str = "off"
    workers: Union[int, str] = "auto"
    no_cache: bool = False
    mode: str = "saliency"
    threshold: float = 0.5
    crf: bool = False
    flow_folder: str = "OF_FlowNet2"
    frame_folder: str = "Frame"
    skip_existing: bool = False
    overwrite: bool = False
    video: Optional[str] = None
    flow_method: str = "dis"
    raft_weights: Optional[str] = None
    raft_model: str = "raft_large"
    show_progress: bool = True


@dataclass
class InferenceResult:
    """What a run did; :meth:`summary` is the JSON-able dict ``inference.py`` prints."""

    output_dir: str
    mode: str
    backbone: str
    device: str
    backend: str
    batchsize: int
    amp: str
    datasets: List[Dict[str, object]]
    absent_datasets: List[str]
    written: int
    unpredicted: List[list]
    model_fps: Optional[float]
    end_to_end_fps: Optional[float]
    overlay_gif: Optional[str] = None
    cache: Optional[str] = None  # the onnx backend's export cache: hit, miss or off

    @property
    def fast(self) -> bool:
        """Whether the BN-folded appearance-only network ran (any backend but ``plain``)."""
        return self.backend != "plain"

    def summary(self) -> Dict[str, object]:
        """The run summary as a dict (``overlay_gif`` only for ``--video``)."""
        out = {**asdict(self), "fast": self.fast}
        if self.overlay_gif is None:
            del out["overlay_gif"]
        return out


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python inference.py``."""
    parser = make_parser("python inference.py", "FSNet inference: masks for test sets or a video.")
    defaults = InferenceConfig()
    parser.add_argument("--model_path", default=defaults.model_path,
                        help="FSNet checkpoint (bare state_dict or train.py checkpoint)")
    parser.add_argument("--backbone", choices=("auto", "resnet50", "res2net50"), default="auto",
                        help="expected backbone; auto = detected from the checkpoint")
    parser.add_argument("--dataset_path", default=defaults.dataset_path,
                        help="folder holding <Dataset>/<seq>/{Frame,<flow_folder>}")
    parser.add_argument("--datasets", nargs="+", default=None,
                        help="datasets to run (default: the official list, those present, then any "
                             "other dataset folder found under --dataset_path)")
    parser.add_argument("--test_save", default=defaults.test_save, help="output root")
    parser.add_argument("--testsize", type=int, default=defaults.testsize,
                        help="network input size (multiple of 32)")
    parser.add_argument("--batchsize", default=defaults.batchsize,
                        help="frames per forward pass; auto = 1 on the CPU, 32 on CUDA")
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--backend", choices=BACKENDS, default=defaults.backend,
                        help="plain: the unmodified FSNet forward; eager/jit: BN-folded appearance "
                             "network op by op / TorchScript; onnx: it in ONNX Runtime (CPU, "
                             "pip install onnx onnxruntime); auto: onnx if installed, else jit, on the "
                             "CPU; eager on CUDA or with --amp")
    parser.add_argument("--no_fast", dest="backend", action="store_const", const="plain",
                        help="alias of --backend plain")
    parser.add_argument("--amp", nargs="?", const="bf16", choices=tuple(AMP_DTYPES),
                        default=defaults.amp,
                        help="autocast precision of the forward pass (bare --amp = bf16)")
    parser.add_argument("--workers", "--num_workers", dest="workers", default=defaults.workers,
                        help="DataLoader worker processes (0 = load in the main process); "
                             "auto = 1 on the CPU, min(8, cores) on CUDA")
    parser.add_argument("--no_cache", action="store_true",
                        help="--backend onnx: export the checkpoint again instead of reusing the "
                             "export cached in the torch hub folder (fsnet/onnx/)")
    parser.add_argument("--mode", choices=MODES, default=defaults.mode,
                        help="saliency: official min-max normalised 8-bit map; binary: 0/255 mask")
    parser.add_argument("--threshold", type=float, default=defaults.threshold,
                        help="binary mode: foreground where sigmoid > threshold (before normalisation)")
    parser.add_argument("--crf", action="store_true", help="DenseCRF refinement (needs pydensecrf2)")
    parser.add_argument("--flow_folder", default=defaults.flow_folder,
                        help="flow folder inside each sequence")
    parser.add_argument("--frame_folder", default=defaults.frame_folder,
                        help="frame folder inside each sequence")
    parser.add_argument("--skip_existing", action="store_true", help="resume: keep PNGs already written")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a --test_save that holds the maps of another job "
                             "(other checkpoint, inputs, mode, size, threshold or CRF)")
    parser.add_argument("--video", default=None,
                        help="a video file or a folder of frames: flow, masks and an overlay GIF")
    parser.add_argument("--flow_method", choices=FLOW_METHODS, default=defaults.flow_method,
                        help="--video: flow method")
    parser.add_argument("--raft_weights", default=None, help="--video with --flow_method raft: weights")
    parser.add_argument("--raft_model", choices=RAFT_MODELS, default=defaults.raft_model,
                        help="--video with --flow_method raft: which torchvision RAFT the weights are for")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    return parser


def config_from_args(args: argparse.Namespace) -> InferenceConfig:
    """The :class:`InferenceConfig` of parsed command-line arguments."""
    values = {f.name: getattr(args, f.name) for f in fields(InferenceConfig) if hasattr(args, f.name)}
    return InferenceConfig(**values, show_progress=not args.no_progress)


def _is_dataset_dir(folder: Path, frame_folder: str) -> bool:
    return folder.is_dir() and any((seq / frame_folder).is_dir() for seq in folder.iterdir())


def resolve_datasets(dataset_path: Path, requested: Optional[Sequence[str]],
                     frame_folder: str = "Frame") -> Tuple[List[str], List[str]]:
    """Datasets to run and the official defaults that are absent.

    Explicit ``requested`` names must all exist. Without them: the official list's present
    members in official order, then any other dataset folder under ``dataset_path`` (sorted).
    """
    if not dataset_path.is_dir():
        raise MissingInputError(
            f"--dataset_path {dataset_path} does not exist: put the test sets under "
            f"dataset/TestSet/<Dataset>/<seq>/{{Frame,OF_FlowNet2}} or pass --dataset_path.")
    if requested:
        missing = [name for name in requested if not (dataset_path / name).is_dir()]
        if missing:
            found = sorted(d.name for d in dataset_path.iterdir() if _is_dataset_dir(d, frame_folder))
            raise MissingInputError(
                f"Dataset folder(s) not found under {dataset_path}: {', '.join(missing)}. "
                f"Available: {', '.join(found) or 'none'}; fix --datasets or --dataset_path.")
        return list(requested), []
    present = [name for name in DEFAULT_DATASETS if _is_dataset_dir(dataset_path / name, frame_folder)]
    others = sorted(d.name for d in dataset_path.iterdir()
                    if d.name not in DEFAULT_DATASETS and _is_dataset_dir(d, frame_folder))
    absent = [name for name in DEFAULT_DATASETS if name not in present]
    if not present and not others:
        hint = (f" {dataset_path} itself looks like one dataset: pass its parent as --dataset_path."
                if _is_dataset_dir(dataset_path, frame_folder) else "")
        raise MissingInputError(
            f"No test set found under {dataset_path} (looked for {', '.join(DEFAULT_DATASETS)} and any "
            f"<Dataset>/<seq>/{frame_folder}/ folder).{hint}")
    return present + others, absent


def _video_source(video: Path) -> Dict[str, object]:
    """What identifies a ``--video`` input: its path plus its size/mtime (file) or frame names (folder)."""
    if video.is_dir():
        return {"path": str(video.resolve()), "frames": [p.name for p in list_images(video).values()]}
    stat = video.stat()
    return {"path": str(video.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def prepare_video(video: Path, work_dir: Path, method: str, raft_weights: Optional[str],
                  skip_existing: bool, progress: bool, raft_model: str = "raft_large") -> Path:
    """Lay out ``work_dir/{Frame,Flow}`` for a video file or a frame folder; return ``work_dir``.

    A frame folder is linked, never modified; a video file is decoded into ``Frame``. Flow uses
    the last frame's backward flow so that every frame gets a mask. Without ``skip_existing`` the
    work folder (ours, under ``--test_save``) is rebuilt; with it, it is reused, but only if
    ``source.json`` shows it was made from this very input.
    """
    source, record = _video_source(video), work_dir / "source.json"
    if video.is_dir() and not source["frames"]:
        raise BadInputError(f"--video folder {video} holds no frame images (jpg/png/bmp).")
    if skip_existing and work_dir.exists():
        previous = json.loads(record.read_text()) if record.is_file() else {"path": "an unknown input"}
        if previous != source:
            raise BadInputError(
                f"--skip_existing: {work_dir} was made from {previous['path']}, which differs from "
                f"{video} (or has changed since): rerun without --skip_existing to rebuild it.")
    elif work_dir.exists():
        shutil.rmtree(work_dir)  # removes a Frame link, never what it points to
    save_json(source, record)
    frame_dir = work_dir / "Frame"
    if video.is_dir():
        if not frame_dir.exists():
            frame_dir.symlink_to(video.resolve(), target_is_directory=True)
    elif not (frame_dir.is_dir() and list_images(frame_dir)):
        extract_frames(video, frame_dir)
    generate_flow(frame_dir, work_dir / VIDEO_FLOW_FOLDER, method=method, last_frame="backward",
                  skip_existing=skip_existing, raft_weights=raft_weights, raft_model=raft_model,
                  progress=progress)
    return work_dir


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 2)


def _report(name: str, stats: PredictionStats) -> Dict[str, object]:
    return {
        "written": len(stats.written), "skipped_existing": stats.skipped_existing,
        "unpredicted": [list(u) for u in stats.unpredicted], "frames_predicted": stats.frames,
        "model_fps": _round(stats.model_fps), "end_to_end_fps": _round(stats.end_to_end_fps),
        "dataset": name,
    }


def _print_summary(summary: Dict[str, object]) -> None:
    for item in summary["datasets"]:
        print(f"[{item['dataset']}] {item['written']} written, {item['skipped_existing']} already there, "
              f"model {item['model_fps']} frames/s, end-to-end {item['end_to_end_fps']} frames/s")
    unpredicted = summary["unpredicted"]
    if unpredicted:
        print(f"{len(unpredicted)} frame(s) not predicted:")
        for dataset, sequence, frame, reason in unpredicted:
            print(f"  {dataset}/{sequence}/{frame}: {reason}")
    print(f"Total: {summary['written']} maps in {summary['output_dir']} "
          f"(model {summary['model_fps']} frames/s, end-to-end {summary['end_to_end_fps']} frames/s)")
    if summary.get("cache"):
        print(f"ONNX export cache: {summary['cache']}")
    if "overlay_gif" in summary:
        print(f"Overlay GIF: {summary['overlay_gif']}")


def _video_job(config: InferenceConfig) -> Tuple[str, TestDataset]:
    video = Path(config.video)
    name = video.stem if video.is_file() else video.resolve().name
    work_dir = prepare_video(video, Path(config.test_save) / f"{VIDEO_DATASET}-input" / name,
                             config.flow_method, config.raft_weights, config.skip_existing,
                             config.show_progress, config.raft_model)
    return VIDEO_DATASET, TestDataset(work_dir, config.testsize, VIDEO_FLOW_FOLDER, "Frame")


def _dataset_jobs(config: InferenceConfig) -> Tuple[List[Tuple[str, TestDataset]], List[str]]:
    """Every dataset's frame/flow pairs, listed before any work; all broken datasets in one error."""
    dataset_path = Path(config.dataset_path)
    names, absent = resolve_datasets(dataset_path, config.datasets, config.frame_folder)
    if absent:
        print(f"Official test sets not found under {dataset_path} (skipped): {', '.join(absent)}")
    jobs, problems = [], []
    for name in names:
        try:
            dataset = TestDataset(dataset_path / name, config.testsize, config.flow_folder,
                                  config.frame_folder)
            check_no_empty_sequence(dataset, dataset_path / name)
        except UserError as error:
            problems.append(str(error))
            continue
        jobs.append((name, dataset))
    if len(problems) == 1:
        raise BadInputError(problems[0])
    if problems:
        raise BadInputError(f"{len(problems)} datasets cannot be read: " + " | ".join(problems))
    verify_samples([{"frame": frame, "flow": flow} for _, dataset in jobs
                    for _, _, frame, flow in dataset.samples], same_size=False, what="test")
    return jobs, absent


def _write_video_overlay(dataset: TestDataset, masks_dir: Path) -> Path:
    """Overlay GIF of the predicted frames (in order) of the single video sequence; a frame whose
    mask file is missing is shown untinted."""
    sequence = dataset.sequences[0]
    frame_paths = [frame_path for _, _, frame_path, _ in dataset.samples]
    masks = [output_path(masks_dir, sequence, stem) for _, stem, _, _ in dataset.samples]
    gif = masks_dir / f"{sequence}.gif"
    write_overlay_gif(frame_paths, [m if m.is_file() else None for m in masks], gif)
    return gif


def _resolve_workers(workers: Union[int, str], device: torch.device) -> int:
    if workers == "auto":
        return 1 if device.type == "cpu" else min(8, os.cpu_count() or 1)
    try:
        value = int(workers)
    except (TypeError, ValueError):
        value = -1
    if value < 0:
        raise BadInputError(f"--workers {workers!r} is not a whole number >= 0",
                            "use auto, 0 (load in the main process) or a small number such as 1")
    return value


def _check_config(config: InferenceConfig) -> None:
    """Argument checks that need no file and no model."""
    if config.testsize < 32 or config.testsize % 32:
        raise BadInputError(f"--testsize {config.testsize} is not a positive multiple of 32",
                            f"use e.g. {max(32, round(config.testsize / 32) * 32)}")
    if not 0.0 <= config.threshold <= 1.0:
        raise BadInputError(f"--threshold {config.threshold} is outside [0, 1]", "use e.g. 0.5")
    if config.amp not in AMP_DTYPES:
        raise BadInputError(f"--amp {config.amp!r} is unknown", f"use one of {', '.join(AMP_DTYPES)}")
    require_checkpoint(config.model_path)
    if config.video and not Path(config.video).exists():
        raise MissingInputError(f"--video {config.video} does not exist",
                                "pass a video file or a folder of frames")
    if config.crf:
        from utils.inference.crf import require_densecrf
        try:
            require_densecrf()
        except ImportError as error:
            raise UserError(str(error)) from error


def _source_record(config: InferenceConfig, inputs: Dict[str, object]) -> Dict[str, object]:
    """What makes this job's maps: checkpoint, inputs (real paths) and the settings that change them."""
    return {"tool": "inference.py", "model_path": str(real_path(config.model_path)),
            "inputs": {flag: str(real_path(path)) for flag, path in inputs.items()},
            "mode": config.mode, "testsize": config.testsize, "threshold": config.threshold,
            "crf": config.crf}


def _check_owner(test_save: Path, source: Dict[str, object], overwrite: bool) -> None:
    """Refuse a ``--test_save`` holding another job's maps unless ``overwrite``."""
    previous = recorded_source(test_save)
    if previous is None or previous == source or overwrite:
        return
    changed = sorted(k for k in set(source) | set(previous) if source.get(k) != previous.get(k))
    raise OutputExistsError(f"--test_save {test_save} holds the maps of another job (it differs in "
                            f"{', '.join(changed)})",
                            "choose another --test_save, or pass --overwrite to write over them")


def predict(config: InferenceConfig) -> InferenceResult:
    """Run inference as configured; return (and print) what it did.

    Before any work: arguments, device and backend, that ``--test_save`` lies apart from every
    input, every frame/flow pair of every dataset, the output folder's lock (a second run into it
    stops at once) and the checkpoint (NaN/inf weights are refused).
    """
    _check_config(config)
    device = resolve_device(config.device)
    backend = resolve_backend(config.backend, device, config.amp)
    batchsize = resolve_batchsize(config.batchsize, device)
    workers = _resolve_workers(config.workers, device)
    test_save = Path(config.test_save)
    inputs = {"--video": config.video} if config.video else {"--dataset_path": config.dataset_path}
    check_outputs_apart(inputs, {"--test_save": test_save})
    blocker = next((p for p in (test_save, *test_save.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise UserError(f"--test_save {test_save} cannot be made: {blocker} is a file",
                        "choose an output folder path")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one input size throughout: let cuDNN pick kernels
    jobs, absent = ([], []) if config.video else _dataset_jobs(config)
    source = _source_record(config, inputs)
    _check_owner(test_save, source, config.overwrite)
    with output_lock(test_save, "inference.py"):
        loaded = load_predictor(config.model_path, device, config.backbone, backend,
                                config.testsize, cache=not config.no_cache, amp=config.amp)
        predictor, backbone = loaded.predictor, loaded.backbone
        record_source(test_save, source)  # the checkpoint is usable: these maps are now its
        if config.video:
            jobs = [_video_job(config)]
        cache = "" if loaded.cache is None else f" (export cache {loaded.cache})"
        print(f"inference: backend {backend}{cache}, batch {batchsize}, amp {config.amp}, device {device}, "
              f"{backbone}, {sum(len(d) for _, d in jobs)} frames, mode {config.mode}")
        options = PredictOptions(mode=config.mode, threshold=config.threshold, batchsize=batchsize,
                                 workers=workers, amp=config.amp, crf=config.crf,
                                 skip_existing=config.skip_existing, fixed_batch=backend == "jit",
                                 # ONNX Runtime runs the network on its own threads; torch's
                                 # post-processing must not take (and spin on) the same cores.
                                 torch_threads=1 if backend == "onnx" else None,
                                 show_progress=config.show_progress)
        reports, unpredicted, total = [], [], PredictionStats()
        for name, dataset in jobs:
            stats = predict_dataset(predictor, dataset, test_save / name, device, options,
                                    desc=f"{name} ({config.mode})")
            reports.append(_report(name, stats))
            unpredicted += [[name, *u] for u in stats.unpredicted]
            total.frames += stats.frames
            total.model_seconds += stats.model_seconds
            total.wall_seconds += stats.wall_seconds
            total.written += stats.written
        gif = _write_video_overlay(jobs[0][1], test_save / VIDEO_DATASET) if config.video else None
    result = InferenceResult(
        output_dir=str(test_save), mode=config.mode, backbone=backbone, device=str(device),
        backend=backend, batchsize=batchsize, amp=config.amp, datasets=reports,
        absent_datasets=absent, written=len(total.written), unpredicted=unpredicted,
        model_fps=_round(total.model_fps), end_to_end_fps=_round(total.end_to_end_fps),
        overlay_gif=None if gif is None else str(gif), cache=loaded.cache)
    _print_summary(result.summary())
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry: exit status 0, or 2 after one ``error:`` line for bad input."""
    args = get_args_parser().parse_args(argv)
    return run_guarded(lambda: predict(config_from_args(args)), args.debug)


if __name__ == "__main__":
    sys.exit(main())
