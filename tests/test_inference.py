"""End-to-end tests of inference.py on the toy test set with a randomly initialised FSNet.

One module-scoped toy set (2 sequences x 3 non-square 128x96 frames, last frames without flow)
and one checkpoint (random init, BatchNorm statistics calibrated on the toy frames) are shared
by all tests; the network runs at 64x64.
"""
from __future__ import annotations

import importlib.util
import shutil
import socket
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import inference
from lib.checkpoint import build_fsnet
from lib.fsnet import FSNet
from utils.torch_files import save_checkpoint
from utils.cli import UserError
from utils.data.dataset import TestDataset
from utils.data.synthetic import ToyConfig, make_toy_dataset
from tests.cli_checks import assert_user_error
from tests.cuda_graph_standin import RerunCapture
from utils.inference import cuda_graph
from utils.inference.video import VideoOptions, video_samples
from utils.inference.workers import StageClock
from utils.job import Job, current_job

TESTSIZE = 64
HAS_CRF = importlib.util.find_spec("pydensecrf") is not None


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    """Toy data root; the test set is ``<root>/TestSet/Toy/test0{0,1}``."""
    root = tmp_path_factory.mktemp("toy")
    config = ToyConfig(train_sequences=1, train_frames=2, test_sequences=2, test_frames=3, static_images=1)
    return make_toy_dataset(root / "Toy", config=config)


@pytest.fixture(scope="module")
def clip(toy, tmp_path_factory) -> Path:
    """A 4-frame MJPG clip of toy test frames."""
    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    _write_clip(path, toy)
    return path


@pytest.fixture(scope="module")
def checkpoint(toy, clip, tmp_path_factory) -> Path:
    """Random FSNet whose BatchNorm statistics are those of the frames the tests feed it: the toy
    test frames and the video inputs (so the output varies over each frame instead of being the
    constant of the untrained head, and the BPM products cannot overflow to NaN, which is refused)."""
    torch.manual_seed(0)
    model = FSNet("res2net50")
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average: running stats = this batch's stats
    dataset = TestDataset(toy / "TestSet" / "Toy", TESTSIZE)
    items = [dataset[i] for i in range(len(dataset))]
    for video in (clip, toy / "TestSet" / "Toy" / "test00" / "Frame"):
        items += video_inputs(video)
    model.train()
    with torch.no_grad():
        model(torch.stack([i["image"] for i in items]), torch.stack([i["flow"] for i in items]))
    path = tmp_path_factory.mktemp("ckpt") / "fsnet_random.pth"
    save_checkpoint({"model": model.state_dict(), "epoch": 0}, path)
    return path


def video_inputs(video: Path) -> list:
    """The samples (with input tensors) that ``--video`` streams for ``video``."""
    return list(video_samples(video, "clip", VideoOptions(testsize=TESTSIZE), lambda _: False,
                              StageClock()))


def run(checkpoint: Path, out: Path, *extra: str, dataset_path: Path | None = None) -> dict:
    argv = ["--model_path", str(checkpoint), "--test_save", str(out), "--testsize", str(TESTSIZE),
            "--device", "cpu", "--workers", "0", "--batchsize", "4", "--no_progress",
            "--backend", "eager", *extra]  # onnx (auto here when installed): tests/test_export.py
    if dataset_path is not None:
        argv += ["--dataset_path", str(dataset_path)]
    return inference.predict(inference.config_from_args(inference.get_args_parser().parse_args(argv))).summary()


def official_saliency(prob: np.ndarray) -> np.ndarray:
    """Official post-processing written independently: min-max (+1e-8), then bytescale rounding."""
    s = (prob - prob.min()) / (prob.max() - prob.min() + np.float32(1e-8))
    spread = s.max() - s.min()
    byte = (s - s.min()) * np.float32(255.0 / (spread if spread else 1))
    return (byte.clip(0, 255) + np.float32(0.5)).astype(np.uint8)


def direct_probabilities(checkpoint: Path, test_dir: Path) -> dict:
    """(sequence, frame) -> sigmoid of pred_s upsampled to the frame size, from one plain forward."""
    model = build_fsnet(checkpoint)
    dataset = TestDataset(test_dir, TESTSIZE)
    items = [dataset[i] for i in range(len(dataset))]
    with torch.no_grad():
        pred_s, _ = model(torch.stack([i["image"] for i in items]), torch.stack([i["flow"] for i in items]))
    out = {}
    for item, logits in zip(items, pred_s):
        up = torch.nn.functional.interpolate(logits[None], size=(item["height"], item["width"]),
                                             mode="bilinear", align_corners=True)
        out[(item["sequence"], item["frame"])] = torch.sigmoid(up)[0, 0].numpy()
    return out


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "L"
        return np.asarray(image)


