"""Batched FSNet prediction over a :class:`utils.data.TestDataset`, written as PNG maps.

Frames are loaded and resized by DataLoader worker processes while the model runs; each batch's
logits are upsampled to the frame size (sigmoid probability) on the model's device in the main
thread, and the rest of the post-processing -- the optional CRF, the 8-bit map and the PNG
encoding, one path for every mode (:func:`utils.inference.postprocess.finish_map`) -- runs in a
thread pool, overlapping the next batch.

Backends (``--backend``; docs/inference.md#backends): ``plain`` the unmodified ``FSNet.forward``
(official arithmetic), ``eager`` / ``jit`` the BN-folded appearance-only network of
:mod:`lib.fast` run op by op / traced with TorchScript, ``onnx`` the same network exported
(:mod:`lib.export`) and run by ONNX Runtime. ``auto`` picks :data:`CPU_AUTO_ORDER`'s first
available backend on the CPU and ``eager`` on CUDA.
Timings: ``model_seconds`` covers only the forward passes (bracketed by
``torch.cuda.synchronize()`` on CUDA), ``wall_seconds`` the whole loop from the first batch
request to the last file on disk.
"""
from __future__ import annotations

import functools
import importlib.util
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from utils.checkpoint import build_model_from_checkpoint
from utils.cli import BadInputError, MissingInputError, UserError, progress
from utils.data.dataset import TestDataset
from utils.data.images import read_rgb
from utils.device import torch_threads
from utils.inference.postprocess import finish_map, logits_to_probability
from utils.io import save_image

#: ``(image, flow) -> pred_s`` logits ``(N, 1, H, W)``.
Predictor = Callable[[Tensor, Tensor], Tensor]
BACKENDS = ("auto", "plain", "eager", "jit", "onnx")
#: ``--backend auto`` on the CPU: the first of these that is installed (measured fastest first,
#: docs/benchmarks.md#inference).
CPU_AUTO_ORDER = ("onnx", "jit")
AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: ``--batchsize auto``: small batches on the CPU (large ones only add memory traffic), 32 on CUDA.
AUTO_BATCH = {"cpu": 1, "cuda": 32}


class PlainPredictor(nn.Module):
    """The unmodified FSNet forward, keeping ``pred_s`` (the official inference path)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    @torch.inference_mode()
    def forward(self, image: Tensor, flow: Tensor) -> Tensor:
        return self.model(image, flow)[0]


def onnxruntime_available() -> bool:
    """Whether the optional ``onnx`` and ``onnxruntime`` packages can be imported."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))
    except ValueError:  # a module set to None in sys.modules (tests simulate its absence so)
        return False


def resolve_backend(backend: str, device: torch.device, amp: str = "off") -> str:
    """The concrete backend for ``--backend`` (``auto`` resolved); refuses impossible choices."""
    if backend not in BACKENDS:
        raise BadInputError(f"--backend {backend!r} is unknown", f"use one of {', '.join(BACKENDS)}")
    if device.type == "cpu" and amp == "bf16":
        from lib.fast import cpu_has_native_bf16
        if not cpu_has_native_bf16():
            print("warning: this CPU has no native bf16 (AVX512-BF16, AMX or Arm BF16): --amp bf16 "
                  "is emulated and slower than the float32 default; drop --amp", file=sys.stderr)
    if backend == "auto":
        if device.type != "cpu" or amp != "off":
            return "eager"  # autocast runs op by op; ONNX Runtime here is CPU float32 only
        return next(name for name in CPU_AUTO_ORDER if name != "onnx" or onnxruntime_available())
    if backend == "onnx":
        if device.type != "cpu" or amp != "off":
            raise BadInputError(f"--backend onnx runs float32 on the CPU (asked: --device {device}, "
                                f"--amp {amp})", "use --device cpu --amp off, or --backend eager")
        from lib.export import require_onnxruntime
        try:
            require_onnxruntime()
        except ImportError as error:
            raise UserError(str(error)) from error
    return backend


def resolve_batchsize(batchsize: str | int, device: torch.device) -> int:
    """``--batchsize``: a positive integer, or ``auto`` (:data:`AUTO_BATCH` by device type)."""
    if batchsize == "auto":
        return AUTO_BATCH.get(device.type, AUTO_BATCH["cuda"])
    try:
        value = int(batchsize)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise BadInputError(f"--batchsize {batchsize!r} is not a positive integer",
                            "use auto or a number such as 1 (CPU) or 32 (GPU)")
    return value


def require_checkpoint(model_path: str) -> Path:
    """``model_path`` as a Path; a missing file is a :class:`MissingInputError` with the fix."""
    path = Path(model_path)
    if not path.is_file():
        raise MissingInputError(
            f"checkpoint not found: {path}",
            "download the released model with python -m utils.weights fsnet, or pass --model_path "
            "to a checkpoint train.py wrote (snapshot/<run_name>/finetune/FSNet-<epoch>epoch.pth)")
    return path


