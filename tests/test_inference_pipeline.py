"""The streaming inference pipeline (utils.inference.pipeline / .workers / .video /
overlay.GifStream) with a stand-in network: order of the maps, bounded queues, one batch shape,
streaming of a video, the frame-by-frame GIF and the batch size chosen from the set size. No FSNet
involved."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from utils.cli import UserError
from utils.inference import pipeline
from utils.inference.overlay import GifStream
from utils.inference.pipeline import (DeviceFeeder, ForwardClock, PredictOptions, batches_of,
                                      collate, pad_batch, pinned, run_pipeline)
from utils.inference.workers import OrderedPool, StageClock, prefetch
from utils.inference.predict import auto_batchsize, resolve_workers
from utils.inference import video
from utils.inference.video import VideoOptions, predict_video, shrink

CPU = torch.device("cpu")
SIZE = 32


def fake_network(shapes: list):
    """A stand-in for FSNet: logits = mean of the image channels (so each frame's map differs)."""
    def forward(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(image.shape))
        return image.mean(1, keepdim=True) + 0 * flow[:, :1]
    return forward


def sample(index: int) -> dict:
    image = torch.full((3, SIZE, SIZE), float(index)) + torch.linspace(0, 1, SIZE)
    return {"image": image, "flow": torch.zeros(3, SIZE, SIZE), "sequence": "seq",
            "frame": f"{index:05d}", "frame_path": "", "height": 20, "width": 30}


def test_maps_come_back_in_order_with_one_batch_shape(tmp_path, monkeypatch):
    """Writers finish out of order (later frames faster), yet the sink sees frame order; 7 frames
    in batches of 3 reach the network as three batches of one shape."""
    save = pipeline.save_map

    def slow_early_frames(array, path):
        time.sleep(0.02 * (7 - int(Path(path).stem)))
        save(array, path)

    monkeypatch.setattr(pipeline, "save_map", slow_early_frames)
    shapes, seen = [], []
    options = PredictOptions(batchsize=3, writer_threads=4, show_progress=False, mode="binary")
    stats = run_pipeline(fake_network(shapes), batches_of((sample(i) for i in range(7)), 3), tmp_path,
                         CPU, options, 7, on_mask=lambda s, m: seen.append(s["frame"]))
    assert seen == [f"{i:05d}" for i in range(7)]
    assert stats.written == [str(tmp_path / "seq" / f"{i:05d}.png") for i in range(7)]
    assert stats.frames == 7 and shapes == [(3, 3, SIZE, SIZE)] * 3
    with Image.open(tmp_path / "seq" / "00006.png") as mask:
        assert mask.size == (30, 20)


def test_non_finite_logits_stop_before_any_map(tmp_path):
    def nan_network(image, flow):
        return torch.full((image.shape[0], 1, SIZE, SIZE), float("nan"))
    with pytest.raises(UserError, match="NaN/inf for 2 frame"):
        run_pipeline(nan_network, batches_of((sample(i) for i in range(2)), 2), tmp_path, CPU,
                     PredictOptions(batchsize=2, show_progress=False), 2)
    assert not list(tmp_path.rglob("*.png"))


def test_prefetch_runs_at_most_depth_ahead_and_passes_errors():
    produced, consumed = [], []

    def source():
        for index in range(20):
            produced.append(index)
            yield index

    for item in prefetch(source(), depth=2):
        time.sleep(0.005)
        assert len(produced) - len(consumed) <= 2 + 2  # queue + one waiting to be put + this one
        consumed.append(item)
    assert consumed == list(range(20))

    def failing():
        yield 1
        raise ValueError("broken frame")
    with pytest.raises(ValueError, match="broken frame"):
        list(prefetch(failing(), depth=2))


def test_prefetch_stops_its_thread_when_the_consumer_leaves():
    before = threading.active_count()
    stream = prefetch(iter(range(1000)), depth=2)
    next(stream)
    stream.close()
    assert threading.active_count() == before


def test_ordered_pool_bounds_pending_jobs():
    results, peak = [], []
    with OrderedPool(2, 3, results.append) as pool:
        for index in range(10):
            pool.submit(lambda i: (time.sleep(0.002), i)[1], index)
            peak.append(len(pool.pending))
        pool.drain()
    assert results == list(range(10)) and max(peak) <= 3


def test_batches_pad_and_carry_samples_without_tensors():
    items = [sample(0), {"sequence": "seq", "frame": "00001", "height": 20, "width": 30}, sample(2)]
    batches = list(batches_of(items, 2))
    assert len(batches) == 1 and batches[0]["image"].shape[0] == 2
    assert [s["predicted"] for s in batches[0]["samples"]] == [True, False, True]
    only_done = collate([items[1]])
    assert only_done["image"] is None and only_done["samples"][0]["predicted"] is False
    padded = pad_batch(torch.arange(2.0).reshape(2, 1), 4)
    assert padded.flatten().tolist() == [0.0, 1.0, 1.0, 1.0]


def test_cpu_feeder_and_clock():
    batch = collate([sample(0)])
    assert DeviceFeeder(CPU).send(batch)["image"] is batch["image"]
    assert next(pinned([batch], CPU)) is batch  # pinning only for CUDA
    clock = ForwardClock(CPU)
    with clock.forward():
        time.sleep(0.01)
    assert clock.seconds() >= 0.01


def test_auto_batch_size_follows_the_set_size():
    cuda = torch.device("cuda")
    assert [auto_batchsize(cuda, n) for n in (1, 7, 8, 36, 127, 128, 1376)] == [1, 1, 2, 8, 16, 32, 32]
    assert auto_batchsize(cuda) == 32 and auto_batchsize(CPU, 1376) == 1
    assert resolve_workers("auto", cuda, batches=2) <= 2 and resolve_workers("auto", CPU, 50) == 1


def _clip(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for t in range(frames):
        image = np.zeros((48, 64, 3), np.uint8)
        cv2.circle(image, (10 + 3 * t, 24), 8, (40, 200, 255), -1)
        writer.write(image)
    writer.release()
    return path


def test_video_writes_the_first_mask_before_the_last_flow(tmp_path):
    """The clip is streamed: when the last frame's flow is computed, the first mask is on disk."""
    clip, events = _clip(tmp_path / "clip.avi", 12), []
    first_mask = tmp_path / "out" / "clip" / "00000.png"

    def on_flow(name):
        events.append(("flow", name, first_mask.is_file()))

    options = PredictOptions(batchsize=1, show_progress=False, prefetch=2)
    video_options = VideoOptions(testsize=SIZE, gif_path=tmp_path / "out" / "clip.gif")
    stats = predict_video(fake_network([]), clip, tmp_path / "out", CPU, options, video_options, 12,
                          on_flow=on_flow, on_mask=lambda s, m: events.append(("mask", s["frame"], True)))
    assert len(stats.written) == 12 and [e[1] for e in events if e[0] == "flow"][-1] == "00011"
    assert events[-1 - [e[0] for e in reversed(events)].index("flow")][2]  # mask 0 before flow 11
    masks = [e[1] for e in events if e[0] == "mask"]
    assert masks == [f"{i:05d}" for i in range(12)]
    with Image.open(tmp_path / "out" / "clip.gif") as gif:
        assert gif.n_frames == 12 and gif.size == (64, 48)


def test_gif_stream_is_valid_frame_by_frame(tmp_path):
    path = tmp_path / "a.gif"
    with GifStream(path, duration_ms=50) as gif:
        for value in (0, 120, 240):
            gif.add(np.full((40, 60, 3), value, np.uint8), np.full((40, 60), 255, np.uint8) if value else None)
            assert not path.exists()  # a temporary file until the GIF is complete
    with Image.open(path) as image:
        assert image.n_frames == 3 and image.size == (60, 40) and image.info.get("loop") == 0
        image.seek(1)
        assert image.info["duration"] == 50
        second = np.asarray(image.convert("RGB")).astype(int)
        assert second[..., 0].mean() > second[..., 1].mean() + 50  # tinted red
        image.seek(0)
        assert np.asarray(image.convert("RGB")).max() < 10  # black, untinted
    with pytest.raises(ValueError, match="share one size"):
        with GifStream(tmp_path / "b.gif") as gif:
            gif.add(np.zeros((40, 60, 3), np.uint8), None)
            gif.add(np.zeros((20, 60, 3), np.uint8), None)
    assert not list(tmp_path.glob("*b.gif*"))


def test_shrink_keeps_the_aspect_and_never_enlarges():
    frame = np.zeros((720, 1280, 3), np.uint8)
    assert shrink(frame, 640).shape == (360, 640, 3)
    assert shrink(frame, 0) is frame and shrink(frame, 2000) is frame


def test_auto_flow_size_shrinks_large_clips_by_a_whole_factor():
    """auto: 854x480 (DAVIS) kept, 1280x720 and 1920x1080 halved / thirded to 640x360."""
    def side(width: int, height: int, flow_size="auto") -> tuple:
        return video.flow_input(np.zeros((height, width, 3), np.uint8), VideoOptions(flow_size=flow_size)).shape[:2]
    assert side(854, 480) == (480, 854) and side(320, 240) == (240, 320)
    assert side(1280, 720) == (360, 640) and side(1920, 1080) == (360, 640)
    assert side(1280, 720, 0) == (720, 1280) and side(1280, 720, 854) == (480, 854)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 20000))