@pytest.fixture(scope="module")
def saliency_run(toy, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("saliency")
    return out, run(checkpoint, out, "--mode", "saliency", "--no_fast", dataset_path=toy / "TestSet")


def test_saliency_equals_direct_model_call(toy, checkpoint, saliency_run):
    out, summary = saliency_run
    expected = direct_probabilities(checkpoint, toy / "TestSet" / "Toy")
    assert summary["written"] == len(expected) == 4
    for (sequence, frame), prob in expected.items():
        ours = read_png(out / "Toy" / sequence / f"{frame}.png")
        assert ours.shape == prob.shape == (96, 128)  # original (non-square) frame size
        assert ours.min() == 0 and ours.max() == 255
        np.testing.assert_array_equal(ours, official_saliency(prob))


def test_layout_and_last_frame_summary(toy, saliency_run):
    out, summary = saliency_run
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "Toy/test00/00000.png", "Toy/test00/00001.png", "Toy/test01/00000.png", "Toy/test01/00001.png"]
    assert [u[:3] for u in summary["unpredicted"]] == [["Toy", "test00", "00002"], ["Toy", "test01", "00002"]]
    assert all("last frame" in u[3] for u in summary["unpredicted"])
    assert "DAVIS" in summary["absent_datasets"]
    assert summary["model_fps"] > 0 and summary["end_to_end_fps"] > 0
    assert not list(out.rglob("*.tmp"))


def test_binary_fast_path_with_workers(toy, checkpoint, tmp_path):
    summary = run(checkpoint, tmp_path, "--mode", "binary", "--workers", "1", "--batchsize", "3",
                  "--datasets", "Toy", dataset_path=toy / "TestSet")
    assert summary["fast"] and summary["written"] == 4
    expected = direct_probabilities(checkpoint, toy / "TestSet" / "Toy")
    foreground = 0
    for (sequence, frame), prob in expected.items():
        mask = read_png(tmp_path / "Toy" / sequence / f"{frame}.png")
        assert mask.shape == prob.shape
        assert set(np.unique(mask)) <= {0, 255}
        decided = np.abs(prob - 0.5) > 1e-4  # the folded-BN fast path may flip pixels at 0.5
        np.testing.assert_array_equal(mask[decided], np.where(prob[decided] > 0.5, 255, 0))
        foreground += int((mask == 255).sum())
    assert 0 < foreground < 4 * 96 * 128  # a real mask, not a constant


def test_skip_existing_resumes(toy, checkpoint, tmp_path):
    run(checkpoint, tmp_path, "--mode", "binary", dataset_path=toy / "TestSet")
    kept = tmp_path / "Toy" / "test00" / "00000.png"
    Image.fromarray(np.full((96, 128), 7, np.uint8)).save(kept)  # a marker: must not be rewritten
    removed = tmp_path / "Toy" / "test01" / "00001.png"
    removed.unlink()
    empty, truncated = tmp_path / "Toy" / "test01" / "00000.png", tmp_path / "Toy" / "test00" / "00001.png"
    empty.write_bytes(b"")  # not done: written again
    truncated.write_bytes(truncated.read_bytes()[:60])
    summary = run(checkpoint, tmp_path, "--mode", "binary", "--skip_existing", dataset_path=toy / "TestSet")
    assert summary["datasets"][0]["skipped_existing"] == 1
    assert summary["written"] == 3 and removed.is_file()
    assert read_png(kept).max() == 7 and read_png(empty).shape == read_png(truncated).shape == (96, 128)


def test_only_a_dead_jobs_temporaries_in_the_map_folders_are_removed(toy, checkpoint, tmp_path):
    """A resumed run removes what a killed run left in the folders it writes, and nothing of a
    live job or outside those folders."""
    run(checkpoint, tmp_path, "--mode", "binary", dataset_path=toy / "TestSet")
    dead, live = Job(socket.gethostname(), 2**22 + 7, ""), current_job()
    leftovers = {name: folder / f".00000.png.{job.tag}.abcdefgh.tmp" for name, folder, job in (
        ("dead", tmp_path / "Toy" / "test00", dead), ("live", tmp_path / "Toy" / "test00", live),
        ("elsewhere", tmp_path / "notes", dead))}
    for path in leftovers.values():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"partial")
    run(checkpoint, tmp_path, "--mode", "binary", "--skip_existing", dataset_path=toy / "TestSet")
    assert [name for name, path in leftovers.items() if path.exists()] == ["live", "elsewhere"]


