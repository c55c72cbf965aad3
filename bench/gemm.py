"""The machine's matrix-multiply rate, printed beside CPU figures (CPUs differ: AVX2 or AVX-512,
with or without native bf16; a ratio means little without it)."""
from __future__ import annotations

import time

import torch


def gemm_gflops(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5,
                device: str = "cpu") -> float:
    """GFLOP/s of an ``n``-cubed matrix product in ``dtype`` (best of ``repeats`` after one
    warm-up), on the current torch threads."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def describe_cpu() -> str:
    """``"<n> threads, <capability>, bf16 native|emulated, fp32 GEMM <x> GFLOP/s"`` measured now."""
    from lib.fast import cpu_has_native_bf16
    return (f"{torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}, "
            f"bf16 {'native' if cpu_has_native_bf16() else 'emulated'}, "
            f"fp32 GEMM {gemm_gflops():.0f} GFLOP/s")
