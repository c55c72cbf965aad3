"""Optical flow for FSNet: compute, colour-code, and write flow images for frames or whole data sets.

FSNet reads forward flow (frame t -> t+1) as a colour-coded JPEG stored under frame t's name.
Colour coding is ``torchvision.utils.flow_to_image`` (Middlebury colour wheel, normalised per
frame by the largest motion). Methods: OpenCV DIS (preset medium, default, no weights), OpenCV
Farneback, and torchvision RAFT from a local weights file.

CLI::

    python -m utils.flow --frames DIR_OR_TREE_OR_VIDEO [--out DIR] [--method dis|farneback|raft]
        [--last_frame skip|backward] [--workers N] [--skip_existing] [--overwrite] [--save_raw npy|flo]

What ``--frames`` may be (see docs/data-and-flow.md):
* a folder of frames -> flows in ``--out`` (default: ``<parent>/<flow_folder>`` for a folder named
  like ``frame_folder`` (``<seq>/Frame``), else ``<parent>/<name>_<flow_folder>``, so two frame
  folders side by side never share a default output);
* a sequence folder holding ``Frame/`` -> ``<seq>/<flow_folder>``;
* a tree (``TestSet``, ``TestSet/<Dataset>``, ``dataset/``): every ``<seq>/Frame`` gets a sibling
  ``<seq>/<flow_folder>``; every ``TrainSet_Video``-like folder (``Imgs`` + ``ground-truth``) gets
  ``Flow/``, its flat ``Imgs`` grouped into sequences by the name ``<seq>_<frame>`` (the text before
  the **last** underscore is the sequence);
* a video file -> frames extracted to ``<out>/Frame`` (default ``out`` = video path without
  suffix), flows to ``<out>/<flow_folder>``.

Before any flow is computed (:func:`prepare_outputs`): no output folder may be, contain or lie
inside a folder of frames it reads (or the video); every output folder is locked against a second
run (``utils.safety.output_lock``; leftover temporaries of a killed run are removed); an output
folder that holds the flow of another input (``.fsnet-source.json``), or files of unknown origin
that would be replaced, is refused unless ``overwrite`` (which first deletes the ``.jpg``/``.npy``/``.flo`` files of
a folder recorded as another input's flow, so none of it survives; files of unknown origin are
only replaced where names collide); and every frame header is read (thread
pool) with all unreadable, truncated or differently sized frames reported in one error.
"""
from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from utils.cli import (BadInputError, MissingInputError, OutputExistsError, children_ignore_interrupts,
                       ignore_interrupts, progress as progress_bar)
from utils.io import PathLike, atomic_write_bytes, atomic_write_with, save_json
from utils.flow.color import flow_to_color
from utils.device import resolve_device
from utils.data.images import check_images, is_complete_image, list_images, listing, natural_key, read_rgb, sequence_name
from utils.safety import check_outputs_apart, output_lock, real_path, record_source, recorded_source
from utils.weights import load_raft, set_offline

METHODS = ("dis", "farneback", "raft")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".gif")
JPEG_QUALITY = 95
FLO_MAGIC = 202021.25
FRAMES_RECORD = ".fsnet-frames.json"  # written when a video's frames are all extracted
RAFT_MIN_SIDE = 128
OUTPUT_SUFFIXES = (".jpg", ".npy", ".flo")  # what --overwrite removes from another input's folder


# --------------------------------------------------------------------------- computing flow

_DIS_INSTANCES = threading.local()  # per thread: frame shape -> DIS instance


def _dis(shape: Tuple[int, ...]) -> "cv2.DISOpticalFlow":
    """One DIS instance per frame size and thread: DIS lowers its finest scale for small frames
    and keeps that setting, so sharing an instance across sizes would make results depend on
    history, and an instance's working buffers cannot serve two threads at once."""
    instances = _DIS_INSTANCES.__dict__.setdefault("by_shape", {})
    if shape not in instances:
        instances[shape] = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return instances[shape]


@dataclass(frozen=True)
class RaftOptions:
    """Where to find RAFT weights and where to run it."""

    weights: Optional[str] = None
    model: str = "raft_large"
    device: str = "cpu"