def _write_clip(path: Path, toy: Path, frames: int = 4) -> None:
    """An MJPG clip of toy test frames (content the random checkpoint was calibrated on)."""
    sources = [flow.parents[1] / "Frame" / flow.name  # the frames the statistics come from
               for flow in sorted((toy / "TestSet" / "Toy").glob("test*/OF_FlowNet2/*.jpg"))]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (128, 96))
    assert writer.isOpened()
    for t in range(frames):
        writer.write(cv2.imread(str(sources[t % len(sources)])))
    writer.release()


def test_video_file_every_frame_and_gif(clip, checkpoint, tmp_path):
    out = tmp_path / "result"
    summary = run(checkpoint, out, "--video", str(clip), "--mode", "binary")
    masks = sorted((out / "Video" / "clip").glob("*.png"))
    assert [m.stem for m in masks] == ["00000", "00001", "00002", "00003"]  # last frame too
    assert summary["unpredicted"] == []
    for mask in masks:
        assert read_png(mask).shape == (96, 128)
    with Image.open(summary["overlay_gif"]) as gif:
        assert gif.n_frames == 4 and gif.size == (128, 96)


def test_video_frame_folder_left_untouched(toy, checkpoint, tmp_path):
    frames = tmp_path / "my_frames"
    shutil.copytree(toy / "TestSet" / "Toy" / "test00" / "Frame", frames)
    before = sorted(p.name for p in frames.iterdir())
    summary = run(checkpoint, tmp_path / "result", "--video", str(frames), "--mode", "saliency")
    assert sorted(p.name for p in frames.iterdir()) == before
    assert summary["written"] == 3 and Path(summary["overlay_gif"]).is_file()
    # rerun resumes: flow and masks are reused
    again = run(checkpoint, tmp_path / "result", "--video", str(frames), "--skip_existing")
    assert again["written"] == 0 and again["datasets"][0]["skipped_existing"] == 3
    # a video file of the same name: resuming is refused, a fresh run rebuilds the work folder
    # and its frames never land in my_frames/
    _write_clip(tmp_path / "my_frames.avi", toy, frames=2)
    for resume in ([], ["--skip_existing"]):  # another input's maps: not without --overwrite
        with pytest.raises(FileExistsError, match="another job"):
            run(checkpoint, tmp_path / "result", "--video", str(tmp_path / "my_frames.avi"), *resume)
    with pytest.raises(ValueError, match="rerun without --skip_existing"):  # nor reuse its frames
        run(checkpoint, tmp_path / "result", "--video", str(tmp_path / "my_frames.avi"),
            "--skip_existing", "--overwrite")
    clip = run(checkpoint, tmp_path / "result", "--video", str(tmp_path / "my_frames.avi"), "--overwrite")
    assert sorted(p.name for p in frames.iterdir()) == before
    assert clip["written"] == 2


@pytest.mark.skipif(not HAS_CRF, reason="pydensecrf2 not installed (optional extra: pip install pydensecrf2)")
def test_crf_binary_run(toy, checkpoint, tmp_path):
    summary = run(checkpoint, tmp_path, "--mode", "binary", "--crf", dataset_path=toy / "TestSet")
    assert summary["written"] == 4
    for path in (tmp_path / "Toy").rglob("*.png"):
        mask = read_png(path)
        assert mask.shape == (96, 128) and set(np.unique(mask)) <= {0, 255}


def test_cli_flags_parse_as_lists():
    args = inference.get_args_parser().parse_args(["--datasets", "DAVIS", "FBMS", "--device", "cuda:1"])
    assert args.datasets == ["DAVIS", "FBMS"] and args.device == "cuda:1"
    defaults = inference.get_args_parser().parse_args([])
    assert defaults.model_path.endswith("snapshot/FSNet/2021-ICCV-FSNet-20epoch-new.pth")
    assert (defaults.testsize, defaults.batchsize, defaults.mode) == (352, "auto", "saliency")
    assert (defaults.backend, defaults.amp, defaults.workers) == ("auto", "off", "auto")
    legacy = inference.get_args_parser().parse_args(["--no_fast", "--amp", "--num_workers", "3"])
    assert (legacy.backend, legacy.amp, legacy.workers) == ("plain", "bf16", "3")
    assert defaults.threshold == 0.5 and defaults.datasets is None
    assert Path(defaults.dataset_path) == Path("dataset/TestSet")
    assert Path(defaults.test_save) == Path("result/FSNet")


