"""``bench/gpu_check.sh --dry_run``: every step of the GPU check runs on the CPU at tiny sizes and
the one JSON report has its documented shape."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench import gpu_check
from tests.cli_checks import REPO, assert_user_error


@pytest.fixture(scope="module")
def dry_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path_factory.mktemp("gpu_check") / "report.json"
    done = subprocess.run([str(REPO / "bench" / "gpu_check.sh"), "--dry_run", "--out", str(out)],
                          capture_output=True, text=True, timeout=1800)
    return done, json.loads(out.read_text()) if out.is_file() else {}


def test_dry_run_succeeds_with_every_step(dry_report: tuple[subprocess.CompletedProcess, dict]) -> None:
    done, report = dry_report
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert gpu_check.check_report(report, gpu_check.STEPS) == []
    assert report["meta"]["dry_run"] is True
    assert list(report["steps"]) == list(gpu_check.STEPS)


def test_each_step_recorded_its_measurements(dry_report: tuple[subprocess.CompletedProcess, dict]) -> None:
    _, report = dry_report
    steps = {name: step["result"] for name, step in report["steps"].items()}
    for path in ("plain", "default"):
        assert steps["inference"]["best"][path]["model_fps"] > 0
        assert steps["inference"]["best"][path]["end_to_end_fps"] > 0
    assert steps["inference_graphs"]["plain_fps"] > 0 and steps["inference_graphs"]["folded_eager_fps"] > 0
    assert steps["inference_graphs"]["folded_cuda_graph_fps"] is None  # no CUDA graphs on the CPU
    options = [row["option"] for row in steps["train_step"]]
    assert options == ["default (fp32, loader 0 workers)", "bf16 + channels_last"]
    assert all(row["samples_per_s"] > 0 and "profile" in row for row in steps["train_step"])
    assert steps["torchrun"]["global_step"] >= 1
    assert steps["torchrun"]["probe"] == "nccl_probe backend=gloo world_size=1 all_reduce=1"
    assert set(report["targets"]) >= {"model_only_fps_at_352_bf16", "train_bf16_channels_last_over_fp32"}


def test_check_report_names_what_is_missing() -> None:
    report = {"meta": {}, "steps": {"inference": {"status": "timeout", "seconds": 120.0, "command": [],
                                                  "result": None},
                                    "train_step": {"status": "ok", "seconds": 1.0, "command": []}}}
    problems = gpu_check.check_report(report, ("inference", "train_step", "torchrun"))
    assert problems == ["missing top-level key 'targets'", "step inference: status timeout",
                        "step train_step: no 'result'", "step train_step: empty result",
                        "step torchrun missing"]


def test_unwritable_report_path_is_refused_before_any_step(tmp_path: Path) -> None:
    folder = tmp_path / "taken"
    folder.mkdir()
    done = subprocess.run([str(REPO / "bench" / "gpu_check.sh"), "--dry_run", "--out", str(folder)],
                          capture_output=True, text=True, timeout=120)
    assert_user_error(done.returncode, done.stderr, "--out", str(folder))
    assert "[gpu_check]" not in done.stdout
