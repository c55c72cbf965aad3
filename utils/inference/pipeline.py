"""The one streaming inference pipeline: batches in, maps on disk, every stage overlapping.

Stages (each bounded, so memory does not grow with the input):

1. **source**: samples (decoded, resized input tensors plus where their map goes) grouped into
   batches by :func:`collate`: DataLoader worker processes for test sets, the decode → flow →
   tensor reader of :mod:`utils.inference.video` for a video. ``workers.prefetch`` runs the
   source on a background thread behind a queue of ``options.prefetch`` batches.
2. **device**: :class:`DeviceFeeder` copies the next batch to the device while the current one
   runs (CUDA: pinned memory, ``non_blocking`` on a side stream). Every batch is padded to the
   run's one batch size (:func:`pad_batch`), so cuDNN autotuning, a trace or a CUDA-graph
   capture (:mod:`utils.inference.cuda_graph`) happens once per run.
3. **network** on the main thread; the logits are upsampled to each frame's size (sigmoid) on
   the device, and on CUDA turned into the 8-bit map there too, then copied back without a
   host synchronisation (:class:`InFlight`). A batch is retired (its results waited for and
   checked for NaN/inf) only after the next batch has been launched.
4. **writers**: a ``workers.OrderedPool`` of threads finishes each map (CRF, 8-bit,
   :func:`utils.inference.postprocess.finish_map`) and writes the PNG; its results come back in
   frame order, so a sink (the video overlay) sees the masks in order.

``workers.StageClock`` adds up the busy seconds of each stage (they overlap, so the shares of a
run can add up to more than its wall time).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from utils.cli import UserError, progress
from utils.data.images import read_rgb
from utils.device import AMP_DTYPES, autocast, torch_threads
from utils.inference.cuda_graph import GraphReplay
from utils.inference.postprocess import finish_map, logits_to_probability, probability_to_uint8
from utils.io import atomic_write_with, open_image
from utils.inference.workers import OrderedPool, StageClock, prefetch

#: ``(image, flow) -> pred_s`` logits ``(N, 1, H, W)``.
Predictor = Callable[[Tensor, Tensor], Tensor]
#: Called in frame order with each written frame's sample (``sequence``, ``frame``, ...) and map.
MaskSink = Callable[[dict, np.ndarray], None]
#: zlib level of the written maps: level 1 encodes a 1280x720 map about 4x faster than PIL's
#: default 6 for files about 10% larger (the pixels are the same).
PNG_COMPRESS_LEVEL = 1
#: Keys of a sample that go into the batch's tensors; the rest is the sample's description.
TENSOR_KEYS = ("image", "flow")


@dataclass
class PredictionStats:
    """What one pipeline run did."""

    written: List[str] = field(default_factory=list)
    skipped_existing: int = 0
    unpredicted: List[Tuple[str, str, str]] = field(default_factory=list)
    frames: int = 0
    model_seconds: float = 0.0
    wall_seconds: float = 0.0
    stage_seconds: Dict[str, float] = field(default_factory=dict)
    cuda_graphs: bool = False  # the forward passes were replays of one captured CUDA graph

    @property
    def model_fps(self) -> Optional[float]:
        """Frames per second of the forward passes alone (None when nothing ran)."""
        return self.frames / self.model_seconds if self.model_seconds > 0 else None

    @property
    def end_to_end_fps(self) -> Optional[float]:
        """Frames per second from loading to the written PNG (None when nothing ran)."""
        return self.frames / self.wall_seconds if self.wall_seconds > 0 else None


@dataclass
class PredictOptions:
    """How the pipeline runs: output mode, batching, precision, threads and resuming."""

    mode: str = "saliency"
    threshold: float = 0.5
    batchsize: int = 1
    workers: int = 0
    amp: str = "off"
    crf: bool = False
    skip_existing: bool = False
    torch_threads: Optional[int] = None  # torch threads during the loop (onnx: 1, see inference.py)
    writer_threads: int = 2
    prefetch: int = 2  # batches the source may run ahead of the network
    maps_on_device: Optional[bool] = None  # 8-bit maps made on the device; None: off the CPU, no CRF
    show_progress: bool = True


def output_path(out_dir: Path, sequence: str, frame: str) -> Path:
    """Where the map of ``frame`` goes: ``<out_dir>/<sequence>/<frame>.png``."""
    return out_dir / sequence / f"{frame}.png"


def collate(samples: Sequence[dict]) -> dict:
    """One batch: ``samples`` (each sample's keys but the tensors, plus ``predicted``) and the
    stacked ``image``/``flow`` tensors of the samples that have them (``None`` if none has: a
    sample without tensors is one whose map exists already, passed along for the sink)."""
    predicted = [s for s in samples if "image" in s]
    batch = {k: torch.stack([s[k] for s in predicted]) if predicted else None for k in TENSOR_KEYS}
    batch["samples"] = [{**{k: v for k, v in s.items() if k not in TENSOR_KEYS}, "predicted": "image" in s}
                        for s in samples]
    return batch


def batches_of(samples: Iterable[dict], size: int) -> Iterator[dict]:
    """Group ``samples`` into collated batches of ``size`` samples to predict (the last one may
    be shorter); samples without tensors ride along, at most ``4 * size`` samples a batch."""
    group: List[dict] = []
    count = 0
    for sample in samples:
        group.append(sample)
        count += "image" in sample
        if count == size or len(group) >= 4 * size:
            yield collate(group)
            group, count = [], 0
    if group:
        yield collate(group)


def pinned(batches: Iterable[dict], device: torch.device) -> Iterator[dict]:
    """``batches`` with their tensors in pinned host memory when ``device`` is CUDA (run it on the
    source thread, so that the copy to the device can start without a host-side copy)."""
    for batch in batches:
        if device.type == "cuda" and batch["image"] is not None:
            batch = {**batch, **{k: batch[k].pin_memory() for k in TENSOR_KEYS}}
        yield batch


class DeviceFeeder:
    """Copies a batch's tensors to the device; on CUDA from pinned memory on a side stream, so
    the copy of the next batch overlaps the current forward pass."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def send(self, batch: Optional[dict]) -> Optional[dict]:
        """``batch`` with ``image``/``flow`` on the device (copies started, not waited for)."""
        if batch is None or batch["image"] is None:
            return batch
        if self.stream is None:
            return {**batch, **{k: batch[k].to(self.device) for k in TENSOR_KEYS}}
        with torch.cuda.stream(self.stream):
            moved = {k: (batch[k] if batch[k].is_pinned() else batch[k].pin_memory())
                     .to(self.device, non_blocking=True) for k in TENSOR_KEYS}
            copied = torch.cuda.Event()
            copied.record(self.stream)
        return {**batch, **moved, "copied": copied}

    def ready(self, batch: dict) -> dict:
        """Make the compute stream wait for ``batch``'s own copies (not for later batches')."""
        if batch.get("copied") is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(batch["copied"])
            for key in TENSOR_KEYS:
                batch[key].record_stream(current)
        return batch


class ForwardClock:
    """Seconds spent in forward passes: CUDA events on the GPU (no host synchronisation per
    batch), the wall clock on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.events: List[Tuple[Any, Any]] = []
        self.cpu_seconds = 0.0

    @contextmanager
    def forward(self) -> Iterator[None]:
        """Time the block as one forward pass."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self.events.append((start, end))
            return
        tic = time.perf_counter()
        yield
        self.cpu_seconds += time.perf_counter() - tic

    def seconds(self) -> float:
        """Total forward seconds so far (waits for the GPU on CUDA)."""
        if self.cuda and self.events:
            self.events[-1][1].synchronize()
        return self.cpu_seconds + sum(a.elapsed_time(b) for a, b in self.events) / 1000.0


def pad_batch(tensor: Tensor, size: int) -> Tensor:
    """Repeat the last sample so that a short last batch keeps the run's one batch shape."""
    missing = size - tensor.shape[0]
    return torch.cat([tensor, tensor[-1:].expand(missing, *tensor.shape[1:])]) if missing > 0 else tensor


def _to_host(tensor: Tensor) -> Tensor:
    """Start copying ``tensor`` to (pinned) host memory without waiting for it (CUDA)."""
    if tensor.device.type == "cpu":
        return tensor
    return torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True).copy_(tensor, non_blocking=True)