@dataclass
class LoadedPredictor:
    """A predictor ready to run, the checkpoint's backbone and the export cache's state (``hit``,
    ``miss`` or ``off`` for the ``onnx`` backend, ``None`` for the others)."""

    predictor: Predictor
    backbone: str
    cache: Optional[str] = None


def _load_model(path: Path, backbone: str) -> nn.Module:
    """FSNet from the checkpoint at ``path``; ``backbone`` other than ``auto`` must match."""
    try:
        model = build_model_from_checkpoint(str(path), map_location="cpu").eval()
    except ValueError as error:
        message = str(error) if str(path) in str(error) else f"{path}: {error}"
        raise BadInputError(f"{message} Pass --model_path to an FSNet checkpoint.") from error
    _check_backbone(path, model.backbone_name, backbone)
    return model


def _check_backbone(path: Path, found: str, asked: str) -> None:
    if asked not in ("auto", found):
        raise BadInputError(
            f"Checkpoint {path} holds a {found} FSNet but --backbone {asked} was "
            f"asked for: drop --backbone (it is detected from the checkpoint) or pass the right file.")


def load_predictor(model_path: str, device: torch.device, backbone: str = "auto",
                   backend: str = "plain", testsize: int = 352, cache: bool = True,
                   amp: str = "off") -> LoadedPredictor:
    """Build FSNet from a checkpoint (backbone detected from its keys) and wrap it for inference.

    ``backbone`` other than ``auto`` must match the checkpoint's. ``backend`` is a concrete one
    (see :func:`resolve_backend`); ``onnx`` exports the network at ``testsize``, or with ``cache``
    loads the export of an earlier run from :mod:`utils.export_cache` without reading the
    checkpoint. ``amp`` ``bf16`` on the CPU with ``eager``/``jit`` stores the folded weights in
    bf16 (:func:`lib.fast.build_fast_model`'s ``dtype``; faster than autocast). A checkpoint with
    NaN/inf weights is refused.
    """
    path = require_checkpoint(model_path)
    if backend == "onnx":
        return _onnx(path, backbone, testsize, cache)
    model = _load_model(path, backbone)
    name = model.backbone_name
    if backend == "plain":
        return LoadedPredictor(PlainPredictor(model).to(device), name)
    from lib.fast import build_fast_model
    dtype = AMP_DTYPES[amp] if device.type == "cpu" and amp == "bf16" else torch.float32
    fast = build_fast_model(model, backend=backend, inplace=True, dtype=dtype)
    return LoadedPredictor(fast.to(device), name)


def _onnx(path: Path, backbone: str, testsize: int, cache: bool) -> LoadedPredictor:
    """The ``onnx`` backend: through the export cache, or a fresh export (``cache`` off)."""
    from lib.export import OnnxLoadError, OnnxPredictor, onnx_predictor
    if not cache:
        model = _load_model(path, backbone)
        return LoadedPredictor(onnx_predictor(model, testsize), model.backbone_name, "off")
    from utils.export_cache import cache_root, cached_export
    load = functools.partial(_load_model, path, backbone)  # called on a cache miss only
    try:
        entry = cached_export(path, testsize, load)
    except OSError as error:  # e.g. a read-only or full hub folder: run without the cache
        if isinstance(error, UserError):  # the checkpoint's own problem, reported as it is
            raise
        print(f"warning: the export cache {cache_root()} cannot be used ({error}); exporting "
              f"without it", file=sys.stderr)
        return _onnx(path, backbone, testsize, cache=False)
    _check_backbone(path, entry.backbone, backbone)
    try:
        predictor = OnnxPredictor(entry.optimized_path, optimized=True)
    except OnnxLoadError as error:  # a damaged entry
        entry = cached_export(path, testsize, load, rebuild=str(error))
        predictor = OnnxPredictor(entry.optimized_path, optimized=True)
    return LoadedPredictor(predictor, entry.backbone, entry.state)


def check_no_empty_sequence(dataset: TestDataset, dataset_dir: Path) -> None:
    """Raise ``ValueError`` naming any sequence folder that holds no frame at all."""
    seen = {s[0] for s in dataset.samples} | {u[0] for u in dataset.unpredicted}
    empty = [name for name in dataset.sequences if name not in seen]
    if empty:
        raise BadInputError(
            f"Empty sequence(s) under {dataset_dir}: {', '.join(empty)} hold no frame images. "
            f"Add the frames or remove these folders.")


@dataclass
class PredictionStats:
    """What one :func:`predict_dataset` call did."""

    written: List[str] = field(default_factory=list)
    skipped_existing: int = 0
    unpredicted: List[Tuple[str, str, str]] = field(default_factory=list)
    frames: int = 0
    model_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def model_fps(self) -> Optional[float]:
        """Frames per second of the forward passes alone (None when nothing ran)."""
        return self.frames / self.model_seconds if self.model_seconds > 0 else None

    @property
    def end_to_end_fps(self) -> Optional[float]:
        """Frames per second from loading to the written PNG (None when nothing ran)."""
        return self.frames / self.wall_seconds if self.wall_seconds > 0 else None


