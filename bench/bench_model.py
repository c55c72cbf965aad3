"""Benchmark FSNet: parameters, FLOPs, latency and peak memory, plain eval forward vs fast path.

    python -m bench.bench_model [--backbone resnet50] [--size 352] [--repeats 10] [--device cpu]

Times the plain eval forward and the fast path with the ``eager`` and the default (``auto``)
backend, interleaved round-robin (fair ratios on a shared machine), and each one's first call
(which includes the TorchScript trace on CPU). On CUDA it also reports bf16/fp16 autocast latency
and batch-32 throughput. Weights are random (``lib.verify.randomize_weights``); the script prints
each path's max abs difference from the plain forward.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from lib.backbones import BACKBONES  # noqa: E402
from lib.fast import build_fast_model  # noqa: E402
from lib.fsnet import FSNet  # noqa: E402
from lib.verify import randomize_weights  # noqa: E402


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


def main(argv: list[str] | None = None) -> dict:
    """Print and return parameters, FLOPs, first-call time, latency and peak memory per path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50", choices=BACKBONES)
    parser.add_argument("--size", type=int, default=352)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    model = randomize_weights(FSNet(args.backbone)).eval().to(device)
    fasts = {backend: build_fast_model(model, backend=backend).to(device)
             for backend in ("eager", "auto")}
    gen = torch.Generator().manual_seed(0)
    image, flow = (torch.randn(1, 3, args.size, args.size, generator=gen).to(device)
                   for _ in range(2))

    def plain() -> torch.Tensor:
        with torch.no_grad():
            return model(image, flow)[0]

    fns = {"plain eval forward": plain}
    fns.update({f"fast path ({backend})": (lambda fast=fast: fast(image, flow))
                for backend, fast in fasts.items()})
    params = sum(p.numel() for p in model.parameters())
    used = params - sum(p.numel() for p in model.parameters() if not p.requires_grad)
    print(f"device {device} ({torch.get_num_threads()} threads), backbone {args.backbone}, "
          f"input 1x3x{args.size}x{args.size}, torch {torch.__version__}")
    print(f"parameters: {params:,} stored, {used:,} trainable/used")
    reference = plain()
    rows = {}
    for name, fn in fns.items():
        _sync(device)
        start = time.perf_counter()
        diff = (fn() - reference).abs().max().item()  # first call: includes the trace, if any
        _sync(device)
        # The counter does not see TorchScript/oneDNN ops; the traced graph computes the same
        # convolutions as the eager fast path, so that one is counted for both fast rows.
        counted = fns["fast path (eager)"] if name.startswith("fast") else fn
        rows[name] = {"first_call_s": time.perf_counter() - start, "max_abs_diff": diff,
                      "gflops": count_flops(counted) / 1e9, "peak_mb": peak_memory_mb(fn, device)}
    latency = interleaved_latency(fns, args.repeats, device)
    base = latency["plain eval forward"]
    for name, row in rows.items():
        row.update(latency_ms=latency[name] * 1e3, speedup=base / latency[name])
        print(f"{name:20s} {row['gflops']:6.2f} GFLOPs  median {row['latency_ms']:7.1f} ms  "
              f"x{row['speedup']:.2f}  peak activations {row['peak_mb']:6.1f} MiB  "
              f"first call {row['first_call_s']:5.1f} s  max|diff| {row['max_abs_diff']:.1e}")
    summary = {"params": params, "rows": rows,
               "speedup": rows["fast path (auto)"]["speedup"]}
    print(f"fast path (default) speed-up: {summary['speedup']:.2f}x")
    if device.type == "cuda":
        summary["cuda"] = _cuda_extras(fasts["auto"], image, flow, args.repeats, device)
    return summary


def _cuda_extras(fast, image, flow, repeats: int, device: torch.device) -> dict:
    """bf16/fp16 autocast latency of the fast path and batch-32 throughput."""
    out = {}
    for dtype in (torch.bfloat16, torch.float16):
        def run(dtype=dtype):
            with torch.autocast("cuda", dtype=dtype):
                return fast(image, flow)
        out[str(dtype)] = median_latency(run, repeats, device) * 1e3
        print(f"fast path autocast {str(dtype):15s} median {out[str(dtype)]:8.1f} ms")
    batch_image, batch_flow = image.expand(32, -1, -1, -1), flow.expand(32, -1, -1, -1)
    for dtype in (None, torch.float16):
        def run(dtype=dtype):
            with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                return fast(batch_image, batch_flow)
        seconds = median_latency(run, max(3, repeats // 3), device)
        out[f"batch32_fps_{dtype}"] = 32 / seconds
        print(f"batch-32 throughput ({dtype or 'fp32'}): {32 / seconds:8.1f} frames/s")
    return out


if __name__ == "__main__":
    main()
