"""train.py under bad input and faults: each case ends in exit 2 with one ``error:`` line and no
traceback (or, for a killed run, in a clean resume), and the training data is byte-identical.

Most cases call ``train.main(argv)`` in-process (the same ``run_guarded`` path as the command
line, without a torch start-up per case); the bad --trainsize, the concurrent run and the killed
run use real ``python train.py`` subprocesses.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

import train
import utils.torch_files as checkpoint
from tests.cli_checks import REPO, assert_user_error, checksums, run_module
from tests.test_checkpoint import FullDisk
from utils.data.synthetic import make_toy_dataset
from utils.job import Job
from utils.safety import LOCK_NAME

IMAGES = Path("TrainSet_StaticAndVideo") / "Imgs"
GTS = Path("TrainSet_StaticAndVideo") / "GTs"


def _argv(data: Path, save_path: Path, *extra: str) -> list[str]:
    return ["--train_type", "pretrain_rgb", "--data_root", str(data), "--save_path",
            str(save_path), "--backbone", "resnet50", "--no_imagenet", "--trainsize", "64",
            "--batchsize", "2", "--max_samples", "2", "--epoch", "1", "--rates", "1",
            "--num_workers", "0", "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "Toy", quick=True)


@pytest.fixture
def data(toy: Path) -> Iterator[Path]:
    """The shared toy set; every test must leave it byte-identical."""
    before = checksums(toy)
    yield toy
    assert checksums(toy) == before, "the training data was modified"


@pytest.fixture
def own_data(toy: Path, tmp_path: Path) -> Path:
    """A private copy of the toy set for a test that damages files (it checksums them itself)."""
    return Path(shutil.copytree(toy, tmp_path / "data"))


def main_error(capsys: pytest.CaptureFixture, argv: list[str], *fragments: str) -> str:
    """Run ``train.main(argv)`` in-process and check the error convention; return the line."""
    code = train.main(argv)
    return assert_user_error(code, capsys.readouterr().err, *fragments)


def test_bad_trainsize_from_the_command_line(data: Path, tmp_path: Path) -> None:
    done = run_module("train.py", _argv(data, tmp_path, "--trainsize", "80"))
    assert_user_error(done.returncode, done.stderr, "--trainsize 80", "multiple of 32")
    assert not (tmp_path / "FSNet").exists()  # nothing written


@pytest.mark.parametrize("lr", ["0", "-1e-3", "nan", "inf"])
def test_lr_must_be_positive_and_finite(data: Path, tmp_path: Path, capsys, lr: str) -> None:
    main_error(capsys, _argv(data, tmp_path, f"--lr={lr}"), f"--lr {float(lr)}", "positive finite")


def test_batch_of_one_with_batchnorm(data: Path, tmp_path: Path, capsys) -> None:
    main_error(capsys, _argv(data, tmp_path, "--batchsize", "1"), "--batchsize 1",
               "BatchNorm", "--freeze_bn")


@pytest.mark.parametrize("flag", ["--workers", "--num_workers"])
def test_negative_workers_and_all_argument_problems_at_once(data: Path, tmp_path: Path, capsys,
                                                            flag: str) -> None:
    main_error(capsys, _argv(data, tmp_path, flag, "-1", "--epoch", "0"),
               "2 invalid argument", "--workers -1", "--epoch 0")


def test_only_rank_0_prints_the_error(data: Path, tmp_path: Path, capsys,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    argv = _argv(data, tmp_path, "--trainsize", "80")
    monkeypatch.setenv("RANK", "1")  # what torchrun tells the second process
    assert train.main(argv) == 2 and "error:" not in capsys.readouterr().err
    monkeypatch.setenv("RANK", "0")
    main_error(capsys, argv, "--trainsize 80")


def test_bad_device(data: Path, tmp_path: Path, capsys) -> None:
    main_error(capsys, _argv(data, tmp_path, "--device", "tpu"), "--device 'tpu'")


def test_broken_files_reported_together_before_the_model_is_built(
        own_data: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    images = sorted((own_data / IMAGES).iterdir())
    empty, truncated = images[0], images[-1]
    empty.write_bytes(b"")
    truncated.write_bytes(truncated.read_bytes()[:300])
    gt = own_data / GTS / images[1].with_suffix(".png").name
    Image.fromarray(np.zeros((50, 70), np.uint8)).save(gt)  # the image is 128x96
    own_data_sums = checksums(own_data)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the input files were checked")

    monkeypatch.setattr(train, "FSNet", no_model)
    line = main_error(capsys, _argv(own_data, tmp_path, "--max_samples", "1000"),
                      "3 problem(s)", f"{empty}: empty file", f"{truncated}: ",
                      f"{gt}: 70x50 but")
    assert line.count("error:") == 1
    assert not (tmp_path / "FSNet" / "pretrain_rgb" / "last.pth").exists()
    assert checksums(own_data) == own_data_sums


def test_missing_data_root(tmp_path: Path, capsys) -> None:
    main_error(capsys, _argv(tmp_path / "nowhere", tmp_path), "Training folder not found",
               str(tmp_path / "nowhere"))


def test_output_inside_the_data_folder_is_refused(data: Path, capsys) -> None:
    main_error(capsys, _argv(data, data / "runs"), "refusing to write where the inputs are read",
               "--data_root")
    assert not (data / "runs").exists()


def test_existing_run_is_not_replaced(data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "FSNet" / "pretrain_rgb"
    out.mkdir(parents=True)
    (out / "last.pth").write_bytes(b"someone's run")
    main_error(capsys, _argv(data, tmp_path), "last.pth already exists", "--resume auto")
    assert (out / "last.pth").read_bytes() == b"someone's run"


def _fake_last(path: Path, **args: object) -> Path:
    """A minimal last.pth (no model is built before these checks)."""
    config = train.parse_config(["--train_type", "pretrain_rgb"])
    state = {"model": {"w": torch.ones(2)}, "optimizer": {}, "epoch": 0, "batch_in_epoch": 0,
             "global_step": 0, "rng": [], "args": {**train.asdict(config), **args}}
    torch.save(state, path)
    return path


def test_resume_with_another_recipe_is_refused(data: Path, tmp_path: Path, capsys) -> None:
    last = _fake_last(tmp_path / "old.pth", trainsize=64, batchsize=8, rates=[1.0])
    main_error(capsys, _argv(data, tmp_path, "--resume", str(last)), "Cannot resume from",
               "--batchsize: checkpoint 8, now 2")


def test_non_finite_checkpoint_refused_by_resume(data: Path, tmp_path: Path, capsys) -> None:
    last = _fake_last(tmp_path / "diverged.pth")
    state = torch.load(last)
    state["model"]["bn.running_var"] = torch.tensor([1.0, float("inf")])
    torch.save(state, last)
    main_error(capsys, _argv(data, tmp_path, "--resume", str(last)),
               f"{last} holds non-finite values", "model.bn.running_var")


def test_non_finite_checkpoint_refused_by_finetune_init(data: Path, tmp_path: Path,
                                                        capsys) -> None:
    bad = tmp_path / "rgb.pth"
    torch.save({"module.resnet.conv1_rgb.weight": torch.full((2,), float("nan"))}, bad)
    argv = _argv(data, tmp_path, "--rgb_ckpt", str(bad), "--flow_ckpt", str(bad))
    argv[argv.index("pretrain_rgb")] = "finetune"
    main_error(capsys, argv, f"{bad} holds non-finite values", "resnet.conv1_rgb.weight")


def test_ctrl_c_is_one_line(data: Path, tmp_path: Path, capsys,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "build_model", interrupted)
    main_error(capsys, _argv(data, tmp_path), "interrupted by Ctrl-C", "--resume")


def test_non_finite_state_stops_and_keeps_only_finite_tensors(
        data: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    # the 2nd batch leaves an inf BN running variance while its loss is finite: only a check of
    # the state before saving catches it
    real, calls = train.train_batch, []

    def explode_bn(model, *args, **kwargs):
        losses = real(model, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            model.resnet.bn1_rgb.running_var[0] = float("inf")
        return losses

    monkeypatch.setattr(train, "train_batch", explode_bn)
    out = tmp_path / "FSNet" / "pretrain_rgb"
    main_error(capsys, _argv(data, tmp_path, "--max_samples", "4", "--save_every", "1"),
               "non-finite model state after epoch 1, batch 2", "resnet.bn1_rgb.running_var",
               f"{out / 'last.pth'} (step 1) is the last good checkpoint", "--lr 0.0002")
    state = torch.load(out / "last.pth", weights_only=True)
    assert state["global_step"] == 1
    assert checkpoint.first_non_finite(state) is None
    assert not list(out.glob("FSNet-*epoch.pth")) and not list(out.glob(".*.tmp"))


def test_disk_full_during_checkpoint_save(data: Path, tmp_path: Path, capsys,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "open", FullDisk, raising=False)
    out = tmp_path / "FSNet" / "pretrain_rgb"
    main_error(capsys, _argv(data, tmp_path), "no space left on device while writing "
               f"{out / 'last.pth'}", "free disk space")
    assert not (out / "last.pth").exists() and not list(out.glob(".*.tmp"))


# ------------------------------------------------ a live run: one owner, killed, resumed

def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def live_run(toy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """A real ``python train.py`` that saves last.pth after every batch (one batch per epoch)
    and would run for 50 epochs; killed at the latest when the module ends."""
    save_path = tmp_path_factory.mktemp("live")
    argv = _argv(toy, save_path, "--epoch", "50")
    process = subprocess.Popen([sys.executable, "train.py", *argv], cwd=REPO, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    yield process, argv, save_path / "FSNet" / "pretrain_rgb"
    if process.poll() is None:
        process.kill()
    process.communicate()


def test_second_concurrent_run_is_refused(data: Path, live_run: tuple) -> None:
    process, argv, out = live_run
    _wait_for(out / LOCK_NAME, process)
    done = run_module("train.py", argv + ["--resume", "auto"])
    assert_user_error(done.returncode, done.stderr, f"is in use by process {process.pid} on "
                      f"{socket.gethostname()}", "wait for that job to finish")
    assert process.poll() is None  # the first run goes on


def test_killed_run_resumes_and_its_stale_lock_is_taken_over(data: Path, live_run: tuple) -> None:
    process, argv, out = live_run
    _wait_for(out / "last.pth", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == process.pid  # left behind
    killed = Job(socket.gethostname(), process.pid, "")
    (out / f".last.pth.{killed.tag}.abcdefgh.tmp").write_bytes(b"half a checkpoint")  # a kill mid-save
    step = torch.load(out / "last.pth", weights_only=True, mmap=True)["global_step"]
    done = run_module("train.py", argv + ["--resume", "auto", "--stop_after", str(step + 1)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"taking over the stale lock {out / LOCK_NAME}" in done.stderr
    assert torch.load(out / "last.pth", weights_only=True, mmap=True)["global_step"] == step + 1
    assert not (out / LOCK_NAME).exists() and not list(out.glob(".*.tmp"))
    assert json.loads((out / "run.json").read_text())["resumed_from"] == str(out / "last.pth")


def test_finetune_run_folder_holding_the_rgb_checkpoint_is_refused(data: Path, tmp_path: Path,
                                                                   capsys) -> None:
    """A stage-3 run would write its epoch files over the --rgb_ckpt it was given (spelled with
    '..' and through a symlink)."""
    run = tmp_path / "FSNet" / "finetune"
    run.mkdir(parents=True)
    (run / "FSNet-1epoch.pth").write_bytes(b"the user's rgb stage")
    (tmp_path / "alias").symlink_to(run, target_is_directory=True)
    flow = tmp_path / "flow.pth"
    flow.write_bytes(b"flow stage")
    before = checksums(tmp_path)
    argv = _argv(data, tmp_path, "--rgb_ckpt", str(tmp_path / "alias" / ".." / "finetune" /
                                                 "FSNet-1epoch.pth"), "--flow_ckpt", str(flow))
    argv[argv.index("pretrain_rgb")] = "finetune"
    main_error(capsys, argv, "overlaps --rgb_ckpt", "the run folder")
    assert checksums(tmp_path) == before


@pytest.mark.parametrize("device", ["mps", "meta", "vulkan"])
def test_device_types_the_tools_do_not_run_on(data: Path, tmp_path: Path, capsys, device) -> None:
    main_error(capsys, _argv(data, tmp_path, "--device", device), f"--device {device}", "--device cpu")
    assert not (tmp_path / "FSNet").exists()


@pytest.mark.parametrize("kind", ["missing", "html"])
def test_two_bad_stage_checkpoints_are_one_message(data: Path, tmp_path: Path, capsys, kind) -> None:
    rgb, flow = tmp_path / "rgb.pth", tmp_path / "flow.pth"
    if kind == "html":
        for path in (rgb, flow):
            path.write_bytes(b"<!DOCTYPE html><html>login page</html>")
    before = checksums(tmp_path)
    argv = _argv(data, tmp_path / "runs", "--rgb_ckpt", str(rgb), "--flow_ckpt", str(flow))
    argv[argv.index("pretrain_rgb")] = "finetune"
    line = main_error(capsys, argv, str(rgb), str(flow), "2 unusable stage checkpoints")
    assert "weights_only" not in line
    assert checksums(tmp_path) == before


def test_training_folder_symlinked_into_the_run_folder(own_data: Path, tmp_path: Path, capsys) -> None:
    """data_root itself lies apart, but its Imgs folder is a symlink into the run folder."""
    run = tmp_path / "runs" / "FSNet" / "pretrain_rgb"
    run.mkdir(parents=True)
    images = own_data / IMAGES
    images.rename(run / "Imgs")
    images.symlink_to(run / "Imgs", target_is_directory=True)
    before = checksums(tmp_path)
    main_error(capsys, _argv(own_data, tmp_path / "runs"), "the training folder", "overlaps")
    assert checksums(tmp_path) == before


def test_mask_of_an_ambiguous_encoding_found_before_training(own_data: Path, tmp_path: Path,
                                                            capsys) -> None:
    """A CMYK GT (ink coverage, not a mask) is refused when the headers are read, not by a
    loader worker mid-epoch."""
    gt = next((own_data / GTS).glob("*.png"))
    cmyk = gt.with_suffix(".jpg")
    Image.open(gt).convert("CMYK").save(cmyk)
    gt.unlink()
    before = checksums(own_data)
    main_error(capsys, _argv(own_data, tmp_path, "--max_samples", "1000"), cmyk.name,
               "no single reading as a mask")
    assert checksums(own_data) == before and not (tmp_path / "FSNet" / "pretrain_rgb" / "last.pth").exists()