def _raft_flow(rgb_a: np.ndarray, rgb_b: np.ndarray, raft: RaftOptions) -> np.ndarray:
    net = load_raft(raft.weights, raft.model, raft.device)
    height, width = rgb_a.shape[:2]  # RAFT needs sides that are multiples of 8 and >= 128
    pad_h, pad_w = max(RAFT_MIN_SIDE, height + (-height) % 8) - height, max(RAFT_MIN_SIDE, width + (-width) % 8) - width
    batch = torch.from_numpy(np.stack([rgb_a, rgb_b])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    batch = torch.nn.functional.pad(batch, (0, pad_w, 0, pad_h), mode="replicate").to(raft.device)
    with torch.inference_mode():
        flow = net(batch[:1], batch[1:])[-1][0, :, :height, :width]
    return flow.permute(1, 2, 0).cpu().numpy().astype(np.float32)


def _gray(rgb: np.ndarray) -> np.ndarray:
    return rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def compute_flow(frame_a: np.ndarray, frame_b: np.ndarray, method: str = "dis",
                 raft: Optional[RaftOptions] = None) -> np.ndarray:
    """Flow from ``frame_a`` to ``frame_b`` (RGB uint8 ``HxWx3``; grey ``HxW`` for dis/farneback).

    Returns ``(H, W, 2)`` float32 with ``[..., 0]`` = u (rightwards) and ``[..., 1]`` = v (down).
    """
    if frame_a.shape[:2] != frame_b.shape[:2]:
        raise BadInputError(f"Frames differ in size: {frame_a.shape[:2]} vs {frame_b.shape[:2]}")
    if method == "dis":
        return _dis(frame_a.shape[:2]).calc(_gray(frame_a), _gray(frame_b), None)
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(_gray(frame_a), _gray(frame_b), None,
                                            0.5, 3, 15, 3, 5, 1.2, 0)
    if method == "raft":
        return _raft_flow(frame_a, frame_b, raft or RaftOptions())
    raise BadInputError(f"Unknown flow method '{method}': choose one of {METHODS}")


# --------------------------------------------------------------------------- writing

def _write_jpeg(rgb: np.ndarray, path: Path) -> None:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise BadInputError(f"Could not encode {path} as JPEG")
    atomic_write_bytes(path, data.tobytes())


def write_flo(flow: np.ndarray, path: PathLike) -> None:
    """Write a Middlebury ``.flo`` file atomically."""
    height, width = flow.shape[:2]

    def writer(buffer) -> None:
        buffer.write(np.float32(FLO_MAGIC).tobytes())
        buffer.write(np.int32([width, height]).tobytes())
        buffer.write(np.ascontiguousarray(flow, dtype="<f4").tobytes())

    atomic_write_with(path, writer)


def read_flo(path: PathLike) -> np.ndarray:
    """Read a Middlebury ``.flo`` file into ``(H, W, 2)`` float32."""
    data = Path(path).read_bytes()
    if len(data) < 12 or np.frombuffer(data[:4], "<f4")[0] != np.float32(FLO_MAGIC):
        raise BadInputError(f"{path} is not a .flo file (bad magic number)")
    width, height = np.frombuffer(data[4:12], "<i4")
    return np.frombuffer(data[12:], "<f4").reshape(height, width, 2).copy()


def _write_outputs(flow: np.ndarray, job: "FlowJob") -> None:
    _write_jpeg(flow_to_color(flow), job.out)
    if job.raw is not None:
        if job.raw.suffix == ".npy":
            atomic_write_with(job.raw, lambda buf: np.save(buf, flow))
        else:
            write_flo(flow, job.raw)


# --------------------------------------------------------------------------- planning

@dataclass(frozen=True)
class FlowJob:
    """One flow image: flow from frame ``a`` to frame ``b`` written to ``out`` (+ optional raw)."""

    a: Path
    b: Path
    out: Path
    raw: Optional[Path] = None

    def done(self) -> bool:
        """True when the flow image (and the raw file, if asked for) exists and is complete."""
        return is_complete_image(self.out) and (self.raw is None or _complete_raw(self.raw))


@dataclass
class FlowSequence:
    """Frames of one sequence in order and the folder their flows go to.

    ``source`` is what is read (the frame folder, or the video file whose frames are extracted
    into ``extract_to`` once the outputs are checked; ``frames`` is empty until then).
    """

    name: str
    frames: List[Path]
    out_dir: Path
    source: Path
    extract_to: Optional[Path] = None


def _complete_raw(path: Path) -> bool:
    """True if a raw flow file holds as many bytes as its header announces."""
    try:
        if path.suffix == ".npy":
            return np.load(path, mmap_mode="r").shape[-1] == 2
        with open(path, "rb") as handle:
            magic, width, height = np.frombuffer(handle.read(12), dtype="<f4,<i4,<i4")[0]
        return magic == np.float32(FLO_MAGIC) and path.stat().st_size == 12 + 8 * int(width) * int(height)
    except (OSError, ValueError, IndexError):
        return False


def _open_video(video_path: PathLike) -> "cv2.VideoCapture":
    capture = cv2.VideoCapture(str(video_path))
    if not capture.isOpened():
        capture.release()
        raise BadInputError(f"cannot open video {video_path}: OpenCV/FFmpeg cannot decode it",
                            "convert it (e.g. ffmpeg -i in.avi out.mp4) or extract its frames into "
                            "a folder and pass the folder")
    return capture


def check_video(video_path: PathLike) -> None:
    """Before any work: the video opens and its first frame decodes."""
    capture = _open_video(video_path)
    try:
        ok, _ = capture.read()
    finally:
        capture.release()
    if not ok:
        raise BadInputError(f"no frame of video {video_path} can be decoded",
                            "convert it (e.g. ffmpeg -i in.avi out.mp4) or extract its frames into "
                            "a folder and pass the folder")


def extracted_frames(out_dir: PathLike) -> Optional[List[Path]]:
    """The frames of a finished :func:`extract_frames` into ``out_dir`` (None if the extraction
    was interrupted, or frames are missing or incomplete)."""
    try:
        count = json.loads((Path(out_dir) / FRAMES_RECORD).read_text()).get("frames")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(count, int):
        return None
    paths = [Path(out_dir) / f"{index:05d}.jpg" for index in range(count)]
    return paths if all(map(is_complete_image, paths)) else None


def extract_frames(video_path: PathLike, out_dir: PathLike) -> List[Path]:
    """Decode a video into ``out_dir/00000.jpg, 00001.jpg, ...`` (atomic writes); return the paths.
    The record ``.fsnet-frames.json``, written last, says that the extraction finished."""
    capture = _open_video(video_path)
    paths: List[Path] = []
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            path = Path(out_dir) / f"{len(paths):05d}.jpg"
            _write_jpeg(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), path)
            paths.append(path)
    finally:
        capture.release()
    if not paths:
        raise BadInputError(f"no frame of video {video_path} can be decoded",
                            "convert it (e.g. ffmpeg -i in.avi out.mp4) or extract its frames into "
                            "a folder and pass the folder")
    save_json({"video": str(real_path(video_path)), "frames": len(paths)},
              Path(out_dir) / FRAMES_RECORD)
    return paths


