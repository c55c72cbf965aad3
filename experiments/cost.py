"""Table 4's cost columns, measured: parameters, FLOPs and forward time of a variant.

FLOPs are counted by torch's own ``torch.utils.flop_counter.FlopCounterMode`` on a network built
on the meta device (no weights, no arithmetic: a 352×352 count takes about a second). The
counter counts a multiply–accumulate as 2 FLOPs and counts convolutions and matrix products
only (no BatchNorm, activation, pooling or element-wise work); the values here are its count
divided by 2, i.e. **G multiply–accumulates** as the paper's table (thop-style) prints them. The
BPM stack's share is the sum over the leaf modules of ``bpm1`` … ``bpmN``.

Forward time is measured on real (randomly initialised) weights, every row in the same run, and
reported as ratios to a reference row (N = 4 in Table 4); seconds are absolute only on a GPU.
"""
from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lib.fsnet import FSNet, FSNetConfig

PAPER_SIZE = 352
_BPM_NAME = re.compile(r"bpm\d+")


@dataclass(frozen=True)
class Cost:
    """Size and compute of one variant at ``size``×``size`` (batch 1)."""

    bpm_params_m: float   # parameters of bpm1..bpmN, millions
    bpm_gflops: float     # their multiply-accumulates, G (FlopCounterMode FLOPs / 2)
    params_m: float       # parameters the forward uses (the trainable ones), millions
    stored_params_m: float  # every parameter in the state_dict (the released configuration
    #                         also stores never-run modules for checkpoint compatibility)
    gflops: float         # the whole forward's multiply-accumulates, G
    size: int


def bpm_names(model: nn.Module) -> list[str]:
    """The network's BPM stack: the names of its children ``bpm1`` … ``bpmN``."""
    return [name for name, _ in model.named_children() if _BPM_NAME.fullmatch(name)]


def _leaf_names(model: nn.Module, prefix: str) -> list[str]:
    """Qualified names (as FlopCounterMode reports them) of the leaf modules under ``prefix``."""
    root = type(model).__name__
    return [f"{root}.{name}" for name, module in model.named_modules()
            if name.split(".")[0] == prefix and not any(True for _ in module.children())]


def count_macs(model: nn.Module, size: int) -> tuple[int, dict[str, int]]:
    """Multiply-accumulates of one forward at ``size``×``size`` (batch 1, eval mode, on the
    model's device) and per qualified module name."""
    device = next(model.parameters()).device
    image = torch.zeros(1, 3, size, size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(image, image)
    per_module = {name: sum(counts.values()) // 2 for name, counts in counter.get_flop_counts().items()}
    return counter.get_total_flops() // 2, per_module


def measure_cost(config: FSNetConfig, size: int = PAPER_SIZE) -> Cost:
    """Parameters and multiply-accumulates of the variant ``config`` (built on the meta device)."""
    with torch.device("meta"):
        model = FSNet(config)
    total, per_module = count_macs(model, size)
    stack = bpm_names(model)
    bpm_macs = sum(per_module.get(leaf, 0) for name in stack for leaf in _leaf_names(model, name))
    bpm_params = sum(p.numel() for name in stack for p in getattr(model, name).parameters())
    parameters = list(model.parameters())
    return Cost(bpm_params_m=bpm_params / 1e6, bpm_gflops=bpm_macs / 1e9,
                params_m=sum(p.numel() for p in parameters if p.requires_grad) / 1e6,
                stored_params_m=sum(p.numel() for p in parameters) / 1e6, gflops=total / 1e9,
                size=size)


def _timer(device: torch.device) -> Callable[[], float]:
    if device.type == "cuda":
        def now() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()
        return now
    return time.perf_counter


def forward_seconds(configs: Sequence[FSNetConfig], size: int, device: torch.device,
                    repeats: int = 3, warmup: int = 1) -> list[float]:
    """Median seconds of one forward (batch 1) of each variant, measured in turns in one run
    (``repeats`` rounds over all variants, after ``warmup`` rounds), so that a change in the
    machine's load hits every variant alike."""
    torch.manual_seed(0)
    models = [FSNet(config).eval().to(device) for config in configs]
    image = torch.rand(1, 3, size, size, device=device)
    now = _timer(device)
    times: list[list[float]] = [[] for _ in models]
    with torch.no_grad():
        for round_index in range(warmup + repeats):
            for model, record in zip(models, times):
                start = now()
                model(image, image)
                if round_index >= warmup:
                    record.append(now() - start)
    return [statistics.median(record) for record in times]


def time_ratios(seconds: Sequence[float], reference: Optional[int]) -> list[Optional[float]]:
    """``seconds`` divided by ``seconds[reference]`` (all ``None`` without a reference)."""
    if reference is None:
        return [None for _ in seconds]
    return [value / seconds[reference] for value in seconds]
