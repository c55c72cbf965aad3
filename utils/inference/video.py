"""``inference.py --video``: one clip streamed through the pipeline, decode → flow → model → write.

A reader thread (:func:`utils.inference.pipeline.prefetch`) decodes the frames one by one (OpenCV
for a video file, the loaders' reader for a folder of frames) and hands each pair (a frame and the
next one; the last frame: backward flow to the previous one, so every frame gets a mask) to
``--workers`` flow threads, which compute its flow, colour-code it (``utils.flow``) and make the
two input tensors; the samples leave in frame order. The masks are written as they come, and the
overlay GIF grows one frame per mask (:class:`utils.inference.overlay.GifStream`). Nothing holds
more than a few frames: memory does not grow with the clip. Frames and flow images go to disk
only with ``keep_dir`` (the ``--keep_intermediate`` flag). The flow is computed on frames shrunk
as ``flow_size`` says (:func:`flow_frame_side`; each frame is shrunk once, for both pairs it
belongs to): the network sees flow at ``testsize`` anyway; docs/inference.md has the trade-off.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Deque, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from utils.cli import BadInputError
from utils.data.images import list_images, read_rgb
from utils.data.transforms import input_tensor
from utils.flow.color import flow_to_color
from utils.flow.generate import RaftOptions, compute_flow
from utils.inference.overlay import GifStream
from utils.inference.pipeline import (PredictionStats, PredictOptions, Predictor, batches_of,
                                      output_path, pinned, run_pipeline)
from utils.inference.workers import OrderedPool, StageClock, helper_thread_init
from utils.io import save_image


#: ``--flow_size auto`` (the default) shrinks a clip's frames for the flow by the largest whole
#: factor that keeps their longer side at least this long (see :func:`flow_frame_side`).
AUTO_FLOW_MIN_SIDE = 640
FlowSize = Union[int, str]  # pixels of the longer side (0: full size), or "auto"


@dataclass
class VideoOptions:
    """How a clip's inputs are made: flow method and size, input size, what is kept on disk."""

    method: str = "dis"
    raft: Optional[RaftOptions] = None
    flow_size: FlowSize = "auto"  # longer side of the frames the flow is computed on (flow_frame_side)
    testsize: int = 352
    keep_dir: Optional[Path] = None  # write <keep_dir>/Frame/*.jpg and <keep_dir>/Flow/*.jpg here
    gif_path: Optional[Path] = None  # the overlay GIF (None: none)


def clip_name(video: Path) -> str:
    """The clip's name in the output tree: the file's stem, or the frame folder's name."""
    return video.stem if video.is_file() else video.resolve().name


def count_frames(video: Path) -> int:
    """Frames in ``video`` (a folder: its images; a file: the container's count, may be approximate)."""
    if video.is_dir():
        return len(list_images(video))
    capture = cv2.VideoCapture(str(video))
    try:
        if not capture.isOpened():
            raise BadInputError(f"Cannot open video {video}",
                                "check that OpenCV/FFmpeg can decode it, or pass a folder of frames")
        return max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    finally:
        capture.release()


def read_frames(video: Path) -> Iterator[Tuple[str, np.ndarray]]:
    """``(name, RGB uint8 frame)`` in order: ``00000, 00001, ...`` from a video file (OpenCV), the
    image stems from a folder (``utils.data.images.read_rgb``, as the test loaders read)."""
    if video.is_dir():
        for stem, path in list_images(video).items():
            yield stem, np.asarray(read_rgb(path))
        return
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise BadInputError(f"Cannot open video {video}: check the path and that OpenCV/FFmpeg can "
                            f"decode it, or extract frames yourself and pass the folder.")
    try:
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            yield f"{index:05d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise BadInputError(f"No frames could be decoded from {video}")


