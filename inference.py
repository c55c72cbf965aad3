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
last-frame policy and the CRF option.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from utils.data.dataset import TestDataset
from utils.io import save_json
from utils.flow.generate import METHODS as FLOW_METHODS
from utils.flow.generate import RAFT_MODELS, extract_frames, generate_flow
from utils.data.images import list_images
from utils.inference.overlay import write_overlay_gif
from utils.device import resolve_device
from utils.inference.postprocess import MODES
from utils.inference.predict import (PredictionStats, check_no_empty_sequence, check_writable, load_predictor,
                           output_path, predict_dataset)

DEFAULT_DATASETS = ("DAVIS", "FBMS", "SegTrack-V2", "MCL", "DAVSOD",
                    "DAVSOD-Easy-35", "DAVSOD-Normal-25", "DAVSOD-Difficult-20")
VIDEO_DATASET = "Video"
VIDEO_FLOW_FOLDER = "Flow"


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python inference.py``."""
    parser = argparse.ArgumentParser(description="FSNet inference: masks for test sets or a video.")
    parser.add_argument("--model_path", default="./snapshot/FSNet/2021-ICCV-FSNet-20epoch-new.pth",
                        help="FSNet checkpoint (bare state_dict or train.py checkpoint)")
    parser.add_argument("--backbone", choices=("auto", "resnet50", "res2net50"), default="auto",
                        help="expected backbone; auto = detected from the checkpoint")
    parser.add_argument("--dataset_path", default="./dataset/TestSet/",
                        help="folder holding <Dataset>/<seq>/{Frame,<flow_folder>}")
    parser.add_argument("--datasets", nargs="+", default=None,
                        help="datasets to run (default: the official list, those present, then any "
                             "other dataset folder found under --dataset_path)")
    parser.add_argument("--test_save", default="./result/FSNet/", help="output root")
    parser.add_argument("--testsize", type=int, default=352, help="network input size (multiple of 32)")
    parser.add_argument("--batchsize", type=int, default=32)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast for the forward pass")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="DataLoader worker processes (0 = load in the main process)")
    parser.add_argument("--mode", choices=MODES, default="saliency",
                        help="saliency: official min-max normalised 8-bit map; binary: 0/255 mask")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="binary mode: foreground where sigmoid > threshold (before normalisation)")
    parser.add_argument("--crf", action="store_true", help="DenseCRF refinement (needs pydensecrf2)")
    parser.add_argument("--flow_folder", default="OF_FlowNet2", help="flow folder inside each sequence")
    parser.add_argument("--frame_folder", default="Frame", help="frame folder inside each sequence")
    parser.add_argument("--skip_existing", action="store_true", help="resume: keep PNGs already written")
    parser.add_argument("--no_fast", action="store_true",
                        help="plain FSNet forward instead of the fast path (BN folded, pred_s only)")
    parser.add_argument("--video", default=None,
                        help="a video file or a folder of frames: flow, masks and an overlay GIF")
    parser.add_argument("--flow_method", choices=FLOW_METHODS, default="dis", help="--video: flow method")
    parser.add_argument("--raft_weights", default=None, help="--video with --flow_method raft: weights")
    parser.add_argument("--raft_model", choices=RAFT_MODELS, default="raft_large",
                        help="--video with --flow_method raft: which torchvision RAFT the weights are for")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    return parser


def _is_dataset_dir(folder: Path, frame_folder: str) -> bool:
    return folder.is_dir() and any((seq / frame_folder).is_dir() for seq in folder.iterdir())


def resolve_datasets(dataset_path: Path, requested: Optional[Sequence[str]],
                     frame_folder: str = "Frame") -> Tuple[List[str], List[str]]:
    """Datasets to run and the official defaults that are absent.

    Explicit ``requested`` names must all exist. Without them: the official list's present
    members in official order, then any other dataset folder under ``dataset_path`` (sorted).
    """
    if not dataset_path.is_dir():
        raise FileNotFoundError(
            f"--dataset_path {dataset_path} does not exist: put the test sets under "
            f"dataset/TestSet/<Dataset>/<seq>/{{Frame,OF_FlowNet2}} or pass --dataset_path.")
    if requested:
        missing = [name for name in requested if not (dataset_path / name).is_dir()]
        if missing:
            found = sorted(d.name for d in dataset_path.iterdir() if _is_dataset_dir(d, frame_folder))
            raise FileNotFoundError(
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
        raise FileNotFoundError(
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
        raise ValueError(f"--video folder {video} holds no frame images (jpg/png/bmp).")
    if skip_existing and work_dir.exists():
        previous = json.loads(record.read_text()) if record.is_file() else {"path": "an unknown input"}
        if previous != source:
            raise ValueError(
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
    if "overlay_gif" in summary:
        print(f"Overlay GIF: {summary['overlay_gif']}")


def _video_job(args: argparse.Namespace, test_save: Path, progress: bool) -> Tuple[str, TestDataset]:
    video = Path(args.video)
    name = video.stem if video.is_file() else video.resolve().name
    work_dir = prepare_video(video, test_save / f"{VIDEO_DATASET}-input" / name, args.flow_method,
                             args.raft_weights, args.skip_existing, progress, args.raft_model)
    return VIDEO_DATASET, TestDataset(work_dir, args.testsize, VIDEO_FLOW_FOLDER, "Frame")


def _dataset_jobs(args: argparse.Namespace) -> Tuple[List[Tuple[str, TestDataset]], List[str]]:
    dataset_path = Path(args.dataset_path)
    names, absent = resolve_datasets(dataset_path, args.datasets, args.frame_folder)
    if absent:
        print(f"Official test sets not found under {dataset_path} (skipped): {', '.join(absent)}")
    jobs = []
    for name in names:
        dataset = TestDataset(dataset_path / name, args.testsize, args.flow_folder, args.frame_folder)
        check_no_empty_sequence(dataset, dataset_path / name)
        jobs.append((name, dataset))
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


def main(args: argparse.Namespace) -> dict:
    """Run inference as configured by ``args``; return (and print) the summary.

    Cheap checks (arguments, output folder, data-set layout) come before the model is loaded.
    """
    if args.testsize % 32:
        raise ValueError(f"--testsize {args.testsize} is not a multiple of 32: use e.g. "
                         f"{max(32, round(args.testsize / 32) * 32)}.")
    if args.crf:
        from utils.inference.crf import require_densecrf
        require_densecrf()
    progress = not args.no_progress
    test_save = Path(args.test_save)
    if args.video and not Path(args.video).exists():
        raise FileNotFoundError(
            f"--video {args.video} does not exist: pass a video file or a folder of frames.")
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one input size throughout: let cuDNN pick kernels
    jobs, absent = ([], []) if args.video else _dataset_jobs(args)
    check_writable(test_save)
    predictor, backbone = load_predictor(args.model_path, device, args.backbone, fast=not args.no_fast)
    if args.video:
        jobs = [_video_job(args, test_save, progress)]

    reports, unpredicted, total = [], [], PredictionStats()
    for name, dataset in jobs:
        stats = predict_dataset(
            predictor, dataset, test_save / name, device, mode=args.mode, threshold=args.threshold,
            batchsize=args.batchsize, workers=args.workers, amp=args.amp, crf=args.crf,
            skip_existing=args.skip_existing, desc=f"{name} ({args.mode})", progress=progress)
        reports.append(_report(name, stats))
        unpredicted += [[name, *u] for u in stats.unpredicted]
        total.frames += stats.frames
        total.model_seconds += stats.model_seconds
        total.wall_seconds += stats.wall_seconds
        total.written += stats.written

    summary: Dict[str, object] = {
        "output_dir": str(test_save), "mode": args.mode, "backbone": backbone, "device": str(device),
        "fast": not args.no_fast, "datasets": reports, "absent_datasets": absent,
        "written": len(total.written), "unpredicted": unpredicted,
        "model_fps": _round(total.model_fps), "end_to_end_fps": _round(total.end_to_end_fps),
    }
    if args.video:
        summary["overlay_gif"] = str(_write_video_overlay(jobs[0][1], test_save / VIDEO_DATASET))
    _print_summary(summary)
    return summary


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry: run :func:`main`; bad input -> one ``error: ...`` line and exit code 2."""
    try:
        main(get_args_parser().parse_args(argv))
    except (FileNotFoundError, ValueError, PermissionError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
