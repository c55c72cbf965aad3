"""Where a training run's wall time goes: one host clock per process, read around the loop's
blocking calls only (never inside a step), summarised in ``run.json`` (docs/training.md, "Where
the time goes").

Phases (seconds, ``time.perf_counter``): ``startup_s`` (checks, data verification, model and
optimiser built, before the first epoch), ``epoch_start_s`` (lr, data order, the loader's iterator:
worker start or reset), ``loader_wait_s`` (blocked in ``next(loader)``), ``step_s`` (the steps,
and on CUDA the wait for the device at each ``--log_every`` read), ``log_s`` (loss checks,
TensorBoard, progress bar) and ``checkpoint_s`` (last.pth and the epoch files, written atomically).
The steady state is every step after this process's first (the first step carries one-off costs:
kernel selection, first allocations), checkpoint writing excluded.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Iterator, TypeVar

T = TypeVar("T")
#: The phases, in the order of a run.
PHASES = ("startup_s", "epoch_start_s", "loader_wait_s", "step_s", "log_s", "checkpoint_s")


@dataclass
class RunClock:
    """Seconds per phase (:data:`PHASES`) since ``start``, and the steady state's beginning."""

    start: float = field(default_factory=lambda: time.perf_counter())
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    steady_start: float | None = None  # clock reading when the steady state began
    steady_samples_from: int = 0  # samples done when it began
    checkpoint_before_steady: float = 0.0  # checkpoint seconds before it began

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the block's wall time to phase ``name``."""
        begin = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - begin

    def end_startup(self) -> None:
        """The loop begins: everything since ``start`` was start-up."""
        self.seconds["startup_s"] = time.perf_counter() - self.start

    def waited(self, items: Iterator[T]) -> Iterator[T]:
        """``items`` (an iterator already made) with the wait for each counted as loader wait."""
        while True:
            with self.phase("loader_wait_s"):
                item = next(items, _END)
            if item is _END:
                return
            yield item

    def begin_steady(self, samples: int) -> None:
        """The steady state starts now (after the first step was waited for), ``samples`` done."""
        if self.steady_start is None:
            self.steady_start, self.steady_samples_from = time.perf_counter(), samples
            self.checkpoint_before_steady = self.seconds["checkpoint_s"]

    def summary(self, samples: int) -> dict[str, float | None]:
        """The run summary's timing keys: ``wall_s``, every phase, ``steady_samples_per_s``
        (samples/s after the first step, checkpoint writing excluded) and
        ``whole_run_samples_per_s`` (all samples over ``wall_s``), rounded; a rate is ``None``
        when it had no step."""
        now = time.perf_counter()
        wall = now - self.start
        steady_rate = None
        if self.steady_start is not None and samples > self.steady_samples_from:
            checkpoint = self.seconds["checkpoint_s"] - self.checkpoint_before_steady
            steady_rate = (samples - self.steady_samples_from) / (now - self.steady_start - checkpoint)
        return {"wall_s": round(wall, 3), **{k: round(v, 3) for k, v in self.seconds.items()},
                "steady_samples_per_s": _round(steady_rate),
                "whole_run_samples_per_s": _round(samples / wall if samples else None)}


def describe(timing: dict[str, float | None], steps: int) -> str:
    """One line for the end of a run: the two rates and every phase of :meth:`RunClock.summary`."""
    def rate(key: str) -> str:
        return "-" if timing[key] is None else f"{timing[key]:.3g}"
    wall = timing["wall_s"] or 1.0
    phases = ", ".join(f"{name[:-2].replace('_', ' ')} {timing[name]:.1f} s ({timing[name] / wall:.0%})"
                       for name in PHASES)
    return (f"{steps} steps: {rate('steady_samples_per_s')} samples/s steady (after the first "
            f"step, checkpoints excluded), {rate('whole_run_samples_per_s')} over the whole run; "
            f"of {timing['wall_s']:.1f} s: {phases}")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


_END = object()