def group_flat_sequences(frames: Sequence[Path]) -> Dict[str, List[Path]]:
    """Group a flat ``<seq>_<frame>`` folder into sequences (text before the last underscore);
    a name without underscore forms its own sequence name. Frames keep natural order."""
    groups: Dict[str, List[Path]] = {}
    for path in sorted(frames, key=lambda p: natural_key(p.stem)):
        groups.setdefault(sequence_name(path.stem), []).append(path)
    return groups


def _is_video_train_set(folder: Path) -> bool:
    return (folder / "Imgs").is_dir() and (folder / "ground-truth").is_dir()


def default_flow_dir(frames_dir: Path, frame_folder: str = "Frame", flow_folder: str = "OF_FlowNet2") -> Path:
    """Default output of a plain folder of frames: ``<seq>/<flow_folder>`` beside ``<seq>/Frame``
    (the official layout), else ``<parent>/<name>_<flow_folder>`` (derived from its own name)."""
    name = flow_folder if frames_dir.name == frame_folder else f"{frames_dir.name}_{flow_folder}"
    return frames_dir.parent / name


def find_sequences(source: Path, out: Optional[Path], frame_folder: str = "Frame",
                   flow_folder: str = "OF_FlowNet2") -> List[FlowSequence]:
    """Resolve ``--frames``/``--out`` into sequences (see the module docstring for the rules);
    reads folder listings only (a video's frames are extracted later, by :func:`extract_videos`)."""
    if not source.exists():
        raise MissingInputError(f"--frames path not found: {source}", "check the path")
    if source.is_file():
        if source.suffix.lower() not in VIDEO_SUFFIXES:
            raise BadInputError(f"{source} is a file but not a video ({', '.join(VIDEO_SUFFIXES)})",
                                "pass a video, a folder of frames or a data-set tree")
        root = out or source.with_suffix("")
        return [FlowSequence(source.stem, [], root / flow_folder, source, root / frame_folder)]
    images = list_images(source)
    if images:
        target = out or default_flow_dir(source, frame_folder, flow_folder)
        return [FlowSequence(source.name, list(images.values()), target, source)]
    sequences: List[FlowSequence] = []
    for dirpath, dirnames, _ in os.walk(source):
        dirnames[:] = sorted((d for d in dirnames if not d.startswith(".")), key=natural_key)
        folder = Path(dirpath)
        target = (out / folder.relative_to(source)) if out else folder
        if (folder / frame_folder).is_dir():
            frames = list(list_images(folder / frame_folder).values())
            sequences.append(FlowSequence(folder.name, frames, target / flow_folder, folder / frame_folder))
            dirnames.clear()
        elif _is_video_train_set(folder):
            groups = group_flat_sequences(list(list_images(folder / "Imgs").values()))
            sequences += [FlowSequence(name, frames, target / "Flow", folder / "Imgs")
                          for name, frames in groups.items()]
            dirnames.clear()
    if not sequences:
        raise MissingInputError(
            f"No frames found under {source}",
            f"pass images, '<seq>/{frame_folder}/' folders, a TrainSet_Video-style folder "
            f"(Imgs/ + ground-truth/) or a video file")
    return sequences


