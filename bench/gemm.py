"""The machine's matrix-multiply rate, printed beside CPU figures (CPUs differ: AVX2 or AVX-512,
with or without native bf16; a ratio means little without it)."""
from __future__ import annotations

import time

import torch


def gemm_gflops(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an ``n``-cubed matrix product in ``dtype`` on the CPU (best of ``repeats``
    after one warm-up), on the current torch threads."""
    a, b = (torch.randn(n, n).to(dtype) for _ in range(2))
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9