@dataclass
class InFlight:
    """A launched batch: per predicted frame, results being copied to the host, and the event
    that says they have arrived (``None`` on the CPU)."""

    samples: List[dict]
    maps: List[Tensor] = field(default_factory=list)
    finite: Optional[Tensor] = None  # per predicted frame: are its logits finite
    event: Optional[Any] = None

    def wait(self) -> None:
        """Block until the results are on the host."""
        if self.event is not None:
            self.event.synchronize()


def _postprocess_on_device(logits: Tensor, samples: List[dict], options: PredictOptions,
                           finish: bool) -> List[Tensor]:
    """Per frame: the frame-size probability, or with ``finish`` the 8-bit map (no CRF)."""
    maps = []
    for k, sample in enumerate(samples):
        prob = logits_to_probability(logits[k], (int(sample["height"]), int(sample["width"])))
        maps.append(probability_to_uint8(prob, options.mode, options.threshold) if finish else prob)
    return maps


def save_map(array: np.ndarray, path: Path) -> None:
    """Write a uint8 map as a PNG (:data:`PNG_COMPRESS_LEVEL`), atomically."""
    atomic_write_with(path, lambda buf: Image.fromarray(array).save(
        buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL))


def _read_map(sample: dict, path: Path) -> Tuple[dict, np.ndarray, Optional[str]]:
    """The map of a frame that was already on disk (for the sink); nothing is written."""
    return sample, np.asarray(open_image(path).convert("L")), None


