"""Bad input to ``inference.py``: one ``error:`` line, exit status 2, no traceback, and every input
file byte-identical afterwards.

A tiny test set (one sequence, two 64x64 frames, one flow) is written directly; most cases stop
before the model is loaded, so their checkpoint is a placeholder file. The two checkpoint cases use
a real ResNet-50 FSNet state_dict with NaN weights / with an output layer that overflows.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import inference
from lib.fsnet import FSNet
from tests.cli_checks import assert_user_error, checksums, run_module
from utils.torch_files import save_checkpoint
from utils.safety import LOCK_NAME, record_source


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """``testset`` (TestSet/Toy/seq/{Frame,OF_FlowNet2}), ``frames`` and a placeholder checkpoint."""
    root = tmp_path_factory.mktemp("bad_input")
    seq = root / "TestSet" / "Toy" / "seq"
    rng = np.random.default_rng(0)
    for folder, count in (("Frame", 2), ("OF_FlowNet2", 1)):
        (seq / folder).mkdir(parents=True)
        for index in range(count):
            pixels = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(seq / folder / f"{index:05d}.png")
    placeholder = root / "placeholder.pth"
    placeholder.write_bytes(b"never loaded")
    return {"testset": root / "TestSet", "frames": seq / "Frame", "checkpoint": placeholder,
            "root": root}


@pytest.fixture(scope="module")
def broken_checkpoints(data) -> dict:
    """Real FSNet checkpoints: ``nan`` (a NaN weight) and ``overflow`` (finite, logits overflow)."""
    model = FSNet("resnet50")
    state = model.state_dict()
    nan = dict(state, **{"reduce_a1.reduce.0.conv_bn.0.weight":
                         state["reduce_a1.reduce.0.conv_bn.0.weight"].clone().fill_(float("nan"))})
    bn = "output_s.output.0.conv_bn.1."  # finite, but scales the features past float32's range
    overflow = dict(state, **{bn + "weight": torch.full_like(state[bn + "weight"], 3e38),
                              bn + "running_mean": torch.full_like(state[bn + "running_mean"], -1e3)})
    paths = {"nan": data["root"] / "nan.pth", "overflow": data["root"] / "overflow.pth"}
    save_checkpoint(nan, paths["nan"])
    save_checkpoint({"model": overflow}, paths["overflow"])
    return paths


def run_main(capsys, data, *argv: str, checkpoint: Path | None = None) -> str:
    """Run ``inference.main`` in-process; check the error convention and untouched inputs."""
    checkpoint = checkpoint or data["checkpoint"]
    before = checksums(data["testset"], checkpoint)
    args = ["--model_path", str(checkpoint), "--dataset_path", str(data["testset"]),
            "--testsize", "64", "--device", "cpu", "--workers", "0", "--no_progress", *argv]
    code = inference.main(args)
    err = capsys.readouterr().err
    assert checksums(data["testset"], checkpoint) == before
    return assert_user_error(code, err)


def test_output_inside_dataset(capsys, data):
    line = run_main(capsys, data, "--test_save", str(data["testset"] / "Toy" / "result"))
    assert "--test_save" in line and "--dataset_path" in line
    assert not (data["testset"] / "Toy" / "result").exists()


def test_output_is_the_dataset_through_a_symlink(capsys, data, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(data["testset"], target_is_directory=True)
    assert "overlaps" in run_main(capsys, data, "--test_save", str(link))


def test_output_is_the_video_frame_folder(capsys, data):
    line = run_main(capsys, data, "--video", str(data["frames"]), "--test_save", str(data["frames"]))
    assert "--video" in line


def test_lock_held_by_a_live_process(capsys, data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(f'{{"host": "{__import__("socket").gethostname()}", '
                                     f'"pid": {other.pid}, "command": "inference.py"}}')
        line = run_main(capsys, data, "--test_save", str(out))
    finally:
        other.kill()
        other.wait()
    assert f"process {other.pid}" in line
    assert not list(out.rglob("*.png"))


def test_non_finite_checkpoint(capsys, data, broken_checkpoints, tmp_path):
    line = run_main(capsys, data, "--test_save", str(tmp_path / "out"),
                    checkpoint=broken_checkpoints["nan"])
    assert str(broken_checkpoints["nan"]) in line and ("NaN" in line or "non-finite" in line)
    assert not list((tmp_path / "out").rglob("*.png"))


def test_non_finite_output(capsys, data, broken_checkpoints, tmp_path):
    line = run_main(capsys, data, "--test_save", str(tmp_path / "out"), "--backend", "eager",
                    checkpoint=broken_checkpoints["overflow"])
    assert "NaN/inf" in line and "seq/00000" in line
    assert not list((tmp_path / "out").rglob("*.png"))


def test_missing_checkpoint(capsys, data, tmp_path):
    line = run_main(capsys, data, "--test_save", str(tmp_path / "out"), "--model_path",
                    str(tmp_path / "missing.pth"))
    assert "missing.pth" in line and "python -m utils.weights fsnet" in line


@pytest.mark.parametrize("flag, value", [("--testsize", "100"), ("--testsize", "0"),
                                         ("--batchsize", "0"), ("--batchsize", "many"),
                                         ("--workers", "-1"), ("--threshold", "1.5")])
def test_bad_numbers(capsys, data, tmp_path, flag, value):
    assert flag in run_main(capsys, data, "--test_save", str(tmp_path / "out"), flag, value)
    assert not (tmp_path / "out").exists()  # refused before the output folder is made


def test_onnx_without_onnxruntime(capsys, data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    line = run_main(capsys, data, "--test_save", str(tmp_path / "out"), "--backend", "onnx")
    assert "pip install onnx onnxruntime" in line


def test_onnx_with_autocast(capsys, data, tmp_path):
    assert "--amp" in run_main(capsys, data, "--test_save", str(tmp_path / "out"),
                               "--backend", "onnx", "--amp", "bf16")


def test_missing_flow_for_inner_frame(capsys, data, tmp_path):
    broken = tmp_path / "TestSet"
    frames = broken / "Toy" / "seq" / "Frame"
    frames.mkdir(parents=True)
    (broken / "Toy" / "seq" / "OF_FlowNet2").mkdir()
    for index in range(3):
        frames.joinpath(f"{index:05d}.png").write_bytes((data["frames"] / "00000.png").read_bytes())
    line = run_main(capsys, data, "--test_save", str(tmp_path / "out"), "--dataset_path", str(broken))
    assert "python -m utils.flow" in line and "00000.png" in line


def test_command_line_in_a_subprocess(data, tmp_path):
    """The real command: same convention, and nothing written."""
    before = checksums(data["testset"])
    result = run_module("inference.py", ["--model_path", str(data["checkpoint"]), "--dataset_path",
                                         str(data["testset"]), "--testsize", "100",
                                         "--test_save", str(tmp_path / "out")])
    assert_user_error(result.returncode, result.stderr, "--testsize 100", "multiple of 32")
    assert checksums(data["testset"]) == before and not (tmp_path / "out").exists()


def test_maps_of_another_job_are_not_replaced_without_overwrite(capsys, data, tmp_path):
    out = tmp_path / "out"
    (out / "Toy" / "seq").mkdir(parents=True)
    (out / "Toy" / "seq" / "00000.png").write_bytes(b"another job's map")
    record_source(out, {"tool": "inference.py", "model_path": "/elsewhere/other.pth"})
    before = checksums(out)
    line = run_main(capsys, data, "--test_save", str(out))
    assert "another job" in line and "model_path" in line and "--overwrite" in line
    assert checksums(out) == before
    line = run_main(capsys, data, "--test_save", str(out), "--overwrite")  # now the checkpoint's turn
    assert "another job" not in line and str(data["checkpoint"]) in line


def test_dataset_named_outside_dataset_path_is_checked_too(capsys, data):
    """``--datasets ../TestSet/Toy`` reads a dataset outside --dataset_path; its output folder
    ``<test_save>/../TestSet/Toy`` would be the input itself."""
    (data["root"] / "Other").mkdir(exist_ok=True)
    line = run_main(capsys, data, "--dataset_path", str(data["root"] / "Other"),
                    "--datasets", "../TestSet/Toy", "--test_save", str(data["root"] / "result"))
    assert "overlaps" in line and "../TestSet/Toy" in line
    assert not (data["root"] / "result").exists()


def test_frame_folder_symlinked_into_the_output(capsys, data, tmp_path):
    """A sequence whose frame folder is a symlink to a folder inside --test_save."""
    out = tmp_path / "out"
    (out / "frames").mkdir(parents=True)
    for name in ("00000.png", "00001.png"):
        (out / "frames" / name).write_bytes((data["frames"] / name).read_bytes())
    seq = tmp_path / "TestSet" / "Toy" / "seq"
    seq.mkdir(parents=True)
    (seq / "Frame").symlink_to(out / "frames", target_is_directory=True)
    (seq / "OF_FlowNet2").symlink_to(data["frames"].parent / "OF_FlowNet2", target_is_directory=True)
    before = checksums(out)
    code = inference.main(["--model_path", str(data["checkpoint"]), "--dataset_path",
                           str(tmp_path / "TestSet"), "--test_save", str(out), "--testsize", "64",
                           "--device", "cpu", "--no_progress"])
    assert "the frame and flow folder" in assert_user_error(code, capsys.readouterr().err)
    assert checksums(out) == before


@pytest.mark.parametrize("device", ["mps", "vulkan", "meta", "xla", "garbage", "cuda:x", ""])
def test_device_other_than_cpu_or_cuda(capsys, data, tmp_path, device):
    line = run_main(capsys, data, "--test_save", str(tmp_path / "out"), "--device", device)
    assert "--device" in line and "cpu" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", ["html", "bytes", "pickle_bytes", "integer_tensors"])
def test_checkpoint_that_is_no_fsnet_checkpoint(capsys, data, tmp_path, content):
    """No relayed torch advice ("weights_only=False will likely succeed ... file an issue"),
    no unpickler KeyError/IndexError, no load_state_dict dump: one line naming the file."""
    path = tmp_path / f"{content}.pth"
    rng = np.random.default_rng(3)
    if content == "integer_tensors":
        torch.save({k: v.long() for k, v in FSNet("resnet50").state_dict().items()}, path)
    else:
        path.write_bytes({"html": b"<!DOCTYPE html><html><body>Not Found</body></html>",
                          "bytes": rng.bytes(4000),
                          "pickle_bytes": b"\x80\x02" + rng.bytes(400)}[content])
    line = run_main(capsys, data, "--test_save", str(tmp_path / "out"), "--backend", "plain",
                    checkpoint=path)
    assert str(path) in line and "weights_only" not in line and "issue" not in line
    assert ("int64" in line) == (content == "integer_tensors") and len(line) < 1500
    assert not list(tmp_path.glob("out/**/*.png"))


def test_frame_and_flow_of_different_sizes_found_before_work(capsys, data, tmp_path):
    """Found when the headers are read, before the checkpoint: one line, no worker traceback."""
    seq = tmp_path / "TestSet" / "Toy" / "seq"
    (seq / "Frame").mkdir(parents=True)
    (seq / "OF_FlowNet2").mkdir()
    for name in ("00000.png", "00001.png"):
        (seq / "Frame" / name).write_bytes((data["frames"] / name).read_bytes())
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(seq / "OF_FlowNet2" / "00000.png")
    before = checksums(tmp_path / "TestSet")
    code = inference.main(["--model_path", str(data["checkpoint"]), "--dataset_path",
                           str(tmp_path / "TestSet"), "--test_save", str(tmp_path / "out"),
                           "--testsize", "64", "--device", "cpu", "--workers", "1", "--no_progress"])
    line = assert_user_error(code, capsys.readouterr().err, "64x48 but", "00000.png")
    assert "worker" not in line.lower() and checksums(tmp_path / "TestSet") == before
    assert not (tmp_path / "out").exists()


def test_every_argument_problem_in_one_message(capsys, data, tmp_path):
    line = run_main(capsys, data, "--test_save", str(tmp_path / "out"), "--testsize", "100",
                    "--threshold", "2", "--device", "mps", "--video", str(tmp_path / "absent.mp4"))
    assert "4 argument problems" in line
    for fragment in ("--testsize 100", "--threshold 2", "--device mps", "absent.mp4"):
        assert fragment in line


def test_undecodable_video_found_before_the_checkpoint_loads(capsys, data, tmp_path):
    """The placeholder checkpoint would fail to load: the video is checked first."""
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    before = checksums(video)
    line = run_main(capsys, data, "--test_save", str(tmp_path / "out"), "--video", str(video))
    assert "clip.mp4" in line and "placeholder" not in line
    assert checksums(video) == before and not (tmp_path / "out").exists()


def test_maps_without_a_record_are_not_replaced(capsys, data, tmp_path):
    """--test_save already holds maps (or anything) that no inference.py run recorded."""
    mine = tmp_path / "out" / "Toy" / "seq" / "00000.png"
    mine.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(mine)
    before = checksums(tmp_path / "out")
    line = run_main(capsys, data, "--test_save", str(tmp_path / "out"))
    assert "no record" in line and "--overwrite" in line
    assert checksums(tmp_path / "out") == before