def test_auto_flow_side_is_a_whole_division_between_640_and_1280(longer):
    side = video.flow_frame_side(longer, "auto")
    assert side == longer // (longer // side)  # longer divided by a whole factor
    assert min(longer, video.AUTO_FLOW_MIN_SIDE) <= side <= longer and side < 2 * video.AUTO_FLOW_MIN_SIDE


def test_flow_workers_give_the_samples_of_one_worker_in_order(tmp_path):
    clip = _clip(tmp_path / "clip.avi", 9)
    runs = {}
    for workers in (1, 3):
        flows: list = []
        runs[workers] = list(video.video_samples(clip, "clip", VideoOptions(testsize=16),
                                                 lambda name: False, StageClock(), flows.append, workers))
        assert flows == [f"{i:05d}" for i in range(9)]  # on_flow in frame order
    assert [s["frame"] for s in runs[3]] == [s["frame"] for s in runs[1]]
    for one, three in zip(runs[1], runs[3]):
        assert torch.equal(one["image"], three["image"]) and torch.equal(one["flow"], three["flow"])


def test_each_frame_is_shrunk_once_for_its_two_pairs(tmp_path, monkeypatch):
    calls = []
    real = video.flow_input
    monkeypatch.setattr(video, "flow_input", lambda frame, options: calls.append(1) or real(frame, options))
    clip = tmp_path / "frames"
    clip.mkdir()
    for index in range(4):
        Image.fromarray(np.full((24, 32, 3), 40 * index, np.uint8)).save(clip / f"{index:05d}.png")
    samples = list(video.video_samples(clip, "clip", VideoOptions(testsize=16), lambda name: False,
                                       StageClock()))
    assert len(samples) == 4 and all("flow" in sample for sample in samples)
    assert len(calls) == 4  # not 8: each frame once, the last pair reuses both


