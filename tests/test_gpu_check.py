"""``bench/gpu_check.sh --dry_run``: every step of the GPU check runs on the CPU at tiny sizes and
the one JSON report has its documented shape."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
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
    for step in ("inference", "inference_small"):
        for path in ("plain", "default"):
            assert steps[step]["best"][path]["model_fps"] > 0
            assert steps[step]["best"][path]["end_to_end_fps"] > 0
    assert steps["inference"]["frames"].startswith("toy frames (16 at 128x96")
    assert steps["inference_graphs"]["plain_fps"] > 0 and steps["inference_graphs"]["folded_eager_fps"] > 0
    assert steps["inference_graphs"]["official_fp32_batch1_fps"] > 0
    assert steps["inference_graphs"]["folded_cuda_graph_fps"] is None  # no CUDA graphs on the CPU
    # the replay's fidelity through the pipeline, with the CPU stand-in of the capture
    assert steps["inference_graphs"]["replay"].startswith("CPU stand-in")
    assert steps["inference_graphs"]["graph_vs_eager_frames"] == 5
    assert steps["inference_graphs"]["graph_vs_eager_max_abs_diff"] == 0
    assert steps["inference_graphs"]["eager_vs_eager_max_abs_diff"] == 0
    options = [row["option"] for row in steps["train_step"]]
    assert options == ["old step (fp32)", "bf16 + channels_last"]
    assert all(row["samples_per_s"] > 0 and "profile" in row for row in steps["train_step"])
    assert steps["torchrun"]["global_step"] >= 1
    assert steps["torchrun"]["probe"] == "nccl_probe backend=gloo world_size=1 all_reduce=1"
    targets = report["targets"]
    assert steps["torchrun"]["end_to_end"]["launcher"] == "torchrun"  # train.py beside its own step
    for key in ("end_to_end_over_model_only", "train_bf16_channels_last_over_fp32", "train_py_over_step_rate",
                "train_py_whole_run_over_step_rate", "official_fp32_batch1_fps"):
        assert targets[key] > 0, key
    assert all(v > 0 for v in targets["default_over_plain_end_to_end"].values())
    assert targets["pipeline_cuda_graphs"] is True and targets["graph_fidelity_met"] is True
    assert targets["graph_vs_eager_max_abs_diff"] == 0 and targets["graph_capture_warnings"] == []
    assert targets["end_to_end_cuda_graphs"] in (None, False)  # the CPU runs no graphs
    assert all(step["error"] is None for step in report["steps"].values())


def test_check_report_names_what_is_missing() -> None:
    report = {"meta": {}, "steps": {"inference": {"status": "timeout", "seconds": 120.0, "command": [],
                                                  "result": None},
                                    "train_step": {"status": "ok", "seconds": 1.0, "command": []}}}
    problems = gpu_check.check_report(report, ("inference", "train_step", "torchrun"))
    assert problems == ["missing top-level key 'targets'", "step inference: status timeout",
                        "step train_step: no 'result'", "step train_step: empty result",
                        "step torchrun missing"]


def test_check_report_fails_a_replay_that_differs_or_did_not_happen() -> None:
    steps = {"inference_graphs": {"result": {"pipeline_cuda_graphs": True, "graph_vs_eager_max_abs_diff": 3,
                                             "eager_vs_eager_max_abs_diff": 0}},
             "inference": {"output_tail": ["warning: CUDA graph capture failed (x); the network runs eagerly"]}}
    targets = gpu_check.targets(steps)
    assert targets["graph_fidelity_met"] is False and len(targets["graph_capture_warnings"]) == 1
    report = {"meta": {}, "steps": {}, "targets": targets}
    assert gpu_check.check_report(report, ()) == [
        "the CUDA graph's maps differ from the eager maps by 3 grey levels (target <= max(1, "
        "eager_vs_eager_max_abs_diff) grey levels)"]
    steps["inference_graphs"]["result"].update(pipeline_cuda_graphs=False, eager_vs_eager_max_abs_diff=3)
    report["targets"] = gpu_check.targets(steps)
    assert report["targets"]["graph_fidelity_met"] is True  # as noisy as eager against eager
    assert gpu_check.check_report(report, ()) == [
        "the pipeline ran eagerly: the CUDA graph capture failed (the inference_graphs step's output "
        "names the reason)"]


def test_unwritable_report_path_is_refused_before_any_step(tmp_path: Path) -> None:
    folder = tmp_path / "taken"
    folder.mkdir()
    done = subprocess.run([str(REPO / "bench" / "gpu_check.sh"), "--dry_run", "--out", str(folder)],
                          capture_output=True, text=True, timeout=120)
    assert_user_error(done.returncode, done.stderr, "--out", str(folder))
    assert "[gpu_check]" not in done.stdout


TORCHRUN_FAILURE = """[rank0]: Traceback (most recent call last):
[rank0]:   File "train.py", line 9, in <module>
[rank0]:     from tensorboardX import SummaryWriter
[rank0]: ModuleNotFoundError: No module named 'tensorboardX'
E1206 12:00:00 torch/distributed/elastic/multiprocessing/api.py:882] failed (exitcode: 1)
Traceback (most recent call last):
  File "/usr/lib/python3/site-packages/torch/distributed/run.py", line 900, in main
    run(args)
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
train.py FAILED
------------------------------------------------------------
Failures:
  <NO_OTHER_FAILURES>
"""


def test_real_error_is_the_child_traceback_not_the_launcher_summary() -> None:
    error = gpu_check.real_error(TORCHRUN_FAILURE)
    assert error is not None and "No module named 'tensorboardX'" in error
    assert "ChildFailedError" not in error
    plain = "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad\nmore output\n"
    assert gpu_check.real_error(plain).endswith("ValueError: bad")
    assert gpu_check.real_error("step\nerror: --out x is a folder — choose a file\n").startswith("error:")
    assert gpu_check.real_error("all fine") is None


def test_steps_extend_pythonpath(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert gpu_check.python_path("/tmp/site").split(os.pathsep) == [str(REPO), "/tmp/site"]
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    step = gpu_check.run_step([[sys.executable, "-c", "import sys; print(sys.path[1:3])"]], 60, {})
    assert step["status"] == "ok" and str(tmp_path) in step["output_tail"][0]
    failed = gpu_check.run_step([[sys.executable, "-c", "raise KeyError('boom')"]], 60, {})
    assert failed["status"] == "failed (exit 1)" and failed["error"].endswith("KeyError: 'boom'")


def test_missing_tensorboardx_stops_before_any_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboardX" else find_spec(name, *a))
    code = gpu_check.main(["--dry_run", "--steps", "torchrun", "--out", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2 and "tensorboardX is not installed" in err and "gpu_check.sh" in err
    assert not (tmp_path / "r.json").exists()