def _raw_dir(out_dir: Path) -> Path:
    return out_dir.with_name(out_dir.name + "_raw")


def _output_dirs(seq: FlowSequence, save_raw: Optional[str]) -> Dict[str, Path]:
    """The folders one sequence writes, keyed by a description for error messages."""
    dirs = {f"flow folder of {seq.name}": seq.out_dir}
    if save_raw:
        dirs[f"raw flow folder of {seq.name}"] = _raw_dir(seq.out_dir)
    if seq.extract_to is not None:
        dirs[f"frame folder extracted from {seq.source.name}"] = seq.extract_to
    return dirs


def _recorded_source(folder: Path) -> Optional[str]:
    """The input recorded in ``folder/.fsnet-source.json`` (None when there is no record)."""
    source = (recorded_source(folder) or {}).get("source")
    return None if source is None else str(source)


def _source_text(folder: Path, source: Path) -> str:
    """How a folder records its input: the path relative to the folder (survives moving a tree)."""
    return os.path.relpath(real_path(source), real_path(folder))


def _ownership_problems(folder: Path, source: Path, skip_existing: bool,
                        method: Optional[str]) -> List[str]:
    """Why writing into ``folder`` could replace outputs that do not belong to ``source``: it
    records another input or another flow ``method`` (None for a folder of extracted frames), or
    it holds files but no record (unless ``skip_existing`` keeps them)."""
    if folder.exists() and not folder.is_dir():
        return [f"{folder} is a file, not a folder"]
    recorded = _recorded_source(folder)
    if recorded is not None:
        if recorded != _source_text(folder, source):
            return [f"{folder} holds the flow of {os.path.normpath(folder / recorded)}, not of {source}"]
        made_by = (recorded_source(folder) or {}).get("method", method)  # older records: unknown
        return [] if made_by == method else [f"{folder} holds {made_by} flow, not {method} flow"]
    held = sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []
    if held and not skip_existing:
        return [f"{folder} already holds {len(held)} file(s) (e.g. {held[0]}) with no record of their input"]
    return []