def shrink(frame: np.ndarray, longer_side: int) -> np.ndarray:
    """``frame`` resized (area interpolation) so that its longer side is ``longer_side`` (never enlarged)."""
    height, width = frame.shape[:2]
    scale = longer_side / max(height, width)
    if longer_side <= 0 or scale >= 1.0:
        return frame
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def flow_frame_side(longer: int, flow_size: FlowSize) -> int:
    """The longer side of the frames the flow is computed on, for frames whose longer side is
    ``longer``: ``flow_size`` pixels (0: full size; never enlarged), or with ``auto`` ``longer``
    divided by the largest whole factor that keeps it at least :data:`AUTO_FLOW_MIN_SIDE`: a
    854x480 clip (DAVIS-2016's size, that of the training flow) keeps its size, 1280x720 and
    1920x1080 clips get their flow at 640x360 (a whole factor also keeps the area shrink cheap)."""
    if flow_size == "auto":
        return longer // max(1, longer // AUTO_FLOW_MIN_SIDE)
    return min(int(flow_size), longer) or longer


def flow_input(frame: np.ndarray, options: VideoOptions) -> np.ndarray:
    """``frame`` as the flow reads it: shrunk to :func:`flow_frame_side`."""
    return shrink(frame, flow_frame_side(max(frame.shape[:2]), options.flow_size))


def flow_image(small_a: np.ndarray, small_b: np.ndarray, options: VideoOptions) -> np.ndarray:
    """The colour-coded flow ``small_a → small_b`` (RGB uint8) of two :func:`flow_input` frames."""
    return flow_to_color(compute_flow(small_a, small_b, options.method, options.raft))


def _pairs(frames: Iterator[Tuple[str, np.ndarray]]
           ) -> Iterator[Tuple[str, np.ndarray, Optional[Tuple[str, np.ndarray]]]]:
    """``(name, frame, (name, frame) its flow goes to)``: the next one, for the last the one before."""
    previous: Optional[Tuple[str, np.ndarray]] = None
    before: Optional[Tuple[str, np.ndarray]] = None
    for name, frame in frames:
        if previous is not None:
            yield previous[0], previous[1], (name, frame)
            before = previous
        previous = (name, frame)
    if previous is not None:
        yield previous[0], previous[1], before  # a one-frame clip has no flow at all


def _timed(items: Iterator, clock: StageClock, stage: str) -> Iterator:
    """``items``, the time spent making each counted for ``stage``."""
    while True:
        with clock.time(stage):
            item = next(items, None)
        if item is None:
            return
        yield item


def _network_inputs(frame: np.ndarray, small_a: np.ndarray, small_b: np.ndarray,
                    options: VideoOptions, clock: StageClock) -> Tuple[np.ndarray, Tensor, Tensor]:
    """A flow worker's job: the flow image of a pair and the network's two input tensors."""
    with clock.time("flow"):
        flow = flow_image(small_a, small_b, options)
    with clock.time("resize"):
        return (flow, input_tensor(Image.fromarray(frame), options.testsize),
                input_tensor(Image.fromarray(flow), options.testsize))


