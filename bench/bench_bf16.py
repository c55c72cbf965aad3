"""bf16 on the CPU against the float32 default, on real frames: speed and agreement of the maps.

    python -m bench.bench_bf16 --model_path CKPT [--sequence car-shadow] [--testsize 352]
        [--frames 20] [--json report.json]

Frames: the real DAVIS-2016 sequence from ``../shared/real/DAVIS2016-sample`` with DIS flow
(:func:`bench.bench_inference.make_testset`; the toy set when absent). Use a trained checkpoint:
agreement figures of random weights say little. Three predictors of ``inference.py`` run on every
frame in turn (interleaved, so a busy machine slows each alike):

* ``fp32 default``: ``--backend auto`` on the CPU (ONNX Runtime, BN folded; the export cache of
  this run is a temporary folder);
* ``bf16``: ``--amp bf16`` (the folded network with its weights stored in bf16, eager);
* ``bf16 autocast``: the folded float32 network under ``torch.autocast`` (the route ``--amp bf16``
  took before), for comparison.

Reported: the median ms per forward and its ratio to the default; against the default's maps,
the IoU of the binary masks (``--mode binary``, threshold 0.5) and the MAE of the saliency maps
(``--mode saliency``, in [0, 1]) at the frames' original size; the fp32 and bf16 GEMM rates of
this run and whether the CPU has native bf16.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from bench.bench_inference import make_testset
from bench.gemm import gemm_gflops
from utils.cli import make_parser, run_guarded
from utils.data.dataset import TestDataset
from utils.export_cache import DIR_ENV
from utils.inference.postprocess import logits_to_probability, probability_to_uint8
from utils.inference.predict import load_predictor, resolve_backend
from utils.io import save_json

CPU = torch.device("cpu")


def get_args_parser() -> argparse.ArgumentParser:
    """Options of ``python -m bench.bench_bf16``."""
    parser = make_parser("python -m bench.bench_bf16", __doc__.splitlines()[0])
    parser.add_argument("--model_path", required=True, help="trained FSNet checkpoint")
    parser.add_argument("--sequence", default="car-shadow", help="real DAVIS-2016 sequence")
    parser.add_argument("--testsize", type=int, default=352)
    parser.add_argument("--frames", type=int, default=20, help="frames measured (0: all)")
    parser.add_argument("--toy", action="store_true", help="toy frames even if real ones exist")
    parser.add_argument("--json", default=None, help="also write the report here")
    return parser


def predictors(model_path: str, testsize: int) -> dict[str, Callable]:
    """The three predictors, named as in the report."""
    default = load_predictor(model_path, CPU, backend=resolve_backend("auto", CPU),
                             testsize=testsize).predictor
    bf16 = load_predictor(model_path, CPU, backend="eager", amp="bf16").predictor
    eager = load_predictor(model_path, CPU, backend="eager").predictor

    def autocast(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return eager(image, flow)
    return {"fp32 default": default, "bf16": bf16, "bf16 autocast": autocast}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks (1 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def measure(dataset: TestDataset, fns: dict[str, Callable], frames: int) -> dict[str, dict]:
    """Per predictor: median ms per forward, and mean IoU / MAE against the first predictor."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    ious: dict[str, list[float]] = {name: [] for name in fns}
    maes: dict[str, list[float]] = {name: [] for name in fns}
    count = len(dataset) if frames <= 0 else min(frames, len(dataset))
    with torch.inference_mode():
        for index in range(-1, count):  # index -1: one untimed warm-up call each
            sample = dataset[max(index, 0)]
            image, flow = sample["image"][None], sample["flow"][None]
            size = (int(sample["height"]), int(sample["width"]))
            maps = {}
            for name, fn in fns.items():
                start = time.perf_counter()
                logits = fn(image, flow)
                times[name].append(time.perf_counter() - start)
                maps[name] = logits_to_probability(logits[0].float(), size)
            if index < 0:
                times = {name: [] for name in fns}
                continue
            reference = maps[next(iter(fns))]
            for name, prob in maps.items():
                ious[name].append(iou(probability_to_uint8(prob, "binary").numpy() > 0,
                                      probability_to_uint8(reference, "binary").numpy() > 0))
                saliency = probability_to_uint8(prob, "saliency").numpy().astype(np.float64)
                expected = probability_to_uint8(reference, "saliency").numpy().astype(np.float64)
                maes[name].append(float(np.abs(saliency - expected).mean() / 255))
    base = statistics.median(times[next(iter(fns))])
    return {name: {"ms": statistics.median(values) * 1e3,
                   "speed_vs_default": base / statistics.median(values),
                   "iou_mean": float(np.mean(ious[name])), "iou_min": float(np.min(ious[name])),
                   "mae_mean": float(np.mean(maes[name])), "mae_max": float(np.max(maes[name])),
                   "frames": len(values)}
            for name, values in times.items()}


def run(args: argparse.Namespace) -> dict:
    """Build the test set, measure, print and return the report."""
    from lib.fast import cpu_has_native_bf16
    gemm = {"fp32": round(gemm_gflops()), "bf16": round(gemm_gflops(torch.bfloat16))}
    with tempfile.TemporaryDirectory(prefix="bench_bf16_") as tmp:
        os.environ[DIR_ENV] = str(Path(tmp) / "export-cache")
        testset, frames = make_testset(Path(tmp), args.sequence, args.toy)
        dataset_dir = next(folder for folder in testset.iterdir() if folder.is_dir())
        dataset = TestDataset(dataset_dir, args.testsize)
        rows = measure(dataset, predictors(args.model_path, args.testsize), args.frames)
    report = {"frames": frames, "model_path": args.model_path, "testsize": args.testsize,
              "threads": torch.get_num_threads(), "cpu": torch.backends.cpu.get_cpu_capability(),
              "native_bf16": cpu_has_native_bf16(), "gemm_gflops": gemm,
              "date": time.strftime("%Y-%m-%d"), "rows": rows}
    print(f"{frames}; {report['threads']} threads, {report['cpu']}, native bf16 "
          f"{report['native_bf16']}, GEMM fp32 {gemm['fp32']} / bf16 {gemm['bf16']} GFLOP/s")
    print(f"{'predictor':<16}{'ms/forward':>11}{'speed':>8}{'IoU mean':>10}{'IoU min':>9}"
          f"{'MAE mean':>10}{'MAE max':>9}")
    for name, row in rows.items():
        print(f"{name:<16}{row['ms']:>11.1f}{row['speed_vs_default']:>7.2f}x{row['iou_mean']:>10.4f}"
              f"{row['iou_min']:>9.4f}{row['mae_mean']:>10.5f}{row['mae_max']:>9.5f}")
    if args.json:
        save_json(report, args.json)
    return report


def main(argv: Optional[list[str]] = None) -> int:
    """Command-line entry point."""
    args = get_args_parser().parse_args(argv)
    return run_guarded(lambda: run(args), args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