# ----------------------------------------------------------------------------- bad input


def copy_testset(toy: Path, tmp_path: Path) -> Path:
    """A private copy of the toy TestSet that a test may break."""
    return Path(shutil.copytree(toy / "TestSet", tmp_path / "TestSet"))


def test_cli_missing_dataset_one_message(toy, checkpoint, tmp_path, capsys):
    code = inference.main(["--model_path", str(checkpoint), "--dataset_path", str(toy / "TestSet"),
                          "--datasets", "DAVIS", "Toy", "--test_save", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1
    assert "error: Dataset folder(s) not found" in err and "DAVIS" in err and "Available: Toy" in err


def test_no_dataset_found(toy, checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No test set found"):
        run(checkpoint, tmp_path / "out", dataset_path=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="pass its parent as --dataset_path"):
        run(checkpoint, tmp_path / "out", dataset_path=toy / "TestSet" / "Toy")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run(checkpoint, tmp_path / "out", dataset_path=tmp_path / "nowhere")


def test_missing_flow_for_inner_frame(toy, checkpoint, tmp_path):
    testset = copy_testset(toy, tmp_path)
    (testset / "Toy" / "test01" / "OF_FlowNet2" / "00000.jpg").unlink()
    with pytest.raises(ValueError, match=r"00000\.jpg.*python -m utils\.flow"):
        run(checkpoint, tmp_path / "out", dataset_path=testset)


def test_unreadable_frame(toy, checkpoint, tmp_path):
    testset = copy_testset(toy, tmp_path)
    broken = testset / "Toy" / "test00" / "Frame" / "00001.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=str(broken)):
        run(checkpoint, tmp_path / "out", dataset_path=testset)


def test_empty_sequence(toy, checkpoint, tmp_path):
    testset = copy_testset(toy, tmp_path)
    for folder in ("Frame", "OF_FlowNet2"):
        (testset / "Toy" / "empty_seq" / folder).mkdir(parents=True)
    with pytest.raises(ValueError, match="Empty sequence.*empty_seq"):
        run(checkpoint, tmp_path / "out", dataset_path=testset)


def test_checkpoint_errors(toy, checkpoint, tmp_path):
    with pytest.raises(ValueError, match=f"{checkpoint}.*res2net50.*--backbone"):
        run(checkpoint, tmp_path / "out", "--backbone", "resnet50", dataset_path=toy / "TestSet")
    other = tmp_path / "not_fsnet.pth"
    save_checkpoint({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(ValueError, match=str(other)):
        run(other, tmp_path / "out", dataset_path=toy / "TestSet")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        run(tmp_path / "missing.pth", tmp_path / "out", dataset_path=toy / "TestSet")


def test_output_not_writable_and_bad_arguments(toy, checkpoint, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(UserError, match=f"{blocker}"):
        run(checkpoint, blocker / "result", dataset_path=toy / "TestSet")
    with pytest.raises(ValueError, match="multiple of 32"):
        run(checkpoint, tmp_path / "out", "--testsize", "100", dataset_path=toy / "TestSet")
    with pytest.raises(FileNotFoundError, match="--video"):
        run(checkpoint, tmp_path / "out", "--video", str(tmp_path / "nothing.mp4"))
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(UserError, match="pydensecrf2"):
        run(checkpoint, tmp_path / "out", "--crf", dataset_path=toy / "TestSet")


def test_padded_batches_keep_the_official_maps_and_one_shape(toy, checkpoint, tmp_path, monkeypatch):
    """Batch 3 over 4 frames: the last batch is padded, so the network sees one shape only, and
    the maps are still those of one plain forward per frame."""
    shapes = set()
    load = inference.load_predictor

    def recording(*args, **kwargs):
        loaded = load(*args, **kwargs)
        predictor = loaded.predictor

        def forward(image, flow):
            shapes.add((tuple(image.shape), tuple(flow.shape)))
            return predictor(image, flow)
        return replace(loaded, predictor=forward)

    monkeypatch.setattr(inference, "load_predictor", recording)
    summary = run(checkpoint, tmp_path, "--no_fast", "--batchsize", "3", dataset_path=toy / "TestSet")
    assert summary["written"] == 4 and summary["batchsize"] == 3
    assert shapes == {((3, 3, TESTSIZE, TESTSIZE), (3, 3, TESTSIZE, TESTSIZE))}
    for (sequence, frame), prob in direct_probabilities(checkpoint, toy / "TestSet" / "Toy").items():
        np.testing.assert_array_equal(read_png(tmp_path / "Toy" / sequence / f"{frame}.png"),
                                      official_saliency(prob))
    assert {"model", "write"} <= set(summary["stage_seconds"])


def test_video_stream_equals_the_model_on_its_inputs(clip, checkpoint, tmp_path):
    """The streamed masks are the network's maps of the decoded frames and their in-memory flow."""
    summary = run(checkpoint, tmp_path, "--video", str(clip), "--no_fast", "--batchsize", "3")
    samples = video_inputs(clip)
    model = build_fsnet(checkpoint)
    with torch.no_grad():
        pred_s, _ = model(torch.stack([s["image"] for s in samples]), torch.stack([s["flow"] for s in samples]))
    for sample, logits in zip(samples, pred_s):
        up = torch.nn.functional.interpolate(logits[None], size=(96, 128), mode="bilinear", align_corners=True)
        expected = official_saliency(torch.sigmoid(up)[0, 0].numpy())
        np.testing.assert_array_equal(read_png(tmp_path / "Video" / "clip" / f"{sample['frame']}.png"), expected)
    assert {"decode", "flow", "model", "write", "overlay"} <= set(summary["stage_seconds"])
    assert not (tmp_path / "Video-input").exists()  # intermediates only on request


def test_video_keep_intermediate_and_flow_size(clip, checkpoint, tmp_path):
    summary = run(checkpoint, tmp_path, "--video", str(clip), "--keep_intermediate", "--flow_size", "64")
    keep = tmp_path / "Video-input" / "clip"
    names = ["00000", "00001", "00002", "00003"]
    assert sorted(p.stem for p in (keep / "Frame").glob("*.jpg")) == names
    assert sorted(p.stem for p in (keep / "Flow").glob("*.jpg")) == names
    with Image.open(keep / "Flow" / "00000.jpg") as flow:
        assert flow.size == (64, 48)  # computed on frames shrunk to a longer side of 64
    assert summary["written"] == 4
    assert read_png(tmp_path / "Video" / "clip" / "00000.png").shape == (96, 128)  # full size masks
    with pytest.raises(ValueError, match="--flow_size"):
        run(checkpoint, tmp_path / "other", "--video", str(clip), "--flow_size", "-1")


def test_video_resume_keeps_every_frame_in_the_gif(clip, checkpoint, tmp_path):
    run(checkpoint, tmp_path, "--video", str(clip), "--mode", "binary")
    (tmp_path / "Video" / "clip" / "00002.png").unlink()
    again = run(checkpoint, tmp_path, "--video", str(clip), "--mode", "binary", "--skip_existing")
    assert again["written"] == 1 and again["datasets"][0]["skipped_existing"] == 3
    with Image.open(again["overlay_gif"]) as gif:
        assert gif.n_frames == 4


def test_cuda_graphs_on_needs_cuda(toy, checkpoint, tmp_path, capsys):
    code = inference.main(["--model_path", str(checkpoint), "--dataset_path", str(toy / "TestSet"),
                           "--test_save", str(tmp_path / "out"), "--device", "cpu", "--cuda_graphs"])
    assert_user_error(code, capsys.readouterr().err, "--cuda_graphs on needs CUDA", "--device cuda")
    assert not (tmp_path / "out").exists()


def test_graph_replay_in_inference_keeps_the_maps(toy, checkpoint, saliency_run, tmp_path, monkeypatch):
    """With graphs forced on (a CPU stand-in of the capture), a run captures once and writes the
    maps of the eager run; the summary says which ran."""
    assert saliency_run[1]["cuda_graphs"] is False
    capture = RerunCapture()
    monkeypatch.setattr(inference, "resolve_cuda_graphs", lambda *args: True)
    monkeypatch.setattr(cuda_graph, "capture_cuda_graph", capture)
    summary = run(checkpoint, tmp_path, "--no_fast", "--batchsize", "3", dataset_path=toy / "TestSet")
    assert summary["cuda_graphs"] is True and capture.captures == 1 and capture.replays == 2
    for path in (saliency_run[0] / "Toy").rglob("*.png"):
        np.testing.assert_array_equal(read_png(tmp_path / path.relative_to(saliency_run[0])), read_png(path))