def check_frames(sequences: Sequence[FlowSequence]) -> None:
    """Read every frame header (thread pool): all unreadable, truncated or differently sized
    frames (within a sequence) are reported in one ``BadInputError``."""
    groups = [seq.frames for seq in sequences]
    _, problems = check_images([frame for group in groups for frame in group], groups)
    if problems:
        raise BadInputError(f"{len(problems)} unusable frame(s):" + listing(problems),
                            "re-export or remove them (frames of one sequence must share one size)")


@contextlib.contextmanager
def prepare_outputs(sequences: Sequence[FlowSequence], save_raw: Optional[str] = None,
                    skip_existing: bool = False, overwrite: bool = False,
                    method: str = "dis") -> Iterator[None]:
    """Check and hold every output folder before any work (see the module docstring): outputs
    apart from inputs, ownership (``overwrite`` replaces the outputs of another input or another
    ``method``), frame headers, then locks and source records. The locks are held until the
    ``with`` block ends."""
    names = {seq.source: seq.name for seq in reversed(sequences)}  # first sequence of each source
    outputs: Dict[str, Path] = {}
    known: set = set()  # (source, folder): the sequences of one flat folder share its outputs
    for seq in sequences:
        for key, folder in _output_dirs(seq, save_raw).items():
            if (seq.source, folder) not in known:
                known.add((seq.source, folder))
                outputs[key] = folder
    check_outputs_apart({f"frames of {name}": source for source, name in names.items()}, outputs)
    owners = {folder: seq.source for seq in sequences for folder in _output_dirs(seq, save_raw).values()}
    extracted = {seq.extract_to for seq in sequences}
    made_by = {folder: None if folder in extracted else method for folder in owners}
    foreign = {folder: problems for folder, source in owners.items()
               if (problems := _ownership_problems(folder, source, skip_existing, made_by[folder]))}
    if foreign and not overwrite:
        raise OutputExistsError("refusing to replace existing outputs:"
                                + listing([p for problems in foreign.values() for p in problems]),
                                "pass --overwrite to replace them, --skip_existing to keep "
                                "finished flows of the same input, or choose another --out")
    check_frames([seq for seq in sequences if seq.extract_to is None])
    with contextlib.ExitStack() as locks:
        for folder, source in owners.items():
            locks.enter_context(output_lock(folder, "utils.flow"))
            if folder in foreign and _recorded_source(folder) is not None:
                _remove_outputs(folder)  # --overwrite of another input's flow: none of it survives
            record_source(folder, {"source": _source_text(folder, source), "tool": "utils.flow",
                                   "method": made_by[folder]})
        yield


def _remove_outputs(folder: Path) -> None:
    """Delete the files this tool writes (frames/flow ``.jpg``, raw ``.npy``/``.flo``) from ``folder``."""
    for path in folder.iterdir():
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in OUTPUT_SUFFIXES:
            path.unlink()


def extract_videos(sequences: Sequence[FlowSequence], skip_existing: bool = False) -> None:
    """Extract the frames of the video sequences (after :func:`prepare_outputs` checked them);
    with ``skip_existing`` a finished earlier extraction (:func:`extracted_frames`) is reused."""
    for seq in sequences:
        if seq.extract_to is not None:
            done = extracted_frames(seq.extract_to) if skip_existing else None
            seq.frames = done or extract_frames(seq.source, seq.extract_to)


def plan_jobs(sequences: Sequence[FlowSequence], last_frame: str = "skip",
              save_raw: Optional[str] = None) -> Tuple[List[List[FlowJob]], List[Path]]:
    """Flow jobs per sequence, and frames that get no flow (single-frame sequences, last frames
    under ``last_frame='skip'``)."""
    if last_frame not in ("skip", "backward"):
        raise BadInputError(f"last_frame must be 'skip' or 'backward', got {last_frame!r}")
    if save_raw not in (None, "npy", "flo"):
        raise BadInputError(f"save_raw must be None, 'npy' or 'flo', got {save_raw!r}")
    plans: List[List[FlowJob]] = []
    no_flow: List[Path] = []
    for seq in sequences:
        frames = seq.frames
        pairs = list(zip(frames[:-1], frames[1:]))
        if last_frame == "backward" and len(frames) > 1:
            pairs.append((frames[-1], frames[-2]))
        elif frames:
            no_flow.append(frames[-1])
        raw_dir = _raw_dir(seq.out_dir)
        plans.append([FlowJob(a, b, seq.out_dir / f"{a.stem}.jpg",
                              raw_dir / f"{a.stem}.{save_raw}" if save_raw else None)
                      for a, b in pairs])
    return plans, no_flow


