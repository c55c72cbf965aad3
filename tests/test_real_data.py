"""The tools on real data: three original DAVIS-2016 sequences and a real H.264 clip.

Runs the command-line tools as a user would (their flags are the stable interface): import the
DAVIS release layout, flow on real 854x480 frames, two training steps, inference on the val
sequence with the (untrained) model, both evaluations, and ``inference.py --video`` on the first
20 frames of the clip. The data lives in the workspace's ``shared/real/`` beside the repository and
is never copied into it; in a user's clone (no ``shared/``) the whole module is skipped.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.utils import flow_to_image

from tests.cli_checks import checksums, run_module

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "real"
DAVIS = REAL / "DAVIS2016-sample"
CLIP = REAL / "videos" / "dog.mp4"
SIZE = (480, 854)  # DAVIS-2016 480p frames, (height, width)
CLIP_FRAMES = 20
SLOW = 900  # seconds allowed for one tool run (2 shared cores)

pytestmark = pytest.mark.skipif(
    not (DAVIS.is_dir() and CLIP.is_file()),
    reason=f"real data not found at {REAL} (it exists only in the project's workspace, "
           "beside the repository; a user's clone has none)")


def _ok(result) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _image_set(name: str) -> dict[str, int]:
    """Sequence -> frame count of a DAVIS ImageSets list (``/JPEGImages/480p/<seq>/<frame>.jpg ...``)."""
    counts: dict[str, int] = {}
    for line in (DAVIS / "ImageSets" / "480p" / f"{name}.txt").read_text().split("\n"):
        if line.strip():
            sequence = line.split()[0].split("/")[3]
            counts[sequence] = counts.get(sequence, 0) + 1
    return counts


def _names(folder: Path) -> list[str]:
    """The visible files of ``folder`` (the flow tool's hidden ``.fsnet-source.json`` excluded)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def _finite_metrics(values: dict) -> None:
    for name, value in values.items():
        if isinstance(value, dict):
            _finite_metrics(value)
        elif isinstance(value, float):
            assert math.isfinite(value), (name, value)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """The sample imported by ``python -m utils.davis_import`` (with DIS flow); DAVIS untouched."""
    before = checksums(DAVIS)
    root = tmp_path_factory.mktemp("real") / "dataset"
    out = _ok(run_module("utils.davis_import", ["--davis", str(DAVIS), "--data_root", str(root),
                                                "--workers", "2"], timeout=SLOW))
    assert "train: 2 sequences, 157 frames, 155 flows written" in out
    assert "val: 1 sequences, 40 frames, 39 flows written" in out
    assert checksums(DAVIS) == before
    return root


@pytest.fixture(scope="module")
def checkpoint(data_root, tmp_path_factory):
    """Two SGD steps of ``train.py --train_type pretrain_rgb`` on real frames (ResNet-50, 64x64)."""
    save = tmp_path_factory.mktemp("snap")
    _ok(run_module("train.py", [
        "--train_type", "pretrain_rgb", "--data_root", str(data_root), "--save_path", str(save),
        "--backbone", "resnet50", "--no_imagenet", "--trainsize", "64", "--batchsize", "2",
        "--max_samples", "4", "--epoch", "1", "--rates", "1", "--num_workers", "0",
        "--device", "cpu"], timeout=SLOW))
    stage = save / "FSNet" / "pretrain_rgb"
    (stage / "last.pth").unlink()  # 0.7 GB of resume state that nothing here needs
    yield stage
    shutil.rmtree(save)


@pytest.fixture(scope="module")
def predictions(data_root, checkpoint, tmp_path_factory) -> tuple[Path, str]:
    """``inference.py`` on the real val sequence (car-shadow) with the two-step model."""
    out = tmp_path_factory.mktemp("result")
    stdout = _ok(run_module("inference.py", [
        "--model_path", str(checkpoint / "FSNet-1epoch.pth"), "--dataset_path",
        str(data_root / "TestSet"), "--datasets", "DAVIS", "--test_save", str(out),
        "--testsize", "64", "--device", "cpu", "--workers", "0", "--no_progress"], timeout=SLOW))
    return out, stdout


def test_davis_import_lays_out_the_release(data_root):
    train, val = _image_set("train"), _image_set("val")
    assert (sorted(train), sorted(val)) == (["bear", "boat"], ["car-shadow"])
    for sequence, frames in val.items():
        folder = data_root / "TestSet" / "DAVIS" / sequence
        assert [len(_names(folder / sub)) for sub in ("Frame", "GT", "OF_FlowNet2")] == \
               [frames, frames, frames - 1]  # official rule: the last frame gets no flow
        assert f"{frames - 1:05d}.jpg" not in _names(folder / "OF_FlowNet2")
    video = data_root / "TrainSet_Video"
    images = _names(video / "Imgs")
    assert images == sorted(f"{seq}_{i:05d}.jpg" for seq, n in train.items() for i in range(n))
    assert len(_names(video / "ground-truth")) == len(images)
    assert len(_names(video / "Flow")) == len(images) - len(train)
    static = data_root / "TrainSet_StaticAndVideo"
    assert len(_names(static / "Imgs")) == len(_names(static / "GTs")) == len(images)
    flow = np.asarray(Image.open(video / "Flow" / "bear_00000.jpg"))
    assert flow.shape == (*SIZE, 3) and flow.std() > 1  # real motion: not a flat image


def test_flow_on_real_frames_recovers_a_known_shift(tmp_path):
    """Frames: a real frame twice, then shifted by (dx, dy) twice; backward flow for the last."""
    dx, dy = 5, -3
    frame = np.asarray(Image.open(DAVIS / "JPEGImages" / "480p" / "car-shadow" / "00000.jpg"))
    frames = tmp_path / "frames"
    frames.mkdir()
    shifted = [frame, frame, np.roll(frame, (dy, dx), (0, 1)), np.roll(frame, (2 * dy, 2 * dx), (0, 1))]
    for index, image in enumerate(shifted):
        Image.fromarray(image).save(frames / f"{index:05d}.png")  # lossless: the shift stays exact
    out = tmp_path / "flow"
    _ok(run_module("utils.flow", ["--frames", str(frames), "--out", str(out),
                                  "--last_frame", "backward", "--save_raw", "npy"]))
    expected = {"00000": (0, 0), "00001": (dx, dy), "00002": (dx, dy), "00003": (-dx, -dy)}
    assert _names(out) == [f"{stem}.jpg" for stem in expected]
    for stem, (u, v) in expected.items():
        raw = np.load(tmp_path / "flow_raw" / f"{stem}.npy")
        assert raw.shape == (*SIZE, 2) and np.isfinite(raw).all()
        inner = raw[16:-16, 16:-16].reshape(-1, 2)  # np.roll wraps the borders around
        np.testing.assert_allclose(np.median(inner, axis=0), [u, v], atol=0.1)
        color = np.asarray(Image.open(out / f"{stem}.jpg")).astype(float)
        assert color.shape == (*SIZE, 3)
        tint = 255 - np.median(color[16:-16, 16:-16].reshape(-1, 3), axis=0)
        if (u, v) == (0, 0):
            assert tint.max() <= 2  # no motion is white
        else:  # the tint has the hue of (u, v) on the colour wheel
            wheel = 255.0 - flow_to_image(torch.tensor([[[float(u)]], [[float(v)]]])).flatten().numpy()
            cosine = float(np.dot(tint, wheel) / np.linalg.norm(tint) / np.linalg.norm(wheel))
            assert cosine > 0.95, (stem, tint, wheel)


def test_two_training_steps_on_real_frames(checkpoint):
    summary = json.loads((checkpoint / "run.json").read_text())["summary"]
    assert summary["global_step"] == 2 and summary["finished"]
    for loss in summary["epoch_losses"]:
        assert math.isfinite(loss["loss_s"]) and math.isfinite(loss["loss_e"])
    assert (checkpoint / "FSNet-1epoch.pth").is_file()


def test_inference_on_the_real_val_sequence(predictions):
    out, stdout = predictions
    frames = _image_set("val")["car-shadow"]
    masks = sorted((out / "DAVIS" / "car-shadow").glob("*.png"))
    assert [m.stem for m in masks] == [f"{i:05d}" for i in range(frames - 1)]
    assert f"car-shadow/{frames - 1:05d}: last frame" in stdout
    for mask in masks[:: max(1, len(masks) // 4)]:
        with Image.open(mask) as image:
            assert image.mode == "L" and image.size == SIZE[::-1]


def test_davis16_on_real_predictions_and_on_the_ground_truth(predictions, tmp_path):
    out, _ = predictions
    report = tmp_path / "davis.json"
    _ok(run_module("eval.davis16", ["--pred", str(out / "DAVIS"), "--gt", str(DAVIS), "--seqs",
                                    "car-shadow", "--json", str(report), "--no_progress"]))
    result = json.loads(report.read_text())
    assert list(result["sequences"]) == ["car-shadow"]
    assert result["sequences"]["car-shadow"]["n_frames"] == _image_set("val")["car-shadow"]
    _finite_metrics(result["overall"])
    # the ground truth as prediction scores perfectly: the real masks are read correctly
    _ok(run_module("eval.davis16", ["--pred", str(DAVIS / "Annotations" / "480p"), "--gt", str(DAVIS),
                                    "--seqs", "car-shadow", "--json", str(report), "--no_progress"]))
    overall = json.loads(report.read_text())["overall"]
    assert overall["J"]["mean"] == pytest.approx(1.0) and overall["F"]["mean"] == pytest.approx(1.0)


def test_vsod_on_real_predictions_and_on_the_ground_truth(predictions, data_root, tmp_path):
    out, _ = predictions
    test_set = data_root / "TestSet"
    report = tmp_path / "vsod.json"
    _ok(run_module("eval.vsod", ["--pred", str(out), "--gt", str(test_set), "--json", str(report)]))
    davis = json.loads(report.read_text())["datasets"]["DAVIS"]
    assert davis["n_sequences"] == 1
    _finite_metrics(davis)
    assert all(0.0 <= value <= 1.0 for key, value in davis.items() if isinstance(value, float))
    perfect = tmp_path / "gt_as_pred" / "DAVIS"
    perfect.mkdir(parents=True)
    (perfect / "car-shadow").symlink_to(test_set / "DAVIS" / "car-shadow" / "GT")
    _ok(run_module("eval.vsod", ["--pred", str(perfect.parent), "--gt", str(test_set), "--json",
                                 str(report)]))
    davis = json.loads(report.read_text())["datasets"]["DAVIS"]
    assert davis["S"] == pytest.approx(1.0) and davis["MAE"] == pytest.approx(0.0)


def test_inference_video_on_the_real_clip(checkpoint, tmp_path):
    """``--video`` on the first 20 frames of the H.264 clip (decoded with OpenCV, as
    ``inference.py`` itself does; no flag limits the frames of a video file)."""
    capture = cv2.VideoCapture(str(CLIP))
    frames = tmp_path / "dog"
    frames.mkdir()
    for index in range(CLIP_FRAMES):
        ok, image = capture.read()
        assert ok, f"cannot decode frame {index} of {CLIP}"
        cv2.imwrite(str(frames / f"{index:05d}.jpg"), image)
    capture.release()
    height, width = image.shape[:2]
    before = checksums(frames)
    out = tmp_path / "result"
    stdout = _ok(run_module("inference.py", [
        "--model_path", str(checkpoint / "FSNet-1epoch.pth"), "--video", str(frames),
        "--test_save", str(out), "--testsize", "64", "--device", "cpu", "--workers", "0",
        "--no_progress", "--keep_intermediate"], timeout=SLOW))
    stems = [f"{i:05d}" for i in range(CLIP_FRAMES)]
    assert [Path(name).stem for name in _names(out / "Video-input" / "dog" / "Flow")] == stems
    masks = sorted((out / "Video" / "dog").glob("*.png"))
    assert [m.stem for m in masks] == stems  # the last frame too (backward flow)
    with Image.open(masks[-1]) as mask:
        assert mask.size == (width, height)
    gif = out / "Video" / "dog.gif"
    assert f"Overlay GIF: {gif}" in stdout
    with Image.open(gif) as overlay:
        assert overlay.n_frames == CLIP_FRAMES
        assert abs(overlay.size[0] / overlay.size[1] - width / height) < 0.02
    assert checksums(frames) == before