@pytest.mark.parametrize("mode", ["saliency", "binary"])
def test_maps_made_on_the_device_equal_the_writer_threads_maps(tmp_path, mode):
    """The GPU route (8-bit map made next to the network, writers only encode) gives the maps of
    the CPU route (writers finish the map)."""
    maps = {}
    for on_device in (False, True):
        options = PredictOptions(batchsize=2, mode=mode, show_progress=False, maps_on_device=on_device)
        out = tmp_path / str(on_device)
        run_pipeline(fake_network([]), batches_of((sample(i) for i in range(3)), 2), out, CPU, options, 3)
        maps[on_device] = [np.asarray(Image.open(out / "seq" / f"{i:05d}.png")) for i in range(3)]
    for cpu_map, device_map in zip(maps[False], maps[True]):
        np.testing.assert_array_equal(cpu_map, device_map)


def test_a_one_frame_clip_is_refused(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(folder / "00000.jpg")
    options = PredictOptions(batchsize=1, show_progress=False)
    with pytest.raises(ValueError, match="single frame"):
        predict_video(fake_network([]), folder, tmp_path / "out", CPU, options,
                      VideoOptions(testsize=SIZE, gif_path=tmp_path / "out" / "one.gif"), 1)
    assert not list((tmp_path / "out").rglob("*.gif*"))