# --------------------------------------------------------------------------- running

def _read_frame(path: Path, method: str) -> np.ndarray:
    """Decode a frame with the loaders' reader (``utils.data.images.read_rgb``, so the flow has the
    frame's size and orientation as FSNet sees it); grey for dis/farneback, RGB for raft."""
    rgb = np.asarray(read_rgb(path))
    return rgb if method == "raft" else _gray(rgb)


def _frames_ahead(jobs: Sequence[FlowJob], method: str, reader: ThreadPoolExecutor
                  ) -> Iterator[Tuple[FlowJob, np.ndarray, np.ndarray]]:
    """Yield each job with its two frames; the next job's frames are decoded on ``reader``
    meanwhile, and a frame shared by consecutive jobs is decoded once."""
    futures: Dict[Path, Future] = {}
    for index, job in enumerate(jobs):
        upcoming = jobs[index + 1: index + 2]
        wanted = [job.a, job.b] + [path for nxt in upcoming for path in (nxt.a, nxt.b)]
        for path in wanted:
            if path not in futures:
                futures[path] = reader.submit(_read_frame, path, method)
        yield job, futures[job.a].result(), futures[job.b].result()
        futures = {path: futures[path] for path in wanted[2:]}


def _run_jobs(jobs: Sequence[FlowJob], method: str, raft: Optional[RaftOptions],
              progress: Optional[tqdm] = None) -> int:
    """Compute and write ``jobs`` in order; frame decoding, colour coding and writing run on two
    helper threads, overlapping the flow computation."""
    pending: List[Future] = []
    with ThreadPoolExecutor(max_workers=1) as reader, ThreadPoolExecutor(max_workers=1) as writer:
        for job, frame_a, frame_b in _frames_ahead(jobs, method, reader):
            if frame_a.shape != frame_b.shape:
                raise BadInputError(f"Frames differ in size: {job.a} {frame_a.shape[:2]} vs "
                                 f"{job.b} {frame_b.shape[:2]}; resize them to one size.")
            flow = compute_flow(frame_a, frame_b, method, raft)
            pending.append(writer.submit(_write_outputs, flow, job))
            while len(pending) > 1 or (pending and pending[0].done()):
                pending.pop(0).result()
                if progress is not None:
                    progress.update(1)
        for future in pending:
            future.result()
            if progress is not None:
                progress.update(1)
    return len(jobs)


def _init_worker() -> None:
    ignore_interrupts()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _run_chunk(args: Tuple[List[FlowJob], str, Optional[RaftOptions]]) -> int:
    return _run_jobs(*args)


def _chunks(plans: List[List[FlowJob]], workers: int) -> List[List[FlowJob]]:
    """Split per-sequence job lists into consecutive chunks (a frame is read once per chunk)."""
    total = sum(len(p) for p in plans)
    size = max(1, math.ceil(total / (workers * 4)))
    return [plan[i:i + size] for plan in plans for i in range(0, len(plan), size)]


