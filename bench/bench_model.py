"""Benchmark FSNet: parameters, FLOPs, latency and peak memory, plain eval forward vs fast path.

    python -m bench.bench_model [--backbone resnet50] [--size 352] [--repeats 10] [--device cpu]
        [--threads 2 1]

Times the plain eval forward (the official arithmetic) and the BN-folded appearance network with
each backend of ``inference.py --backend`` (``eager``, ``jit``, and ``onnx`` when onnxruntime is
installed), interleaved round-robin (fair ratios on a shared machine), and each one's first call
(which includes the TorchScript trace; the ONNX export is timed separately). ``default`` is the
backend ``--backend auto`` picks. With several ``--threads`` values every setting is measured in
turn. On CUDA it also reports bf16/fp16 autocast latency and batch-32 throughput. Weights are
random (``tests.random_weights.randomize_weights``); the script prints each path's max abs difference from
the plain forward. The default path's achieved rate (the eager fast path's FLOP count over its
median time) is printed beside the fp32 rate of a 2048-cubed matrix product timed in the same
round-robin (the same threads and the same load).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from lib.backbones import BACKBONES
from lib.fast import build_fast_model
from lib.fsnet import FSNet
from tests.random_weights import randomize_weights
from utils.inference.predict import onnxruntime_available, resolve_backend
from utils.device import autocast


GEMM, GEMM_N = "fp32 GEMM", 2048  # timed among the forwards: the same load for both


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_latency(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time (s) of ``fn`` over ``repeats`` runs after two warm-up runs."""
    return interleaved_latency({"fn": fn}, repeats, device)["fn"]


def interleaved_latency(fns: dict[str, Callable[[], object]], repeats: int,
                        device: torch.device) -> dict[str, float]:
    """Median wall time (s) per function, runs interleaved round-robin after two warm-ups each.

    Interleaving makes the ratios fair on a machine shared with other jobs.
    """
    for fn in fns.values():
        for _ in range(2):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory of one call: CUDA allocator peak, or on CPU the peak of live tensors."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _cpu_peak_mb(fn)


