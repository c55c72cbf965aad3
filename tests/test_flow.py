"""Flow tool: colour coding, flow methods, flip decoding, planning, resume, raw output, RAFT."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.utils import flow_to_image

from utils.flow.__main__ import main
from utils.flow.generate import compute_flow, generate_flow, read_flo
from utils.flow.color import flow_from_color, flow_to_color, mirror_flow_color
from utils.io import save_image
from utils.data.images import is_complete_image, read_rgb

H, W = 64, 80


def _texture(seed: int = 0, height: int = H + 20, width: int = W + 20) -> np.ndarray:
    noise = np.random.default_rng(seed).random((height, width, 3)).astype(np.float32)
    return (cv2.GaussianBlur(noise, (0, 0), 2) * 255 * 3 - 255).clip(0, 255).astype(np.uint8)


def _shifted(dx: int, dy: int, base: np.ndarray = None) -> np.ndarray:
    """Crop of the texture seen by a camera moved by (-dx, -dy): the content moves by (dx, dy)."""
    base = _texture() if base is None else base
    return np.ascontiguousarray(base[10 - dy:10 - dy + H, 10 - dx:10 - dx + W])


def _frames(folder: Path, count: int = 4, step=(2, 0)) -> Path:
    for t in range(count):
        save_image(_shifted(step[0] * t, step[1] * t), folder / f"{t:05d}.jpg")
    return folder


# ---------------------------------------------------------------- colour coding

def test_colour_coding_of_constant_flows():
    def colour(u, v):
        image = flow_to_color(np.full((4, 5, 2), [u, v], np.float32))
        assert (image == image[0, 0]).all()
        return image[0, 0].astype(int)

    assert (colour(0, 0) == 255).all()                     # no motion: white
    down, left = colour(0, 3), colour(-3, 0)
    assert down[0] == 255 and down[2] == 0 and 200 < down[1] < 245   # Middlebury: down is yellow-orange
    assert left[0] == 0 and left[2] == 255                  # left is cyan-blue
    assert (colour(0, 3) == colour(0, 0.1)).all()           # per-frame normalisation by largest motion
    flow = np.random.default_rng(0).normal(size=(6, 7, 2)).astype(np.float32)
    expected = flow_to_image(torch.from_numpy(flow).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(flow_to_color(flow), expected)


def test_colour_decoding_and_mirror():
    flow = np.random.default_rng(1).normal(size=(32, 40, 2)).astype(np.float32)
    normalised = flow / np.linalg.norm(flow, axis=2).max()
    decoded = flow_from_color(flow_to_color(flow))
    assert np.abs(decoded - normalised).max() < 0.05
    mirrored = mirror_flow_color(flow_to_color(flow))
    expected = normalised[:, ::-1] * np.float32([-1, 1])
    assert np.abs(flow_from_color(mirrored) - expected).max() < 0.08
    constant = flow_to_color(np.full((8, 8, 2), [2.0, 1.0], np.float32))
    u, v = flow_from_color(mirror_flow_color(constant)).reshape(-1, 2).mean(0)
    assert u < -0.8 and abs(v - 0.45) < 0.05


# ---------------------------------------------------------------- methods

@pytest.mark.parametrize("method", ["dis", "farneback"])
@pytest.mark.parametrize("dx,dy", [(3, 0), (0, -2)])
def test_flow_recovers_shift(method, dx, dy):
    flow = compute_flow(_shifted(0, 0), _shifted(dx, dy), method)
    assert flow.shape == (H, W, 2) and flow.dtype == np.float32
    inner = flow[8:-8, 8:-8].reshape(-1, 2)
    np.testing.assert_allclose(np.median(inner, axis=0), [dx, dy], atol=0.5)


def test_raft_needs_local_weights_then_runs(tmp_path):
    frames = _frames(tmp_path / "seq" / "Frame", count=3)
    weights = tmp_path / "raft_small.pth"
    with pytest.raises(FileNotFoundError, match="raft_small.pth.*--raft_weights"):
        generate_flow(frames, method="raft", raft_weights=str(weights), raft_model="raft_small", progress=False)
    from torchvision.models.optical_flow import raft_small
    torch.manual_seed(0)
    torch.save(raft_small(weights=None).state_dict(), weights)
    summary = generate_flow(frames, method="raft", raft_weights=str(weights), raft_model="raft_small",
                            progress=False)
    assert summary["written"] == 2
    assert read_rgb(tmp_path / "seq" / "OF_FlowNet2" / "00001.jpg").size == (W, H)


# ---------------------------------------------------------------- the tool

def test_folder_last_frame_policies_and_raw(tmp_path):
    frames = _frames(tmp_path / "seq" / "Frame")
    skip = generate_flow(frames, progress=False, save_raw="npy")
    out = tmp_path / "seq" / "OF_FlowNet2"
    assert sorted(p.name for p in out.glob("*.jpg")) == ["00000.jpg", "00001.jpg", "00002.jpg"]
    assert skip["no_flow"] == [str(frames / "00003.jpg")]
    raw = np.load(tmp_path / "seq" / "OF_FlowNet2_raw" / "00001.npy")
    assert raw.shape == (H, W, 2) and abs(np.median(raw[..., 0]) - 2) < 0.5
    back = generate_flow(frames, tmp_path / "back", last_frame="backward", save_raw="flo", progress=False)
    assert back["written"] == 4 and back["no_flow"] == []
    last = read_flo(tmp_path / "back_raw" / "00003.flo")
    assert abs(np.median(last[..., 0]) + 2) < 0.5          # last -> previous: motion reversed


def test_skip_existing_resumes(tmp_path):
    frames = _frames(tmp_path / "Frame")
    generate_flow(frames, progress=False)
    out = tmp_path / "OF_FlowNet2"
    kept, truncated = out / "00000.jpg", out / "00002.jpg"
    kept.touch()  # untouched from here on: its mtime stays
    mtime = kept.stat().st_mtime_ns
    (out / "00001.jpg").unlink()
    truncated.write_bytes(truncated.read_bytes()[:200])  # as a copy cut short leaves it
    summary = generate_flow(frames, skip_existing=True, progress=False)
    assert (summary["written"], summary["skipped_existing"]) == (2, 1)
    assert kept.stat().st_mtime_ns == mtime and (out / "00001.jpg").is_file()
    assert is_complete_image(truncated)
    assert generate_flow(frames, progress=False)["written"] == 3
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporaries


def test_trees_workers_and_cli(tmp_path):
    test_root = tmp_path / "TestSet" / "Set"
    for seq in ("s1", "s2"):
        _frames(test_root / seq / "Frame", count=3)
    video = tmp_path / "TrainSet_Video"
    for seq in ("cat_a", "dog"):
        for t in range(3):
            save_image(_shifted(t, 0), video / "Imgs" / f"{seq}_{t:05d}.jpg")
            save_image(np.zeros((H, W), np.uint8), video / "ground-truth" / f"{seq}_{t:05d}.png")
    summary = generate_flow(tmp_path, workers=2, progress=False)
    assert summary["sequences"] == 4 and summary["written"] == 8
    assert sorted(p.name for p in (video / "Flow").glob("*.jpg")) == [
        "cat_a_00000.jpg", "cat_a_00001.jpg", "dog_00000.jpg", "dog_00001.jpg"]
    parallel = (test_root / "s1" / "OF_FlowNet2" / "00000.jpg").read_bytes()
    assert main(["--frames", str(test_root), "--flow_folder", "OF_DIS"]) == 0
    assert (test_root / "s1" / "OF_DIS" / "00000.jpg").read_bytes() == parallel  # workers change nothing


def test_video_input(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    for t in range(4):
        writer.write(cv2.cvtColor(_shifted(2 * t, 0), cv2.COLOR_RGB2BGR))
    writer.release()
    summary = generate_flow(path, progress=False)
    assert summary["written"] == 3
    assert len(list((tmp_path / "clip" / "Frame").glob("*.jpg"))) == 4
    assert len(list((tmp_path / "clip" / "OF_FlowNet2").glob("*.jpg"))) == 3
    # --skip_existing reuses a finished extraction, and redoes one whose completion record is gone
    first = tmp_path / "clip" / "Frame" / "00000.jpg"
    stamp = first.stat().st_mtime_ns
    assert generate_flow(path, progress=False, skip_existing=True)["written"] == 0
    assert first.stat().st_mtime_ns == stamp
    (tmp_path / "clip" / "Frame" / ".fsnet-frames.json").unlink()
    generate_flow(path, progress=False, skip_existing=True)
    assert first.stat().st_mtime_ns != stamp and (tmp_path / "clip" / "Frame" / ".fsnet-frames.json").is_file()


def test_bad_inputs_are_named(tmp_path):
    frames = _frames(tmp_path / "Frame", count=2)
    save_image(np.zeros((H + 2, W, 3), np.uint8), frames / "00001.jpg")
    with pytest.raises(ValueError, match="00001.jpg"):
        generate_flow(frames, progress=False)
    (frames / "00001.jpg").write_bytes(b"broken")
    with pytest.raises(ValueError, match="Cannot read image.*00001.jpg"):
        generate_flow(frames, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No frames found"):
        generate_flow(tmp_path / "empty", progress=False)


def test_flow_keeps_the_frame_geometry_the_loaders_read(tmp_path):
    """A JPEG with an EXIF rotation tag: flow must have the size utils.data.images reads (no rotation)."""
    frames = tmp_path / "Frame"
    frames.mkdir()
    for t in range(2):
        image = Image.fromarray(_shifted(2 * t, 0))
        exif = image.getexif()
        exif[0x0112] = 6  # "rotate 90 degrees" tag, which cv2.imread would apply by default
        image.save(frames / f"{t:05d}.jpg", exif=exif)
    generate_flow(frames, progress=False)
    assert read_rgb(tmp_path / "OF_FlowNet2" / "00000.jpg").size == read_rgb(frames / "00000.jpg").size == (W, H)


def _in_a_new_thread(function):
    """``function()`` run on a thread of its own (its own DIS instances)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function).result()


def test_dis_result_does_not_depend_on_earlier_frame_sizes():
    def history() -> tuple:
        fresh = compute_flow(_shifted(0, 0), _shifted(2, 0))
        small = _texture(3, 24, 32)
        compute_flow(small, np.roll(small, 1, axis=1))  # DIS adapts (and keeps) its scale to small frames
        return fresh, compute_flow(_shifted(0, 0), _shifted(2, 0))
    fresh, after = _in_a_new_thread(history)
    np.testing.assert_array_equal(after, fresh)


def test_dis_in_threads_at_once_equals_one_thread():
    """Each thread has its own DIS instances: concurrent flows equal the sequential ones."""
    pairs = [(_shifted(0, 0), _shifted(dx, dy)) for dx, dy in ((2, 0), (0, 3), (1, 1), (3, 2))] * 3
    sequential = _in_a_new_thread(lambda: [compute_flow(a, b) for a, b in pairs])
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(lambda pair: compute_flow(*pair), pairs))
    for one, other in zip(sequential, concurrent):
        np.testing.assert_array_equal(one, other)
