"""A CPU stand-in for CUDA-graph capture (:data:`utils.inference.cuda_graph.Capture`), so that the
replay wrapper runs through the real pipeline without a GPU (the tests and ``bench/gpu_check.sh
--dry_run``)."""
from __future__ import annotations

from typing import Callable, Tuple

import torch
from torch import Tensor


class RerunCapture:
    """"Captures" by running the call once and "replays" by running it again on the same static
    inputs and writing the result into the first call's output tensor, as a graph replay rewrites
    its static output. Counts both."""

    def __init__(self) -> None:
        self.captures = 0
        self.replays = 0

    def __call__(self, call: Callable[[], Tensor]) -> Tuple[Tensor, Callable[[], None]]:
        self.captures += 1
        output = call()

        def replay() -> None:
            self.replays += 1
            with torch.inference_mode():
                output.copy_(call())
        return output, replay
