"""``python -m bench.bench_train --end_to_end`` on a tiny toy set: train.py runs in a child
process beside the step and the report has its documented shape (no timing assertions)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench import bench_train
from utils.training.timing import PHASES


def test_end_to_end_reports_train_py_beside_its_step(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "e2e.json"
    argv = ["--end_to_end", "--device", "cpu", "--backbone", "resnet50", "--sizes", "64", "--batch", "2",
            "--e2e_steps", "4", "--steps", "1", "--warmup", "0", "--loader_workers", "0", "--json", str(out)]
    assert bench_train.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "end_to_end" and report["fp32_gemm_gflops"] > 0
    assert report["option"] == "default (fp32, loader 0 workers)" and report["workers"] == 0
    assert "--rates 1.0" in report["command"] and "--workers 0" in report["command"]
    assert report["step_samples_per_s"] > 0 and len(report["step_samples_per_s_before_after"]) == 2
    train_py = report["train_py"]
    assert train_py["global_step"] == 4 and train_py["world_size"] == 1  # two epochs of two batches
    assert all(train_py[name] >= 0 for name in PHASES) and train_py["process_s"] >= train_py["wall_s"]
    for name in ("steady", "whole_run", "process"):
        assert report[f"{name}_over_step"] > 0, name
    printed = capsys.readouterr().out
    assert "train.py steady" in printed and "loader wait" in printed


def test_end_to_end_refuses_the_old_step() -> None:
    with pytest.raises(bench_train.BadInputError, match="train.py has no old step"):
        bench_train.end_to_end_option(bench_train.resolve_device("cpu"), ["old step (fp32)"])


def test_end_to_end_runs_train_py_at_the_steps_sizes(tmp_path: Path) -> None:
    # train.py's multi-scale batch is compared with a multi-scale step, never with one size
    opts = bench_train.get_args_parser().parse_args(["--end_to_end", "--multiscale", "--launcher", "torchrun"])
    option = bench_train.end_to_end_option(bench_train.resolve_device("cpu"), ["bf16 + channels_last"])
    command = bench_train.train_py_command(option, opts, tmp_path, tmp_path, 352, 16, 64, 4,
                                           bench_train.resolve_device("cpu"))
    config = bench_train.train.parse_config(command[command.index("--train_type"):])
    assert command[1:3] == ["-m", "torch.distributed.run"] and option.data == "tensors"
    assert bench_train.train.scale_sizes(config.trainsize, config.rates) == [256, 352, 448]
    assert bench_train.step_sizes(352, opts.multiscale) == (256, 352, 448)
    assert (config.amp, config.channels_last, config.workers, config.batchsize) == ("bf16", True, 4, 16)


def test_a_failed_train_py_is_named_by_its_own_last_line(tmp_path: Path) -> None:
    failing = [sys.executable, "-c", "import sys; print('progress'); sys.exit('error: no data — add some')"]
    with pytest.raises(bench_train.UserError, match=r"train.py failed \(exit 1\): error: no data — add some"):
        bench_train.run_train_py(failing, 1, tmp_path)
