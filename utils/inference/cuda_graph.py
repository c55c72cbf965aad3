"""``inference.py --cuda_graphs``: the predictor replayed as one CUDA graph, captured once per run.

A run has one batch shape (:func:`utils.inference.pipeline.pad_batch`), so the network's kernels
can be recorded once, at that shape, and replayed for every batch: one launch instead of the
thousands of small kernels of Res2Net's scales. :func:`capture_predictor` makes static input
buffers at the run's shape and memory format, runs the predictor a few times on a side stream
(cuDNN's autotuning and the allocator settle there), then captures one call under
``torch.inference_mode`` and the run's autocast (without the cast cache, which graphs cannot
keep). Each call of the returned :class:`GraphReplay` copies its inputs into the static buffers
and replays the graph; its output is the graph's static tensor, rewritten by the next replay.

The capture is injectable (``capture``): the tests replace the CUDA graph by a stand-in that
re-runs the captured call on the static buffers, so the wrapper runs through the real pipeline on
the CPU. A capture that fails (an operation that cannot be captured, memory) leaves the predictor
eager after one warning line naming the reason.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from utils.cli import BadInputError
from utils.device import autocast

#: ``capture(call) -> (output, replay)``: record ``call``'s work once; ``replay()`` runs it again,
#: rewriting ``output`` in place.
Capture = Callable[[Callable[[], Tensor]], Tuple[Tensor, Callable[[], None]]]
#: ``--cuda_graphs`` choices.
CUDA_GRAPH_CHOICES = ("auto", "on", "off")
#: Backends whose network runs in PyTorch on the device, so that ``auto`` captures it; ``jit`` (a
#: TorchScript executor that re-optimises during its first calls) is captured only when asked.
GRAPHED_BACKENDS = ("plain", "eager")
#: Eager calls on a side stream before the capture (as ``torch.cuda.make_graphed_callables`` does).
WARMUP_CALLS = 3
#: How the one line about a failed capture starts (``bench/gpu_check`` looks for it).
FALLBACK_WARNING = "warning: CUDA graph capture failed"


def resolve_cuda_graphs(choice: str, device: torch.device, backend: str) -> bool:
    """Whether a run captures its predictor: ``auto`` on CUDA for :data:`GRAPHED_BACKENDS`, ``on``
    on CUDA for any backend, ``off`` never; ``on`` without CUDA is a :class:`BadInputError`."""
    if choice not in CUDA_GRAPH_CHOICES:
        raise BadInputError(f"--cuda_graphs {choice!r} is unknown", f"use one of {', '.join(CUDA_GRAPH_CHOICES)}")
    if choice == "on" and device.type != "cuda":
        raise BadInputError(f"--cuda_graphs on needs CUDA (the run is on --device {device})",
                            "drop --cuda_graphs, or run on a GPU with --device cuda")
    if choice == "auto":
        return device.type == "cuda" and backend in GRAPHED_BACKENDS
    return choice == "on"


def capture_cuda_graph(call: Callable[[], Tensor]) -> Tuple[Tensor, Callable[[], None]]:
    """:data:`Capture` on CUDA: :data:`WARMUP_CALLS` calls on a side stream, then one captured
    into a ``torch.cuda.CUDAGraph``."""
    current = torch.cuda.current_stream()
    side = torch.cuda.Stream()
    side.wait_stream(current)
    with torch.cuda.stream(side):
        for _ in range(WARMUP_CALLS):
            call()
    current.wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        output = call()
    return output, graph.replay


class GraphReplay:
    """``(image, flow) -> logits`` replayed from one captured call at one input shape.

    The returned tensor is the graph's static output: read it (on the same stream, as the pipeline
    does) before the next call, which rewrites it. Inputs of any other shape are refused.
    """

    def __init__(self, image: Tensor, flow: Tensor, output: Tensor, replay: Callable[[], None]) -> None:
        self.image, self.flow, self.output, self.replay = image, flow, output, replay

    def __call__(self, image: Tensor, flow: Tensor) -> Tensor:
        if image.shape != self.image.shape or flow.shape != self.flow.shape:
            raise ValueError(f"the CUDA graph was captured for inputs {tuple(self.image.shape)}, "
                             f"got {tuple(image.shape)}: pad every batch to the run's one shape")
        self.image.copy_(image)
        self.flow.copy_(flow)
        self.replay()
        return self.output


def capture_predictor(predictor: Callable[[Tensor, Tensor], Tensor], image: Tensor, flow: Tensor,
                      dtype: Optional[torch.dtype], capture: Optional[Capture] = None
                      ) -> Callable[[Tensor, Tensor], Tensor]:
    """``predictor`` (a :data:`utils.inference.pipeline.Predictor`) as a :class:`GraphReplay`
    captured at ``image``'s and ``flow``'s shape, memory format and device (their values seed the
    warm-up), under autocast to ``dtype`` (``None``: float32); ``capture`` defaults to
    :func:`capture_cuda_graph`. If the capture fails, ``predictor`` itself, after one warning line
    on stderr naming the reason."""
    static_image, static_flow = image.clone(), flow.clone()

    def call() -> Tensor:
        with torch.inference_mode(), autocast(image.device.type, dtype, cache_enabled=False):
            return predictor(static_image, static_flow)

    try:  # on the inputs' GPU (a replay runs on the device it was captured on)
        with torch.cuda.device(image.device) if image.is_cuda else contextlib.nullcontext():
            output, replay = (capture or capture_cuda_graph)(call)
    except RuntimeError as error:  # torch's errors (CUDA, capture, memory) are RuntimeErrors
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        print(f"{FALLBACK_WARNING} ({reason}); the network runs eagerly "
              f"(--cuda_graphs off skips the attempt)", file=sys.stderr)
        return predictor
    return GraphReplay(static_image, static_flow, output, replay)
