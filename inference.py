"""Write FSNet masks for the benchmark test sets or for your own video.

Test sets (official defaults)::

    python inference.py [--model_path snapshot/FSNet/2021-ICCV-FSNet-20epoch-new.pth]
        [--dataset_path dataset/TestSet] [--datasets DAVIS FBMS ...] [--test_save result/FSNet]
        [--mode saliency|binary] [--threshold 0.5] [--crf] [--skip_existing]

writes ``<test_save>/<Dataset>/<seq>/<frame>.png`` at each frame's original size.

Own video (a video file or a folder of frames)::

    python inference.py --video clip.mp4 --mode binary

streams the clip (decode → flow, last frame by backward flow so every frame gets a mask → model →
write, overlapping) into ``<test_save>/Video/<name>/<frame>.png`` plus ``<test_save>/Video/<name>.gif``
(mask tinted over the frames, written frame by frame). See docs/inference.md for the two modes,
the last-frame policy, the CRF option, the backends, the streaming pipeline and the checks made
before any work.

Library use: ``predict(InferenceConfig(...)) -> InferenceResult``; command line:
``main(argv) -> exit status``.
"""
from __future__ import annotations

from utils.cli import install_interrupt_hook

install_interrupt_hook()  # first: a Ctrl-C while torch is still being imported is one error line too

import argparse
import math
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from utils.cli import (BadInputError, ListAction, MissingInputError, OutputExistsError, UserError,
                       add_device_argument, check_all, make_parser, run_guarded)
from utils.data.dataset import TestDataset
from utils.data.verify import verify_samples
from utils.device import AMP_DTYPES, add_amp_argument, resolve_device
from utils.flow.generate import RaftOptions, check_video
from utils.flow.options import add_flow_arguments
from utils.inference.cuda_graph import (CUDA_GRAPH_CHOICES, GraphReplay, capture_predictor,
                                        resolve_cuda_graphs)
from utils.inference.postprocess import MODES
from utils.inference.predict import (BACKENDS, PredictionStats, PredictOptions, Predictor,
                                     check_no_empty_sequence, load_predictor, predict_dataset,
                                     require_checkpoint, resolve_backend, resolve_batchsize,
                                     resolve_workers)
from utils.inference.video import (AUTO_FLOW_MIN_SIDE, FlowSize, VideoOptions, clip_name,
                                   count_frames, predict_video)
from utils.safety import (check_outputs_apart, output_lock, real_path, record_source, recorded_source,
                          remove_stale_temporaries, source_differences)
from utils.weights import add_offline_argument, load_raft, set_offline

DEFAULT_DATASETS = ("DAVIS", "FBMS", "SegTrack-V2", "MCL", "DAVSOD",
                    "DAVSOD-Easy-35", "DAVSOD-Normal-25", "DAVSOD-Difficult-20")
DEFAULT_MODEL = "./snapshot/FSNet/2021-ICCV-FSNet-20epoch-new.pth"
VIDEO_DATASET = "Video"


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
    cuda_graphs: str = "auto"
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
    offline: bool = False
    flow_size: FlowSize = "auto"
    keep_intermediate: bool = False
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
    stage_seconds: Dict[str, float] = field(default_factory=dict)
    overlay_gif: Optional[str] = None
    cache: Optional[str] = None  # the onnx backend's export cache: hit, miss or off
    cuda_graphs: bool = False  # the network was replayed as one captured CUDA graph

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


