"""Batched FSNet prediction over a :class:`utils.data.TestDataset`, written as PNG maps.

Frames are loaded and resized by DataLoader worker processes while the model runs; each batch's
logits are upsampled and post-processed on the model's device in the main thread, and the PNG
encoding (plus the optional CRF, which is CPU work) runs in a thread pool, overlapping the next
batch.
Timings: ``model_seconds`` covers only the forward passes (bracketed by
``torch.cuda.synchronize()`` on CUDA), ``wall_seconds`` the whole loop from the first batch
request to the last file on disk.
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from utils.cli import BadInputError, MissingInputError
from utils.checkpoint import build_model_from_checkpoint
from utils.data.dataset import TestDataset
from utils.io import save_image
from utils.data.images import read_rgb
from utils.inference.postprocess import crf_output, logits_to_probability, probability_to_uint8

#: ``(image, flow) -> pred_s`` logits ``(N, 1, H, W)``.
Predictor = Callable[[Tensor, Tensor], Tensor]


class PlainPredictor(nn.Module):
    """The unmodified FSNet forward, keeping ``pred_s`` (the official inference path)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    @torch.inference_mode()
    def forward(self, image: Tensor, flow: Tensor) -> Tensor:
        return self.model(image, flow)[0]


def load_predictor(model_path: str, device: torch.device, backbone: str = "auto",
                   fast: bool = True) -> Tuple[nn.Module, str]:
    """Build FSNet from a checkpoint (backbone detected from its keys) and wrap it for inference.

    ``backbone`` other than ``auto`` must match the checkpoint's. ``fast`` uses
    :func:`lib.fast.build_fast_model` (BatchNorm folded, channels_last, ``pred_s`` only).
    Returns ``(predictor, backbone_name)``.
    """
    path = Path(model_path)
    if not path.is_file():
        raise MissingInputError(
            f"Checkpoint not found: {path}. Pass --model_path to a trained FSNet checkpoint "
            f"(train.py writes snapshot/<run_name>/finetune/FSNet-<epoch>epoch.pth).")
    try:
        model = build_model_from_checkpoint(str(path), map_location="cpu").eval()
    except ValueError as error:
        message = str(error) if str(path) in str(error) else f"{path}: {error}"
        raise BadInputError(f"{message} Pass --model_path to an FSNet checkpoint.") from error
    if backbone not in ("auto", model.backbone_name):
        raise BadInputError(
            f"Checkpoint {path} holds a {model.backbone_name} FSNet but --backbone {backbone} was "
            f"asked for: drop --backbone (it is detected from the checkpoint) or pass the right file.")
    if fast:
        from lib.fast import build_fast_model
        predictor: nn.Module = build_fast_model(model)
    else:
        predictor = PlainPredictor(model)
    return predictor.to(device).eval(), model.backbone_name


def check_writable(folder: Path) -> None:
    """Create ``folder`` and write/remove a probe file; raise ``PermissionError`` with the fix."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise PermissionError(
            f"Output folder {folder} is not writable ({error.strerror or error}): "
            f"pass another --test_save or fix its permissions.") from error


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


def _write_frame(payload: np.ndarray, mode: str, threshold: float, crf: bool,
                 frame_path: str, path: Path) -> str:
    """Save one map: ``payload`` is the final uint8 map, or with ``crf`` the float probability."""
    if crf:
        payload = crf_output(np.asarray(read_rgb(frame_path)), payload, mode, threshold)
    save_image(payload, path)
    return str(path)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def predict_dataset(predictor: Predictor, dataset: TestDataset, out_dir: Path, device: torch.device,
                    mode: str = "saliency", threshold: float = 0.5, batchsize: int = 32,
                    workers: int = 0, amp: bool = False, crf: bool = False,
                    skip_existing: bool = False, desc: str = "inference",
                    progress: bool = True) -> PredictionStats:
    """Predict every frame of ``dataset`` into ``out_dir/<seq>/<frame>.png``; return the stats.

    ``skip_existing`` leaves frames whose PNG already exists untouched (resume). Frames the
    dataset cannot predict (e.g. the last frame without flow) are listed in ``unpredicted``.
    """
    stats = PredictionStats(unpredicted=list(dataset.unpredicted))
    indices = list(range(len(dataset)))
    if skip_existing:
        indices = [i for i in indices if not output_path(out_dir, *dataset.samples[i][:2]).is_file()]
        stats.skipped_existing = len(dataset) - len(indices)
    if not indices:
        return stats
    loader = DataLoader(Subset(dataset, indices), batch_size=batchsize, shuffle=False,
                        num_workers=workers, pin_memory=device.type == "cuda")
    pending: List[Future] = []
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool, \
            tqdm(total=len(indices), desc=desc, unit="frame", disable=not progress) as bar:
        for batch in loader:
            image = batch["image"].to(device, non_blocking=True)
            flow = batch["flow"].to(device, non_blocking=True)
            _synchronize(device)
            tic = time.perf_counter()
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = predictor(image, flow)
            _synchronize(device)
            stats.model_seconds += time.perf_counter() - tic
            with torch.inference_mode():
                for k in range(logits.shape[0]):
                    size = (int(batch["height"][k]), int(batch["width"][k]))
                    prob = logits_to_probability(logits[k], size)
                    payload = prob if crf else probability_to_uint8(prob, mode, threshold)
                    path = output_path(out_dir, batch["sequence"][k], batch["frame"][k])
                    pending.append(pool.submit(_write_frame, payload.cpu().numpy(), mode, threshold,
                                               crf, batch["frame_path"][k], path))
            stats.frames += logits.shape[0]
            # Bound the queue of maps waiting to be written to about two batches.
            while len(pending) > 2 * batchsize:
                stats.written.append(pending.pop(0).result())
            bar.update(logits.shape[0])
        stats.written.extend(future.result() for future in pending)
    stats.wall_seconds = time.perf_counter() - start
    return stats
