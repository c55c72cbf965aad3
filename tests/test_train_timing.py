"""utils.training.timing: the phases of a run add up and the steady state leaves out the first
step and checkpoint writing (a fake clock: no timing assertions)."""
from __future__ import annotations

import itertools

import pytest

from utils.training import timing
from utils.training.timing import PHASES, RunClock, describe


@pytest.fixture
def ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    """``time.perf_counter`` advances by exactly 1 s per reading."""
    counter = itertools.count()
    monkeypatch.setattr(timing.time, "perf_counter", lambda: float(next(counter)))


def test_phases_and_rates_of_a_scripted_run(ticks: None) -> None:
    clock = RunClock()                       # t=0
    clock.end_startup()                      # t=1: startup 1 s
    with clock.phase("epoch_start_s"):       # 2 -> 3
        batches = iter(range(3))
    waited = clock.waited(batches)
    assert next(waited) == 0                 # 4 -> 5
    with clock.phase("step_s"):              # 6 -> 7
        pass
    clock.begin_steady(samples=8)            # t=8: after the first step, 8 samples done
    with clock.phase("checkpoint_s"):        # 9 -> 10
        pass
    assert list(waited) == [1, 2]            # 11->12, 13->14, the end: 15->16
    clock.begin_steady(samples=16)           # a second call changes nothing (no reading)
    summary = clock.summary(samples=24)      # t=17
    assert summary == {"wall_s": 17.0, "startup_s": 1.0, "epoch_start_s": 1.0, "loader_wait_s": 4.0,
                       "step_s": 1.0, "log_s": 0.0, "checkpoint_s": 1.0,
                       # 16 samples in 17 - 8 s, less the 1 s of checkpoint after the steady start
                       "steady_samples_per_s": 2.0, "whole_run_samples_per_s": round(24 / 17, 4)}
    assert sum(summary[name] for name in PHASES) <= summary["wall_s"]


def test_a_run_without_a_second_step_has_no_steady_rate(ticks: None) -> None:
    clock = RunClock()
    clock.begin_steady(samples=8)
    summary = clock.summary(samples=8)
    assert summary["steady_samples_per_s"] is None and summary["whole_run_samples_per_s"] == 4.0
    assert RunClock().summary(samples=0)["whole_run_samples_per_s"] is None


def test_describe_names_every_phase_and_both_rates(ticks: None) -> None:
    clock = RunClock()
    clock.begin_steady(samples=8)
    line = describe(clock.summary(samples=16), steps=2)
    assert line.startswith("2 steps: ") and "samples/s steady" in line and "over the whole run" in line
    for name in PHASES:
        assert name[:-2].replace("_", " ") in line
    assert "- samples/s steady" in describe(RunClock().summary(samples=0), steps=0)
