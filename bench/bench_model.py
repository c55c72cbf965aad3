"""Benchmark FSNet: parameters, FLOPs, latency and peak memory, plain eval forward vs fast path.

    python bench/bench_model.py [--backbone resnet50] [--size 352] [--repeats 10] [--device cpu]

On CUDA it also reports bf16/fp16 autocast latency and batch-32 throughput. Weights are random
(``lib.verify.randomize_weights``); the script prints the fast path's max abs difference.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib.backbones import BACKBONES  # noqa: E402
from lib.fast import build_fast_model  # noqa: E402
from lib.fsnet import FSNet  # noqa: E402
from lib.verify import randomize_weights  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_latency(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time (s) of ``fn`` over ``repeats`` runs after two warm-up runs."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50", choices=BACKBONES)
    parser.add_argument("--size", type=int, default=352)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    model = randomize_weights(FSNet(args.backbone)).eval().to(device)
    fast = build_fast_model(model)
    gen = torch.Generator().manual_seed(0)
    image, flow = (torch.randn(1, 3, args.size, args.size, generator=gen).to(device)
                   for _ in range(2))

    def plain() -> torch.Tensor:
        with torch.no_grad():
            return model(image, flow)[0]

    def quick() -> torch.Tensor:
        return fast(image, flow)

    params = sum(p.numel() for p in model.parameters())
    used = params - sum(p.numel() for p in model.parameters() if not p.requires_grad)
    diff = (plain() - quick()).abs().max().item()
    print(f"device {device} ({torch.get_num_threads()} threads), backbone {args.backbone}, "
          f"input 1x3x{args.size}x{args.size}, torch {torch.__version__}")
    print(f"parameters: {params:,} stored, {used:,} trainable/used")
    rows = {}
    for name, fn in (("plain eval forward", plain), ("fast path", quick)):
        rows[name] = {
            "gflops": count_flops(fn) / 1e9,
            "latency_ms": median_latency(fn, args.repeats, device) * 1e3,
            "peak_mb": peak_memory_mb(fn, device),
        }
        r = rows[name]
        print(f"{name:20s} {r['gflops']:7.2f} GFLOPs  median {r['latency_ms']:8.1f} ms  "
              f"peak activations {r['peak_mb']:8.1f} MiB")
    ratio = rows["plain eval forward"]["latency_ms"] / rows["fast path"]["latency_ms"]
    print(f"fast path speed-up: {ratio:.2f}x (max |pred_s difference| {diff:.2e})")
    summary = {"params": params, "rows": rows, "speedup": ratio, "max_abs_diff": diff}
    if device.type == "cuda":
        summary["cuda"] = _cuda_extras(fast, image, flow, args.repeats, device)
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