def _flow_size(text: str) -> FlowSize:
    """``--flow_size``: ``auto`` or a whole number of pixels."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither auto nor a number of pixels") from None


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
    parser.add_argument("--datasets", action=ListAction, default=None,
                        help="datasets to run (default: the official list, those present, then any "
                             "other dataset folder found under --dataset_path)")
    parser.add_argument("--test_save", default=defaults.test_save, help="output root")
    parser.add_argument("--testsize", type=int, default=defaults.testsize,
                        help="network input size (multiple of 32)")
    parser.add_argument("--batchsize", default=defaults.batchsize,
                        help="frames per forward pass (the last batch is padded to it); auto = 1 on "
                             "the CPU; on CUDA 32, or on a small set the largest power of two that "
                             "fills 4 batches")
    add_device_argument(parser, defaults.device)
    parser.add_argument("--backend", choices=BACKENDS, default=defaults.backend,
                        help="plain: the unmodified FSNet forward; eager/jit: BN-folded appearance "
                             "network op by op / TorchScript; onnx: it in ONNX Runtime (CPU, "
                             "pip install onnx onnxruntime); auto: onnx if installed, else jit, on the "
                             "CPU; eager on CUDA or with --amp")
    parser.add_argument("--no_fast", dest="backend", action="store_const", const="plain",
                        help="alias of --backend plain")
    add_amp_argument(parser, defaults.amp, "autocast precision of the forward pass")
    parser.add_argument("--cuda_graphs", nargs="?", const="on", choices=CUDA_GRAPH_CHOICES,
                        default=defaults.cuda_graphs,
                        help="capture the network once as a CUDA graph and replay it for every batch "
                             "(a bare --cuda_graphs = on; on needs CUDA); auto = on on CUDA for the "
                             "plain and eager backends")
    parser.add_argument("--workers", default=defaults.workers,
                        help="DataLoader worker processes (0 = load on a thread of the main "
                             "process); with --video, threads computing the flow (0 counts as 1); "
                             "auto = 1 on the CPU, min(8, cores, batches) on CUDA")
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
                        help="a video file or a folder of frames, streamed: flow, masks and an "
                             "overlay GIF")
    add_flow_arguments(parser, when="--video")
    parser.add_argument("--flow_size", type=_flow_size, default=defaults.flow_size,
                        help=f"--video: compute the flow on frames shrunk to this longer side in "
                             f"pixels (0 = full size); auto: shrunk by the largest whole factor "
                             f"that keeps it >= {AUTO_FLOW_MIN_SIDE} (854x480 kept, 1280x720 -> "
                             f"640x360; see docs/inference.md)")
    parser.add_argument("--keep_intermediate", action="store_true",
                        help="--video: also write the decoded frames and flow images to "
                             "<test_save>/Video-input/<name>/{Frame,Flow}")
    add_offline_argument(parser)
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    parser.accept_old_spellings({"--num_workers": "--workers"})
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


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 2)


def _report(name: str, stats: PredictionStats) -> Dict[str, object]:
    return {
        "written": len(stats.written), "skipped_existing": stats.skipped_existing,
        "unpredicted": [list(u) for u in stats.unpredicted], "frames_predicted": stats.frames,
        "model_fps": _round(stats.model_fps), "end_to_end_fps": _round(stats.end_to_end_fps),
        "stage_seconds": stats.stage_seconds, "dataset": name,
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
    return jobs, absent


def _read_paths(config: InferenceConfig, jobs: List[Tuple[str, TestDataset]]) -> Dict[str, object]:
    """Every file and folder the run reads: checkpoint, inputs, each dataset folder (as spelled
    with ``--datasets``) and every frame and flow folder (which may be symlinks)."""
    folders = {path.parent for _, dataset in jobs for _, _, frame, flow in dataset.samples
               for path in (frame, flow)}
    return {"--model_path": config.model_path, "--raft_weights": config.raft_weights,
            "--video": config.video,
            "--dataset_path": None if config.video else config.dataset_path,
            "--datasets": [Path(config.dataset_path) / name for name, _ in jobs],
            "the frame and flow folder": sorted(folders)}


def _check_config(config: InferenceConfig) -> None:
    """Argument checks that need no model, all problems reported together."""
    def testsize() -> None:
        if config.testsize < 32 or config.testsize % 32:
            raise BadInputError(f"--testsize {config.testsize} is not a positive multiple of 32",
                                f"use e.g. {max(32, round(config.testsize / 32) * 32)}")

    def threshold() -> None:
        if not 0.0 <= config.threshold <= 1.0:
            raise BadInputError(f"--threshold {config.threshold} is outside [0, 1]", "use e.g. 0.5")

    def amp() -> None:
        if config.amp not in AMP_DTYPES:
            raise BadInputError(f"--amp {config.amp!r} is unknown", f"use one of {', '.join(AMP_DTYPES)}")

    def video() -> None:
        if config.video and not Path(config.video).exists():
            raise MissingInputError(f"--video {config.video} does not exist",
                                    "pass a video file or a folder of frames")
        if config.video and Path(config.video).is_file():
            check_video(config.video)

    def flow_size() -> None:
        if config.flow_size != "auto" and int(config.flow_size) < 0:
            raise BadInputError(f"--flow_size {config.flow_size} is negative",
                                "use auto, 0 (full size) or e.g. 640")

    def cuda_graphs() -> None:
        try:
            device = resolve_device(config.device)
        except UserError:
            return  # the device check reports it
        resolve_cuda_graphs(config.cuda_graphs, device, config.backend)

    def crf() -> None:
        if config.crf:
            from utils.inference.crf import require_densecrf
            try:
                require_densecrf()
            except ImportError as error:
                raise UserError(str(error)) from error
    check_all([testsize, threshold, amp, lambda: require_checkpoint(config.model_path), video, flow_size, crf,
               lambda: resolve_device(config.device), cuda_graphs], "argument problems")


def _source_record(config: InferenceConfig, inputs: Dict[str, object]) -> Dict[str, object]:
    """What makes this job's maps: checkpoint, inputs (real paths) and the settings that change them."""
    stat = Path(config.model_path).stat()
    return {"tool": "inference.py", "model_path": str(real_path(config.model_path)),
            "model_file": {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
            "inputs": {flag: str(real_path(path)) for flag, path in inputs.items()},
            "mode": config.mode, "testsize": config.testsize, "threshold": config.threshold,
            "crf": config.crf}


def _map_folders(config: InferenceConfig, jobs: List[Tuple[str, TestDataset]]) -> List[Path]:
    """The folders this run writes maps into (for ``--video``: its map and work folders)."""
    test_save = Path(config.test_save)
    if config.video:
        name = clip_name(Path(config.video))
        return [test_save / VIDEO_DATASET / name, test_save / f"{VIDEO_DATASET}-input" / name]
    return [test_save / name / seq for name, dataset in jobs for seq in dataset.sequences]


def _check_owner(test_save: Path, source: Dict[str, object], overwrite: bool,
                 folders: Sequence[Path], skip_existing: bool = False) -> None:
    """Refuse a ``--test_save`` holding another job's maps, or maps with no record of the job
    that made them, unless ``overwrite``; never keep another job's maps (``skip_existing``)
    under a video's name."""
    if recorded_source(test_save) is None:
        held = next((path for folder in folders if folder.is_dir() for path in folder.iterdir()
                     if not path.name.startswith(".")), None)
        if held is not None and not overwrite:
            raise OutputExistsError(f"--test_save {test_save} already holds {held}, with no record "
                                    "of the job that made it",
                                    "choose another --test_save, or pass --overwrite to write "
                                    "over it")
        return
    changed = source_differences(test_save, source)
    if not changed:
        return
    if overwrite and skip_existing and "--video" in source.get("inputs", {}):
        raise BadInputError(f"--skip_existing would keep maps of another job in {test_save} (it differs "
                            f"in {', '.join(changed)})", "rerun without --skip_existing to rebuild them")
    if overwrite:
        return
    raise OutputExistsError(f"--test_save {test_save} holds the maps of another job (it differs in "
                            f"{', '.join(changed)})",
                            "choose another --test_save, or pass --overwrite to write over them")


def _writer_threads(device: torch.device) -> int:
    """Threads that finish and write maps: 2 on the CPU (the network needs the cores), up to 8
    beside a GPU (PNG encoding must keep up with it)."""
    return 2 if device.type == "cpu" else max(2, min(8, os.cpu_count() or 1))


def _keep_dir(config: InferenceConfig, video: Path) -> Optional[Path]:
    """``--keep_intermediate``: the clip's ``Video-input/<name>`` folder, emptied unless resuming
    (a frame folder given to ``--video`` is linked as ``Frame``, never copied or modified)."""
    if not config.keep_intermediate:
        return None
    keep = Path(config.test_save) / f"{VIDEO_DATASET}-input" / clip_name(video)
    if keep.exists() and not config.skip_existing:
        shutil.rmtree(keep)  # removes a Frame link, never what it points to
    keep.mkdir(parents=True, exist_ok=True)
    if video.is_dir() and not (keep / "Frame").exists():
        (keep / "Frame").symlink_to(video.resolve(), target_is_directory=True)
    return keep


def _captured(predictor: Predictor, batchsize: int, testsize: int, device: torch.device,
              amp: str) -> Predictor:
    """``predictor`` replayed from a CUDA graph captured at the run's one input shape (or itself,
    after a warning, if the capture fails)."""
    example = torch.zeros(batchsize, 3, testsize, testsize, device=device)
    return capture_predictor(predictor, example, example, AMP_DTYPES[amp])


def _run_video(config: InferenceConfig, predictor: Predictor, device: torch.device,
               options: PredictOptions, frames: int) -> Tuple[PredictionStats, Path]:
    """Stream ``--video`` through the pipeline; return its stats and the overlay GIF's path."""
    video = Path(config.video)
    out_dir = Path(config.test_save) / VIDEO_DATASET
    gif = out_dir / f"{clip_name(video)}.gif"
    raft = RaftOptions(config.raft_weights, config.raft_model) if config.flow_method == "raft" else None
    video_options = VideoOptions(method=config.flow_method, raft=raft, flow_size=config.flow_size,
                                 testsize=config.testsize, keep_dir=_keep_dir(config, video),
                                 gif_path=gif)
    return predict_video(predictor, video, out_dir, device, options, video_options, frames), gif


def predict(config: InferenceConfig) -> InferenceResult:
    """Run inference as configured; return (and print) what it did.

    Before any work: arguments, device and backend, that ``--test_save`` lies apart from every
    input, every frame/flow pair of every dataset (or that the video opens), the output folder's
    lock (a second run into it stops at once) and the checkpoint (NaN/inf weights are refused).
    """
    _check_config(config)
    set_offline(config.offline)
    device = resolve_device(config.device)
    backend = resolve_backend(config.backend, device, config.amp)
    graphs = resolve_cuda_graphs(config.cuda_graphs, device, backend)
    test_save = Path(config.test_save)
    inputs = {"--video": config.video} if config.video else {"--dataset_path": config.dataset_path}
    jobs, absent = ([], []) if config.video else _dataset_jobs(config)
    check_outputs_apart(_read_paths(config, jobs), {
        "--test_save": test_save, "the output folder": [test_save / name for name, _ in jobs]})
    blocker = next((p for p in (test_save, *test_save.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise UserError(f"--test_save {test_save} cannot be made: {blocker} is a file",
                        "choose an output folder path")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one batch shape throughout: let cuDNN pick kernels
    frames = count_frames(Path(config.video)) if config.video else sum(len(d) for _, d in jobs)
    if config.video and Path(config.video).is_dir() and frames < 2:
        raise BadInputError(f"--video folder {config.video} holds {frames or 'no'} frame image(s) "
                            f"(jpg/png/bmp)", "flow needs two frames or more")
    if config.flow_method == "raft" and config.video:
        load_raft(config.raft_weights, config.raft_model)  # missing weights: stop before any work
    verify_samples([{"frame": frame, "flow": flow} for _, dataset in jobs
                    for _, _, frame, flow in dataset.samples], what="test")
    batchsize = resolve_batchsize(config.batchsize, device, frames or None)
    workers = resolve_workers(config.workers, device, math.ceil(frames / batchsize) or None)
    source = _source_record(config, inputs)
    folders = _map_folders(config, jobs)
    _check_owner(test_save, source, config.overwrite, folders, config.skip_existing)
    with output_lock(test_save, "inference.py"):
        loaded = load_predictor(config.model_path, device, config.backbone, backend,
                                config.testsize, cache=not config.no_cache, amp=config.amp)
        predictor, backbone = loaded.predictor, loaded.backbone
        if graphs:
            predictor = _captured(predictor, batchsize, config.testsize, device, config.amp)
        record_source(test_save, source)  # the checkpoint is usable: these maps are now its
        for folder in folders:
            remove_stale_temporaries(folder)
        cache = "" if loaded.cache is None else f" (export cache {loaded.cache})"
        replayed = isinstance(predictor, GraphReplay)
        print(f"inference: backend {backend}{cache}{', CUDA graph' if replayed else ''}, batch {batchsize}, "
              f"amp {config.amp}, device {device}, {backbone}, {frames} frames, mode {config.mode}")
        options = PredictOptions(mode=config.mode, threshold=config.threshold, batchsize=batchsize,
                                 workers=workers, amp=config.amp, crf=config.crf,
                                 skip_existing=config.skip_existing,
                                 # ONNX Runtime runs the network on its own threads; torch's
                                 # post-processing must not take (and spin on) the same cores.
                                 torch_threads=1 if backend == "onnx" else None,
                                 writer_threads=_writer_threads(device),
                                 show_progress=config.show_progress)
        gif = None
        if config.video:
            stats, gif = _run_video(config, predictor, device, options, frames)
            runs = [(VIDEO_DATASET, stats)]
        else:
            runs = [(name, predict_dataset(predictor, dataset, test_save / name, device, options,
                                           desc=f"{name} ({config.mode})")) for name, dataset in jobs]
    reports, unpredicted, total = [], [], PredictionStats()
    for name, stats in runs:
        reports.append(_report(name, stats))
        unpredicted += [[name, *u] for u in stats.unpredicted]
        total.frames += stats.frames
        total.model_seconds += stats.model_seconds
        total.wall_seconds += stats.wall_seconds
        total.written += stats.written
        for stage, seconds in stats.stage_seconds.items():
            total.stage_seconds[stage] = round(total.stage_seconds.get(stage, 0.0) + seconds, 3)
    result = InferenceResult(
        output_dir=str(test_save), mode=config.mode, backbone=backbone, device=str(device),
        backend=backend, batchsize=batchsize, amp=config.amp, datasets=reports,
        absent_datasets=absent, written=len(total.written), unpredicted=unpredicted,
        model_fps=_round(total.model_fps), end_to_end_fps=_round(total.end_to_end_fps),
        stage_seconds=total.stage_seconds, overlay_gif=None if gif is None else str(gif),
        cache=loaded.cache, cuda_graphs=replayed)
    _print_summary(result.summary())
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry: exit status 0, or 2 after one ``error:`` line for bad input."""
    args = get_args_parser().parse_args(argv)
    return run_guarded(lambda: predict(config_from_args(args)), args.debug)


if __name__ == "__main__":
    sys.exit(main())