def video_samples(video: Path, sequence: str, options: VideoOptions, done: Callable[[str], bool],
                  clock: StageClock, on_flow: Optional[Callable[[str], None]] = None,
                  workers: int = 1) -> Iterator[dict]:
    """Pipeline samples of every frame, in order, made as the frames are decoded.

    The calling thread decodes and shrinks the frames; ``workers`` threads compute the flow of
    each pair and the input tensors (DIS, the colour coding and the resizing release the GIL), at
    most ``2 * workers`` frames ahead. A frame whose map exists (``done(name)``, resuming) gets no
    flow and no tensors, only its RGB frame for the overlay. ``on_flow(name)`` is called after
    each flow, in frame order. A clip of one frame has no flow: a :class:`BadInputError`.
    """
    small: dict = {}  # name -> flow_input of the frames of the current pair
    pending: Deque[Tuple[dict, Optional[Future]]] = deque()

    def shrunk(name: str, frame: np.ndarray) -> np.ndarray:
        if name not in small:
            with clock.time("flow"):
                small[name] = flow_input(frame, options)
        return small[name]

    def finished(sample: dict, job: Optional[Future]) -> dict:
        if job is not None:
            flow, sample["image"], sample["flow"] = job.result()
            if on_flow is not None:
                on_flow(sample["frame"])
            if options.keep_dir is not None:
                save_image(flow, options.keep_dir / "Flow" / f"{sample['frame']}.jpg")
        return sample

    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="fsnet-flow",
                              initializer=helper_thread_init)
    try:
        for name, frame, other in _pairs(_timed(read_frames(video), clock, "decode")):
            sample = {"sequence": sequence, "frame": name, "frame_path": "", "rgb": frame,
                      "height": frame.shape[0], "width": frame.shape[1]}
            if options.keep_dir is not None and video.is_file():
                save_image(frame, options.keep_dir / "Frame" / f"{name}.jpg")
            if other is None:
                raise BadInputError(f"--video {video} holds a single frame: flow needs two",
                                    "pass a clip of two frames or more")
            job = None
            if not done(name):
                job = pool.submit(_network_inputs, frame, shrunk(name, frame), shrunk(*other), options, clock)
                small = {key: small[key] for key in (name, other[0])}  # the next pair's first
            pending.append((sample, job))
            while len(pending) > 2 * max(1, workers):
                yield finished(*pending.popleft())
        while pending:
            yield finished(*pending.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def predict_video(predictor: Predictor, video: Path, out_dir: Path, device: torch.device,
                  options: PredictOptions, video_options: VideoOptions, total: int,
                  on_flow: Optional[Callable[[str], None]] = None,
                  on_mask: Optional[Callable[[dict, np.ndarray], None]] = None) -> PredictionStats:
    """Stream ``video`` through the pipeline into ``out_dir/<name>/<frame>.png`` (and the overlay
    GIF ``video_options.gif_path``); ``total`` is the expected frame count (progress bar).
    ``on_flow(name)`` / ``on_mask(sample, map)`` are called after each flow / each map on disk.
    """
    sequence, clock = clip_name(video), StageClock()
    skipped: List[str] = []

    def done(name: str) -> bool:
        exists = options.skip_existing and output_path(out_dir, sequence, name).is_file()
        if exists:
            skipped.append(name)
        return exists

    samples = video_samples(video, sequence, video_options, done, clock, on_flow, options.workers)
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # one OpenCV thread per reader/flow thread: the cores run the network
    try:
        with _overlay(video_options.gif_path, clock, on_mask) as sink:
            batches = pinned(batches_of(samples, options.batchsize), device)
            stats = run_pipeline(predictor, batches, out_dir, device, options, total,
                                 f"{sequence} ({options.mode})", sink, clock)
    finally:
        cv2.setNumThreads(cv_threads)
    stats.skipped_existing = len(skipped)
    stats.stage_seconds = {k: round(v, 3) for k, v in clock.seconds.items()}
    return stats


class _overlay:
    """The mask sink of a clip: on a thread of its own, each mask (in order) tinted over its frame
    into the GIF, then handed to ``on_mask``."""

    def __init__(self, gif_path: Optional[Path], clock: StageClock,
                 on_mask: Optional[Callable[[dict, np.ndarray], None]]) -> None:
        self.gif = GifStream(gif_path) if gif_path is not None else None
        self.clock, self.on_mask = clock, on_mask
        self.pool = OrderedPool(1, 4, lambda _: None)

    def __enter__(self) -> Callable[[dict, np.ndarray], None]:
        if self.gif is not None:
            self.gif.__enter__()
        return lambda sample, mask: self.pool.submit(self._add, sample, mask)

    def _add(self, sample: dict, mask: np.ndarray) -> None:
        if self.gif is not None:
            with self.clock.time("overlay"):
                self.gif.add(sample["rgb"], mask, f"frame {sample['frame']}")
        if self.on_mask is not None:
            self.on_mask(sample, mask)

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if error is None:
                self.pool.drain()
        except BaseException as failure:
            error = failure
            raise
        finally:
            self.pool.__exit__(type(error) if error else None, error, None)
            if self.gif is not None:
                self.gif.__exit__(type(error) if error else None, error, None)