def _cpu_peak_mb(fn: Callable[[], object]) -> float:
    """Peak of CPU tensor memory allocated during ``fn`` (weights excluded), in MiB.

    Replays the profiler's per-op self allocation/free sizes in start order.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak / 2**20


def count_flops(fn: Callable[[], object]) -> float:
    """FLOPs (conv/matmul, 2 per MAC) counted by ``torch.utils.flop_counter``."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def _predictors(model: FSNet, device: torch.device, size: int) -> dict[str, Callable]:
    """Name -> ``(image, flow) -> logits`` for the plain forward and every available backend."""
    def plain(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(image, flow)[0]

    predictors: dict[str, Callable] = {"plain eval forward": plain}
    for backend in ("eager", "jit"):
        predictors[f"fast path ({backend})"] = build_fast_model(model, backend=backend).to(device)
    if device.type == "cpu" and onnxruntime_available():
        from lib.export import OnnxPredictor, export_bytes
        start = time.perf_counter()
        predictors["fast path (onnx)"] = OnnxPredictor(export_bytes(model, size))
        print(f"ONNX export + session: {time.perf_counter() - start:.1f} s")
    return predictors


def measure(model: FSNet, device: torch.device, size: int, repeats: int) -> dict:
    """Rows (FLOPs, first call, latency, speed-up, peak memory, max diff) at the current threads."""
    gen = torch.Generator().manual_seed(0)
    image, flow = (torch.randn(1, 3, size, size, generator=gen).to(device) for _ in range(2))
    predictors = _predictors(model, device, size)
    fns = {name: (lambda p=p: p(image, flow)) for name, p in predictors.items()}
    a, b = (torch.randn(GEMM_N, GEMM_N, device=device) for _ in range(2))
    default = f"fast path ({resolve_backend('auto', device)})"
    reference = fns["plain eval forward"]()
    rows = {}
    for name, fn in fns.items():
        _sync(device)
        start = time.perf_counter()
        diff = (fn() - reference).abs().max().item()  # first call: includes the trace, if any
        _sync(device)
        # The counter does not see TorchScript/oneDNN/ONNX ops; they compute the same
        # convolutions as the eager fast path, so that one is counted for every fast row.
        counted = fns["fast path (eager)"] if name.startswith("fast") else fn
        rows[name] = {"first_call_s": time.perf_counter() - start, "max_abs_diff": diff,
                      "gflops": count_flops(counted) / 1e9,
                      "peak_mb": peak_memory_mb(fn, device) if "onnx" not in name else None}
    latency = interleaved_latency({**fns, GEMM: lambda: torch.mm(a, b)}, repeats, device)
    gemm = 2 * GEMM_N ** 3 / latency.pop(GEMM) / 1e9
    base = latency["plain eval forward"]
    for name, row in rows.items():
        row.update(latency_ms=latency[name] * 1e3, speedup=base / latency[name])
        peak = "     n/a" if row["peak_mb"] is None else f"{row['peak_mb']:8.1f}"
        print(f"{name:20s} {row['gflops']:6.2f} GFLOPs  median {row['latency_ms']:7.1f} ms  "
              f"x{row['speedup']:.2f}  peak activations {peak} MiB  "
              f"first call {row['first_call_s']:5.1f} s  max|diff| {row['max_abs_diff']:.1e}")
    achieved = rows[default]["gflops"] / (rows[default]["latency_ms"] / 1e3)
    print(f"default backend ({default}) speed-up: {rows[default]['speedup']:.2f}x; "
          f"{achieved:.0f} GFLOP/s = {achieved / gemm:.0%} of this run's fp32 GEMM rate "
          f"({gemm:.0f} GFLOP/s, 2048^3, {torch.get_num_threads()} threads)")
    return {"rows": rows, "default": default, "speedup": rows[default]["speedup"],
            "achieved_gflops": achieved, "fp32_gemm_gflops": gemm}


def main(argv: list[str] | None = None) -> dict:
    """Print and return parameters, FLOPs, first-call time, latency and peak memory per path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50", choices=BACKBONES)
    parser.add_argument("--size", type=int, default=352)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()],
                        help="torch (and ONNX Runtime) threads; each value is measured in turn")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    model = randomize_weights(FSNet(args.backbone)).eval().to(device)
    params = sum(p.numel() for p in model.parameters())
    used = params - sum(p.numel() for p in model.parameters() if not p.requires_grad)
    print(f"device {device}, backbone {args.backbone}, input 1x3x{args.size}x{args.size}, "
          f"torch {torch.__version__}")
    print(f"parameters: {params:,} stored, {used:,} trainable/used")
    summary: dict = {"params": params, "threads": {}}
    for threads in args.threads:
        torch.set_num_threads(threads)
        print(f"--- {threads} thread(s)")
        summary["threads"][threads] = measure(model, device, args.size, args.repeats)
    first = summary["threads"][args.threads[0]]
    summary.update(rows=first["rows"], speedup=first["speedup"])
    if device.type == "cuda":
        fast = build_fast_model(model).to(device)
        image = torch.randn(1, 3, args.size, args.size, device=device)
        summary["cuda"] = _cuda_extras(fast, image, image.clone(), args.repeats, device)
    return summary


def _cuda_extras(fast, image, flow, repeats: int, device: torch.device) -> dict:
    """bf16/fp16 autocast latency of the fast path and batch-32 throughput."""
    out = {}
    for dtype in (torch.bfloat16, torch.float16):
        def run(dtype=dtype):
            with autocast("cuda", dtype):
                return fast(image, flow)
        out[str(dtype)] = median_latency(run, repeats, device) * 1e3
        print(f"fast path autocast {str(dtype):15s} median {out[str(dtype)]:8.1f} ms")
    batch_image, batch_flow = image.expand(32, -1, -1, -1), flow.expand(32, -1, -1, -1)
    for dtype in (None, torch.float16):
        def run(dtype=dtype):
            with autocast("cuda", dtype):
                return fast(batch_image, batch_flow)
        seconds = median_latency(run, max(3, repeats // 3), device)
        out[f"batch32_fps_{dtype}"] = 32 / seconds
        print(f"batch-32 throughput ({dtype or 'fp32'}): {32 / seconds:8.1f} frames/s")
    return out


if __name__ == "__main__":
    main()