def output_path(out_dir: Path, sequence: str, frame: str) -> Path:
    """Where the map of ``frame`` goes: ``<out_dir>/<sequence>/<frame>.png``."""
    return out_dir / sequence / f"{frame}.png"


def _write_map(prob: Tensor, mode: str, threshold: float, crf: bool, frame_path: str,
               path: Path) -> str:
    """Post-process one frame's probability (optionally with DenseCRF on its RGB frame) and save it."""
    frame = np.asarray(read_rgb(frame_path)) if crf else None
    save_image(finish_map(prob, mode, threshold, frame), path)
    return str(path)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _pad_batch(tensor: Tensor, size: int) -> Tensor:
    """Repeat the last sample so that a short last batch keeps the traced batch shape."""
    missing = size - tensor.shape[0]
    return torch.cat([tensor, tensor[-1:].expand(missing, *tensor.shape[1:])]) if missing else tensor


def _check_finite(logits: Tensor, batch: dict) -> None:
    bad = [f"{batch['sequence'][k]}/{batch['frame'][k]}" for k in range(logits.shape[0])
           if not torch.isfinite(logits[k]).all()]
    if bad:
        raise UserError(f"the network produced NaN/inf for {len(bad)} frame(s), first {bad[0]} "
                        f"(maps written so far are kept)",
                        "check the checkpoint (an earlier epoch?), try --amp off or --backend plain")


@dataclass
class PredictOptions:
    """How :func:`predict_dataset` runs: output mode, batching, precision and resuming."""

    mode: str = "saliency"
    threshold: float = 0.5
    batchsize: int = 1
    workers: int = 0
    amp: str = "off"
    crf: bool = False
    skip_existing: bool = False
    fixed_batch: bool = False  # pad the last batch (traced backends: one trace per shape)
    torch_threads: Optional[int] = None  # torch threads during the loop (onnx: 1, see predict.py)
    show_progress: bool = True


def predict_dataset(predictor: Predictor, dataset: TestDataset, out_dir: Path, device: torch.device,
                    options: PredictOptions, desc: str = "inference") -> PredictionStats:
    """Predict every frame of ``dataset`` into ``out_dir/<seq>/<frame>.png``; return the stats.

    ``options.skip_existing`` leaves frames whose PNG already exists untouched (resume). Frames
    the dataset cannot predict (e.g. the last frame without flow) are listed in ``unpredicted``.
    Non-finite logits stop the run with a :class:`UserError`.
    """
    stats = PredictionStats(unpredicted=list(dataset.unpredicted))
    indices = list(range(len(dataset)))
    if options.skip_existing:
        indices = [i for i in indices if not output_path(out_dir, *dataset.samples[i][:2]).is_file()]
        stats.skipped_existing = len(dataset) - len(indices)
    if not indices:
        return stats
    size = options.batchsize
    loader = DataLoader(Subset(dataset, indices), batch_size=size, shuffle=False,
                        num_workers=options.workers, pin_memory=device.type == "cuda")
    dtype = AMP_DTYPES[options.amp]
    pending: List[Future] = []
    start = time.perf_counter()
    with torch_threads(options.torch_threads), ThreadPoolExecutor(max_workers=2) as pool, \
            progress(total=len(indices), desc=desc, unit="frame", enabled=options.show_progress) as bar:
        for batch in loader:
            count = batch["image"].shape[0]
            image, flow = (batch[key].to(device, non_blocking=True) for key in ("image", "flow"))
            if options.fixed_batch:
                image, flow = _pad_batch(image, size), _pad_batch(flow, size)
            _synchronize(device)
            tic = time.perf_counter()
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                        enabled=dtype is not None):
                logits = predictor(image, flow)[:count]
            _synchronize(device)
            stats.model_seconds += time.perf_counter() - tic
            _check_finite(logits, batch)
            with torch.inference_mode():
                for k in range(count):
                    size_k = (int(batch["height"][k]), int(batch["width"][k]))
                    prob = logits_to_probability(logits[k], size_k).cpu()
                    path = output_path(out_dir, batch["sequence"][k], batch["frame"][k])
                    pending.append(pool.submit(_write_map, prob, options.mode, options.threshold,
                                               options.crf, batch["frame_path"][k], path))
            stats.frames += count
            # Bound the queue of maps waiting to be written to about two batches.
            while len(pending) > 2 * size:
                stats.written.append(pending.pop(0).result())
            bar.update(count)
        stats.written.extend(future.result() for future in pending)
    stats.wall_seconds = time.perf_counter() - start
    return stats
