"""bench.bench_video's parts that need no network: the clip writer and the flow comparison."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bench.bench_video import compare_flow, write_clip


def moving_square_clip(path: Path, frames: int = 6, size: tuple[int, int] = (96, 64)) -> Path:
    """An MJPG clip of a bright square moving right on a textured background."""
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (width, height))
    background = np.random.default_rng(0).integers(0, 120, (height, width, 3), dtype=np.uint8)
    for index in range(frames):
        frame = background.copy()
        frame[20:44, 10 + 4 * index:34 + 4 * index] = 250
        writer.write(frame)
    writer.release()
    return path


def test_compare_flow_is_zero_for_full_size_and_positive_for_a_smaller_one(tmp_path):
    clip = moving_square_clip(tmp_path / "clip.avi")
    report = compare_flow(clip, ["1000", "32", "auto"], testsize=16, pairs=3)
    assert report["pairs"] == 3 and set(report["by_flow_size"]) == {"full", "1000", "32", "auto (96)"}
    same, smaller = report["by_flow_size"]["1000"], report["by_flow_size"]["32"]
    assert report["by_flow_size"]["auto (96)"]["epe_on_network_grid"] == 0.0  # 96 px: kept
    assert same["epe_on_network_grid"] == 0.0 and same["flow_image_mad"] == 0.0  # never enlarged
    assert smaller["epe_on_network_grid"] > 0.0 and smaller["flow_image_mad"] > 0.0
    assert report["by_flow_size"]["full"]["dis_ms_per_pair"] > 0.0


def test_write_clip_repeats_the_first_frames(tmp_path):
    source = moving_square_clip(tmp_path / "source.avi")
    assert write_clip(source, tmp_path / "x3.avi", frames=4, repeat=3) == 12
    capture = cv2.VideoCapture(str(tmp_path / "x3.avi"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    capture.release()