def _write_map(value: Tensor, sample: dict, path: Path, options: PredictOptions,
               clock: StageClock) -> Tuple[dict, np.ndarray, Optional[str]]:
    """Finish one frame's map (unless the device did: uint8) and save it as ``path``."""
    with clock.time("write"):
        if value.dtype == torch.uint8:
            array = value.numpy()
        else:
            frame = None
            if options.crf:
                rgb = sample.get("rgb")
                frame = rgb if rgb is not None else np.asarray(read_rgb(sample["frame_path"]))
            array = finish_map(value, options.mode, options.threshold, frame)
        save_map(array, path)
    return sample, array, str(path)


def _check_finite(flight: InFlight) -> None:
    if flight.finite is None:
        return
    predicted = [s for s in flight.samples if s["predicted"]]
    bad = [f"{s['sequence']}/{s['frame']}" for s, ok in zip(predicted, flight.finite.tolist()) if not ok]
    if bad:
        raise UserError(f"the network produced NaN/inf for {len(bad)} frame(s), first {bad[0]} "
                        f"(maps written so far are kept)",
                        "check the checkpoint (an earlier epoch?), try --amp off or --backend plain")


def run_pipeline(predictor: Predictor, batches: Iterable[dict], out_dir: Path, device: torch.device,
                 options: PredictOptions, total: int, desc: str = "inference",
                 on_mask: Optional[MaskSink] = None, clock: Optional[StageClock] = None
                 ) -> PredictionStats:
    """Predict every batch of ``batches`` (from :func:`collate`) into ``out_dir``; see the module
    docstring for how the stages overlap. ``total`` frames are expected (the progress bar);
    ``on_mask(sample, map)`` is called in frame order after each map is on disk.
    Non-finite logits stop the run with a :class:`UserError`.
    """
    stats, clock = PredictionStats(cuda_graphs=isinstance(predictor, GraphReplay)), clock or StageClock()
    size, dtype = options.batchsize, AMP_DTYPES[options.amp]
    feeder, forward_clock = DeviceFeeder(device), ForwardClock(device)
    finish_on_device = (device.type != "cpu" if options.maps_on_device is None
                        else options.maps_on_device) and not options.crf

    def collect(result: Tuple[dict, np.ndarray, Optional[str]]) -> None:
        sample, array, path = result
        if path is not None:
            stats.written.append(path)
        if on_mask is not None:
            with clock.time("sink"):
                on_mask(sample, array)

    def launch(batch: dict) -> InFlight:
        if batch["image"] is None:
            return InFlight(batch["samples"])
        samples = [s for s in batch["samples"] if s["predicted"]]
        count, batch = len(samples), feeder.ready(batch)
        image, flow = pad_batch(batch["image"], size), pad_batch(batch["flow"], size)
        with torch.inference_mode():
            with forward_clock.forward(), autocast(device.type, dtype):
                # a GraphReplay's logits are its static output: everything below reads them on
                # this stream before the next launch replays the graph (the maps are new tensors)
                logits = predictor(image, flow)[:count]
            finite = torch.isfinite(logits).flatten(1).all(1)
            maps = _postprocess_on_device(logits, samples, options, finish_on_device)
            maps, finite = [_to_host(m) for m in maps], _to_host(finite)
        event = None
        if device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
        return InFlight(batch["samples"], maps, finite, event)

    def retire(flight: InFlight) -> None:
        flight.wait()
        _check_finite(flight)
        maps = iter(flight.maps)
        for sample in flight.samples:
            path = output_path(out_dir, sample["sequence"], sample["frame"])
            if sample["predicted"]:
                pool.submit(_write_map, next(maps), sample, path, options, clock)
            elif on_mask is not None:
                pool.submit(_read_map, sample, path)
        stats.frames += len(flight.maps)
        bar.update(len(flight.maps))

    start = time.perf_counter()
    with torch_threads(options.torch_threads), \
            OrderedPool(options.writer_threads, 2 * size, collect) as pool, \
            progress(total=total, desc=desc, unit="frame", enabled=options.show_progress) as bar:
        source = iter(prefetch(batches, options.prefetch))
        try:
            upcoming, flight = feeder.send(next(source, None)), None
            while upcoming is not None:
                current, upcoming = upcoming, feeder.send(next(source, None))  # next copy overlaps
                launched = launch(current)
                if flight is not None:
                    retire(flight)  # the previous batch, while this one runs
                flight = launched
            if flight is not None:
                retire(flight)
            pool.drain()
        finally:
            source.close()
    stats.wall_seconds = time.perf_counter() - start
    stats.model_seconds = forward_clock.seconds()
    clock.add("model", stats.model_seconds)
    stats.stage_seconds = {k: round(v, 3) for k, v in clock.seconds.items()}
    return stats
