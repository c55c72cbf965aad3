"""``train.py --cuda_graphs``: the model's forward and backward captured as one CUDA graph per
training size (``torch.cuda.make_graphed_callables``), so a step launches a few graphs instead of
thousands of small kernels (Res2Net's many small convolutions make the step launch-bound).

The loss, the backward through the loss and the optimiser step stay outside the graphs. Shapes
are fixed per size (the loader drops the last short batch). Capture runs a few warm-up
iterations, which would move the BatchNorm running statistics: they are restored afterwards, so
training starts from exactly the state it was given. CUDA only, one process (refused otherwise
by train.py's argument check).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from utils.device import autocast


class AutocastForward(nn.Module):
    """``model(image, flow)`` under autocast (the graph captures the casts; no cast cache, which
    graphs do not allow)."""

    def __init__(self, model: nn.Module, dtype: Optional[torch.dtype]) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, image: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        with autocast(image.device.type, self.dtype, cache_enabled=False):
            return self.model(image, flow)


class GraphedForward:
    """``(image, flow) -> (pred_s, pred_e)`` through the graph captured for the input's size."""

    def __init__(self, model: nn.Module, sizes: Sequence[int], batch: int,
                 dtype: Optional[torch.dtype], memory_format: torch.memory_format,
                 device: torch.device, make_graphed: Optional[Callable] = None) -> None:
        make_graphed = make_graphed or torch.cuda.make_graphed_callables
        sizes = list(dict.fromkeys(sizes))
        samples = tuple(tuple(torch.randn(batch, 3, size, size, device=device)
                              .contiguous(memory_format=memory_format) for _ in range(2))
                        for size in sizes)
        saved = {name: value.detach().clone() for name, value in model.state_dict().items()}
        graphed = make_graphed(tuple(AutocastForward(model, dtype) for _ in sizes), samples)
        with torch.no_grad():  # undo the warm-up iterations' BN statistics, in place
            for name, value in model.state_dict().items():
                value.copy_(saved[name])
        self.by_size = dict(zip(sizes, graphed))

    def __call__(self, image: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        return self.by_size[image.shape[-1]](image, flow)