def generate_flow(frames_dir: PathLike, out_dir: Optional[PathLike] = None, method: str = "dis",
                  last_frame: str = "skip", workers: int = 1, skip_existing: bool = False,
                  save_raw: Optional[str] = None, raft_weights: Optional[str] = None,
                  raft_model: str = "raft_large", device: str = "auto",
                  flow_folder: str = "OF_FlowNet2", frame_folder: str = "Frame",
                  progress: bool = True, overwrite: bool = False) -> dict:
    """Write colour-coded flow JPEGs (named like frame t) for a folder, a tree or a video.

    Everything is checked before the first flow (:func:`prepare_outputs`); ``overwrite``
    replaces outputs that belong to another input. Returns a summary: ``pairs`` (flow images
    wanted), ``written``, ``skipped_existing``, ``sequences``, ``no_flow`` (frames left without
    flow), ``out_dirs`` and ``seconds``.
    """
    if method not in METHODS:
        raise BadInputError(f"Unknown flow method '{method}'", f"choose one of {', '.join(METHODS)}")
    if int(workers) < 1:
        raise BadInputError(f"--workers must be at least 1, got {workers}", "pass --workers 1 or more")
    start = time.perf_counter()
    sequences = find_sequences(Path(frames_dir), Path(out_dir) if out_dir else None,
                               frame_folder, flow_folder)
    plan_jobs(sequences, last_frame, save_raw)  # argument checks before any work
    for seq in sequences:
        if seq.extract_to is not None:
            check_video(seq.source)  # an undecodable video before the RAFT weights load
    device = str(resolve_device(device))  # cpu or cuda[:N]; anything else is refused here
    raft = RaftOptions(raft_weights, raft_model, device) if method == "raft" else None
    if raft is not None:
        load_raft(raft.weights, raft.model, raft.device)  # fail before any work
    made_by = f"raft ({raft_model})" if method == "raft" else method
    with prepare_outputs(sequences, save_raw, skip_existing, overwrite, made_by):
        extract_videos(sequences, skip_existing)
        plans, no_flow = plan_jobs(sequences, last_frame, save_raw)
        total = sum(len(p) for p in plans)
        if skip_existing:
            plans = [[job for job in plan if not job.done()] for plan in plans]
        todo = sum(len(p) for p in plans)
        _run_plans(plans, method, raft, 1 if method == "raft" else int(workers),
                   progress_bar(total=todo, desc=f"flow ({method})", unit="pair", enabled=progress))
    return {
        "pairs": total,
        "written": todo,
        "skipped_existing": total - todo,
        "sequences": len(sequences),
        "no_flow": [str(p) for p in no_flow],
        "out_dirs": sorted({str(s.out_dir) for s in sequences}),
        "seconds": round(time.perf_counter() - start, 3),
    }


def _run_plans(plans: List[List[FlowJob]], method: str, raft: Optional[RaftOptions], workers: int,
               bar: tqdm) -> None:
    """Run every job on this process (``workers == 1``) or a spawn pool, updating ``bar``."""
    if workers == 1:
        # flow on this thread, colour coding + writing on a second one, each single-threaded:
        # nested OpenCV/OpenMP pools on top of the two threads slow everything down >10x
        threads = (cv2.getNumThreads(), torch.get_num_threads())
        if method != "raft":
            _init_worker()
        try:
            for plan in plans:
                _run_jobs(plan, method, raft, bar)
        finally:
            cv2.setNumThreads(threads[0])
            torch.set_num_threads(threads[1])
    else:
        # spawn, not fork: OpenCV's and OpenMP's thread pools are not fork-safe (children hang)
        context = multiprocessing.get_context("spawn")
        with children_ignore_interrupts():
            pool = context.Pool(workers, initializer=_init_worker)
        with pool:
            for done in pool.imap_unordered(_run_chunk, [(c, method, raft) for c in _chunks(plans, workers)]):
                bar.update(done)
    bar.close()


@dataclass
class FlowConfig:
    """Every option of ``python -m utils.flow`` (help texts: ``python -m utils.flow --help``)."""

    frames: str
    out: Optional[str] = None
    method: str = "dis"
    last_frame: str = "skip"
    workers: int = 1
    skip_existing: bool = False
    overwrite: bool = False
    save_raw: Optional[str] = None
    raft_weights: Optional[str] = None
    raft_model: str = "raft_large"
    device: str = "auto"
    flow_folder: str = "OF_FlowNet2"
    frame_folder: str = "Frame"
    offline: bool = False


def run(config: FlowConfig, progress: bool = True) -> dict:
    """:func:`generate_flow` as configured (``offline`` forbids RAFT weight downloads)."""
    set_offline(config.offline)
    return generate_flow(config.frames, config.out, config.method, config.last_frame, config.workers,
                         config.skip_existing, config.save_raw, config.raft_weights,
                         config.raft_model, config.device, config.flow_folder, config.frame_folder,
                         progress, config.overwrite)
