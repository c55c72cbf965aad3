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

import importlib.util
import os
from pathlib import Path
from typing import Optional, Tuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from lib.checkpoint import build_fsnet
from utils.cli import BadInputError, MissingInputError, UserError
from utils.data.dataset import TestDataset
from utils.data.images import is_complete_image
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


def load_predictor(model_path: str, device: torch.device, backbone: str = "auto",
                   backend: str = "plain", testsize: int = 352) -> Tuple[Predictor, str]:
    """Build the FSNet variant a checkpoint holds (:func:`lib.checkpoint.build_fsnet`) and wrap it
    for inference.

    ``backbone`` other than ``auto`` must match the checkpoint's. ``backend`` is a concrete one
    (see :func:`resolve_backend`); ``onnx`` exports the network at ``testsize``. A checkpoint
    with NaN/inf weights is refused. Returns ``(predictor, backbone_name)``.
    """
    path = require_checkpoint(model_path)
    with user_errors():  # each error names the file and the fix
        model = build_fsnet(path)  # whatever FSNet variant the file holds
    if backbone not in ("auto", model.backbone_name):
        raise BadInputError(
            f"Checkpoint {path} holds a {model.backbone_name} FSNet but --backbone {backbone} was "
            f"asked for: drop --backbone (it is detected from the checkpoint) or pass the right file.")
    name = model.backbone_name
    return _wrap(model, backend, testsize, device), name  # _wrap consumes model (in-place fold)


def _wrap(model: nn.Module, backend: str, testsize: int, device: torch.device) -> Predictor:
    if backend == "plain":
        return PlainPredictor(model).to(device)
    if backend == "onnx":
        from lib.export import onnx_predictor
        return onnx_predictor(model, testsize)
    from lib.fast import build_fast_model
    return build_fast_model(model, backend=backend, inplace=True).to(device)


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
