"""FSNet predictors (backends), the batch size of a run, and prediction over a
:class:`utils.data.TestDataset` through the one streaming pipeline
(:mod:`utils.inference.pipeline`): frames are loaded and resized by DataLoader worker processes
while the model runs, and maps are finished and written by writer threads.

Backends (``--backend``; docs/inference.md#backends): ``plain`` the unmodified ``FSNet.forward``
(official arithmetic), ``eager`` / ``jit`` the BN-folded appearance-only network of
:mod:`lib.fast` run op by op / traced with TorchScript, ``onnx`` the same network exported
(:mod:`lib.export`) and run by ONNX Runtime. ``auto`` picks :data:`CPU_AUTO_ORDER`'s first
available backend on the CPU and ``eager`` on CUDA.
Timings: ``model_seconds`` covers only the forward passes (CUDA events on the GPU),
``wall_seconds`` the whole loop from the first batch request to the last file on disk.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from lib.checkpoint import build_fsnet
from utils.cli import BadInputError, MissingInputError, UserError
from utils.data.dataset import TestDataset
from utils.data.images import is_complete_image
from utils.device import AMP_DTYPES
from utils.inference.pipeline import (PredictionStats, PredictOptions, Predictor, collate,
                                      output_path, run_pipeline)
from utils.weights import user_errors

__all__ = ["BACKENDS", "PredictionStats", "PredictOptions", "Predictor",
           "load_predictor", "output_path", "predict_dataset", "resolve_backend",
           "resolve_batchsize", "resolve_workers"]
BACKENDS = ("auto", "plain", "eager", "jit", "onnx")
#: ``--backend auto`` on the CPU: the first of these that is installed (measured fastest first,
#: docs/benchmarks.md#inference).
CPU_AUTO_ORDER = ("onnx", "jit")
#: ``--batchsize auto``: the largest batch by device type (CPU: large batches only add memory
#: traffic); on CUDA a set of N frames gets at most N / 4 (:func:`auto_batchsize`).
AUTO_BATCH = {"cpu": 1, "cuda": 32}
#: Full batches a set needs at least, for ``--batchsize auto`` to pick a batch size.
MIN_BATCHES = 4


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


def auto_batchsize(device: torch.device, frames: Optional[int] = None) -> int:
    """``--batchsize auto``: :data:`AUTO_BATCH` of the device type, on a set of ``frames`` frames
    lowered to the largest power of two that fills :data:`MIN_BATCHES` batches (at least 1), so a
    small set neither pads most of its last batch nor waits for one batch before any map."""
    cap = AUTO_BATCH.get(device.type, AUTO_BATCH["cuda"])
    if frames is None:
        return cap
    size = 1
    while size * 2 <= cap and frames >= MIN_BATCHES * size * 2:
        size *= 2
    return size


def resolve_batchsize(batchsize: str | int, device: torch.device, frames: Optional[int] = None) -> int:
    """``--batchsize``: a positive integer, or ``auto`` (:func:`auto_batchsize`)."""
    if batchsize == "auto":
        return auto_batchsize(device, frames)
    try:
        value = int(batchsize)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise BadInputError(f"--batchsize {batchsize!r} is not a positive integer",
                            "use auto or a number such as 1 (CPU) or 32 (GPU)")
    return value


def resolve_workers(workers: int | str, device: torch.device, batches: Optional[int] = None) -> int:
    """``--workers``: a whole number >= 0, or ``auto``: 1 on the CPU, on CUDA ``min(8, cores)``
    and no more than the run has batches."""
    if workers == "auto":
        if device.type == "cpu":
            return 1
        return max(1, min(8, os.cpu_count() or 1, batches or 8))
    try:
        value = int(workers)
    except (TypeError, ValueError):
        value = -1
    if value < 0:
        raise BadInputError(f"--workers {workers!r} is not a whole number >= 0",
                            "use auto, 0 (load in the main process) or a small number such as 1")
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
    with user_errors():  # each error names the file and the fix
        model = build_fsnet(path)  # whatever FSNet variant the file holds
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
    """Build the FSNet variant a checkpoint holds (:func:`lib.checkpoint.build_fsnet`) and wrap it
    for inference.

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


def predict_dataset(predictor: Predictor, dataset: TestDataset, out_dir: Path, device: torch.device,
                    options: PredictOptions, desc: str = "inference") -> PredictionStats:
    """Predict every frame of ``dataset`` into ``out_dir/<seq>/<frame>.png``; return the stats.

    ``options.skip_existing`` leaves frames whose PNG already exists and is complete untouched
    (resume; an empty or truncated PNG is written again). Frames
    the dataset cannot predict (e.g. the last frame without flow) are listed in ``unpredicted``.
    Non-finite logits stop the run with a :class:`UserError`.
    """
    indices = list(range(len(dataset)))
    if options.skip_existing:
        indices = [i for i in indices
                   if not is_complete_image(output_path(out_dir, *dataset.samples[i][:2]))]
    if indices:
        loader = DataLoader(Subset(dataset, indices), batch_size=options.batchsize, shuffle=False,
                            num_workers=options.workers, pin_memory=device.type == "cuda",
                            collate_fn=collate)
        stats = run_pipeline(predictor, loader, out_dir, device, options, len(indices), desc)
    else:
        stats = PredictionStats()
    stats.unpredicted = list(dataset.unpredicted)
    stats.skipped_existing = len(dataset) - len(indices)
    return stats
