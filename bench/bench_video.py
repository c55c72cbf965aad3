"""Benchmark ``inference.py --video``: each stage's share, the whole against model-only, peak memory.

    python -m bench.bench_video [--video ../shared/real/videos/dog.mp4] [--frames N] [--repeat R]
        [--backbone resnet50] [--testsize 352] [--flow_size auto|S] [--model_path CKPT]
        [--compare_flow_size 0 854] [--json report.json]

The clip (``--frames N``: its first N frames; ``--repeat R``: additionally the same frames played R
times over, re-encoded as MJPG) runs through ``inference.predict`` with ``--video`` and the
default backend, batch size and flow size (unless ``--flow_size``) in a child process of its own,
so its peak resident memory (``os.wait4``) is its own. The checkpoint holds random weights unless
``--model_path`` is given.

Reported per clip: the pipeline's wall time (first decode to last map and GIF frame on disk), the
busy seconds of each stage (decode, flow = DIS + colour coding, resize = input tensors, model,
write = 8-bit map + PNG, overlay = GIF frame) and their share of the wall time (the stages
overlap, so shares add up to more than 100% when they run side by side), the whole child process
(start-up, checkpoint load, ONNX export), and, in the same child before and after the video,
**model-only**: the same number of forwards of the same predictor at the same batch size on
inputs of the same shape, nothing else running (the mean of the two is reported).
``whole / model-only`` is the pipeline's wall time over that.
With ``--repeat``, the peak RSS of the R-times clip over the 1-time clip says whether memory is
bounded. ``--compare_flow_size S [S ...]`` (0 = full size) runs the 1-time clip again with each
``--flow_size S`` and reports its stages, its own model-only time and, against the 1-time run,
the saliency maps' mean absolute difference and the IoU of the masks thresholded at 128 (use a
trained ``--model_path`` for that); and, without any network, ``flow_quality``: on 12 frame
pairs, the 1-time run's and each compared size's flow against the full-size flow as the network
reads it (end-point error on the ``--testsize`` grid, mean |difference| of the flow images), and
DIS milliseconds per pair.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from bench.child import REPO, run_child

CLIP = REPO.parent / "shared" / "real" / "videos" / "dog.mp4"


def get_args_parser() -> argparse.ArgumentParser:
    """Options of the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=str(CLIP), help="the clip (default: dog.mp4)")
    parser.add_argument("--frames", type=int, default=0, help="use the first N frames only (0 = all)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="also run the clip played this many times over (peak memory)")
    parser.add_argument("--backbone", default="resnet50", choices=("res2net50", "resnet50"))
    parser.add_argument("--model_path", default=None, help="a checkpoint (default: random weights)")
    parser.add_argument("--testsize", type=int, default=352)
    parser.add_argument("--flow_size", default=None,
                        help="inference --flow_size: auto or pixels (default: inference's)")
    parser.add_argument("--compare_flow_size", nargs="+", default=[],
                        help="also run with each of these --flow_size values and compare the maps")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="further inference.py flags (e.g. --backend plain)")
    parser.add_argument("--json", default=None, help="also write the report here")
    return parser


def write_clip(source: Path, out: Path, frames: int, repeat: int) -> int:
    """``out``: the first ``frames`` frames of ``source`` (0 = all) played ``repeat`` times, MJPG."""
    capture = cv2.VideoCapture(str(source))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    images = []
    while not frames or len(images) < frames:
        ok, image = capture.read()
        if not ok:
            break
        images.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1])
    capture.release()
    height, width = cv2.imdecode(images[0], cv2.IMREAD_COLOR).shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    for _ in range(repeat):
        for data in images:
            writer.write(cv2.imdecode(data, cv2.IMREAD_COLOR))
    writer.release()
    return len(images) * repeat


def run_clip(argv: list[str]) -> dict:
    """One inference run in a child process: its report, process wall time and peak RSS."""
    report, seconds, peak = run_child("bench.bench_video", argv)
    return {**report, "process_seconds": seconds, "peak_rss_mb": peak}


def model_only_seconds(predictor, batches: int, batchsize: int, testsize: int,
                       threads: Optional[int]) -> float:
    """Seconds of ``batches`` forwards of ``predictor`` at ``batchsize`` on random inputs (CPU)."""
    import torch
    from utils.device import torch_threads
    image, flow = (torch.randn(batchsize, 3, testsize, testsize) for _ in range(2))
    with torch_threads(threads), torch.inference_mode():
        predictor(image, flow)  # warm-up, as the pipeline's first batch is part of its run
        start = time.perf_counter()
        for _ in range(batches):
            predictor(image, flow)
        return time.perf_counter() - start


def _child(argv: list[str]) -> None:
    """Load the predictor, time model-only forwards, run the video through ``inference.predict``
    with that predictor, time model-only forwards again (the mean of both is reported: the load
    of a shared machine drifts)."""
    import math
    import torch
    import inference
    from utils.inference.predict import resolve_backend, resolve_batchsize
    from utils.inference.video import count_frames
    model_only = argv[0] == "model_only"
    config = inference.config_from_args(inference.get_args_parser().parse_args(argv[1:]))
    device = torch.device("cpu")
    backend = resolve_backend(config.backend, device, config.amp)
    frames = count_frames(Path(config.video))
    batchsize = resolve_batchsize(config.batchsize, device, frames)
    loaded = inference.load_predictor(config.model_path, device, config.backbone, backend, config.testsize,
                                      cache=not config.no_cache, amp=config.amp)
    inference.load_predictor = lambda *args, **kwargs: loaded

    def forwards() -> float:
        return model_only_seconds(loaded.predictor, math.ceil(frames / batchsize), batchsize, config.testsize,
                                  1 if backend == "onnx" else None)

    before = forwards() if model_only else None
    result = inference.predict(config).summary()
    report = {key: result[key] for key in ("backend", "batchsize", "written", "stage_seconds",
                                           "model_fps", "end_to_end_fps")}
    report["pipeline_seconds"] = round(result["datasets"][0]["frames_predicted"] / result["end_to_end_fps"], 2)
    if model_only:
        after = forwards()
        report["model_only_seconds_before_after"] = [round(before, 2), round(after, 2)]
        report["model_only_seconds"] = round((before + after) / 2, 2)
    print(json.dumps(report))


def shares(report: dict) -> dict:
    """Each stage's busy seconds as a share of the pipeline's wall time."""
    wall = report["pipeline_seconds"]
    return {stage: round(seconds / wall, 3) for stage, seconds in report["stage_seconds"].items()}


def compare_maps(reference: Path, other: Path) -> dict:
    """Mean |a - b| of the saliency maps (0..1) and IoU of the masks thresholded at 128."""
    maes, inter, union = [], 0, 0
    for path in sorted(reference.glob("*.png")):
        a = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32)
        b = cv2.imread(str(other / path.name), cv2.IMREAD_GRAYSCALE).astype(np.float32)
        maes.append(float(np.abs(a - b).mean()) / 255.0)
        inter += int(((a >= 128) & (b >= 128)).sum())
        union += int(((a >= 128) | (b >= 128)).sum())
    return {"frames": len(maes), "saliency_mae": round(float(np.mean(maes)), 4),
            "mask_iou": round(inter / union, 4) if union else 1.0}


def _network_grid(flow: np.ndarray, testsize: int) -> np.ndarray:
    """``flow`` (H, W, 2) resized to the network's ``testsize`` square, vectors in its pixels."""
    height, width = flow.shape[:2]
    grid = cv2.resize(flow, (testsize, testsize), interpolation=cv2.INTER_AREA)
    return grid * np.array([testsize / width, testsize / height], dtype=np.float32)


def compare_flow(video: Path, sizes: list[str], testsize: int, pairs: int = 12) -> dict:
    """Per ``--flow_size`` S, on ``pairs`` evenly spaced frame pairs of ``video``, against the
    full-size DIS flow: the end-point error on the network's ``testsize`` grid (pixels of that
    grid, beside the full-size flow's mean magnitude there), the mean |difference| of the flow
    images the network reads (0..1), and DIS milliseconds per pair on one thread."""
    from utils.flow.color import flow_to_color
    from utils.flow.generate import compute_flow
    from utils.inference.video import flow_frame_side, read_frames, shrink
    frames = [frame for _, frame in read_frames(video)]
    longer = max(frames[0].shape[:2])
    sides = {size: flow_frame_side(longer, size if size == "auto" else int(size)) for size in sizes}
    starts = np.linspace(0, len(frames) - 2, num=min(pairs, len(frames) - 1)).round().astype(int)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        results: dict = {}
        references: list = []  # the full-size flow of each pair: (network grid, flow image)
        for size in ["0", *(size for size in sizes if size != "0")]:
            epe, magnitude, image_mad, seconds = [], [], [], 0.0
            for index, start in enumerate(starts):
                side = sides.get(size, longer)
                a, b = shrink(frames[start], side), shrink(frames[start + 1], side)
                tic = time.perf_counter()
                flow = compute_flow(a, b, "dis")
                seconds += time.perf_counter() - tic
                grid = _network_grid(flow, testsize)
                image = cv2.resize(flow_to_color(flow), (testsize, testsize),
                                   interpolation=cv2.INTER_AREA).astype(np.float32)
                if size == "0":
                    references.append((grid, image))
                    continue
                reference_grid, reference_image = references[index]
                epe.append(float(np.linalg.norm(grid - reference_grid, axis=2).mean()))
                magnitude.append(float(np.linalg.norm(reference_grid, axis=2).mean()))
                image_mad.append(float(np.abs(image - reference_image).mean()) / 255.0)
            entry = {"dis_ms_per_pair": round(1000 * seconds / len(starts), 1)}
            if size != "0":
                entry.update({"epe_on_network_grid": round(float(np.mean(epe)), 3),
                              "full_flow_magnitude_on_network_grid": round(float(np.mean(magnitude)), 3),
                              "flow_image_mad": round(float(np.mean(image_mad)), 4)})
            results["full" if size == "0" else f"{size} ({side})" if size == "auto" else size] = entry
        return {"pairs": len(starts), "testsize": testsize, "by_flow_size": results}
    finally:
        cv2.setNumThreads(threads)


def main(argv: Optional[list[str]] = None) -> dict:
    """Run the clip (and its repeats / the flow-size comparison); print and return the report."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_child"]:
        _child(argv[1:])
        return {}
    args = get_args_parser().parse_args(argv)
    import torch
    report: dict = {"video": args.video, "date": time.strftime("%Y-%m-%d %H:%M"),
                    "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average": os.getloadavg()[0], "runs": {}}
    with tempfile.TemporaryDirectory(prefix="bench_video_") as tmp:
        work = Path(tmp)
        checkpoint = args.model_path
        if checkpoint is None:
            from lib.fsnet import FSNet
            from tests.random_weights import randomize_weights
            from utils.torch_files import save_checkpoint
            checkpoint = str(work / "fsnet.pth")
            save_checkpoint(randomize_weights(FSNet(args.backbone)).state_dict(), checkpoint)
        common = ["--model_path", checkpoint, "--testsize", str(args.testsize), "--device", "cpu",
                  "--mode", "saliency", "--no_progress", *args.extra]
        clips = {"x1": 1} | ({f"x{args.repeat}": args.repeat} if args.repeat > 1 else {})
        for name, repeat in clips.items():
            clip = work / f"clip_{name}.avi"
            frames = write_clip(Path(args.video), clip, args.frames, repeat)
            run = run_clip(["model_only" if repeat == 1 else "-", *common, "--video", str(clip),
                             "--test_save", str(work / name),
                             *([] if args.flow_size is None else ["--flow_size", str(args.flow_size)])])
            run["frames"], run["shares"] = frames, shares(run)
            if "model_only_seconds" in run:
                run["whole_over_model_only"] = round(run["pipeline_seconds"] / run["model_only_seconds"], 2)
            report["runs"][name] = run
            print(f"{name}: {json.dumps(run)}", flush=True)
        if args.repeat > 1:
            report["peak_rss_ratio"] = round(report["runs"][f"x{args.repeat}"]["peak_rss_mb"]
                                             / report["runs"]["x1"]["peak_rss_mb"], 3)
        for size in args.compare_flow_size:
            clip, name = work / "clip_x1.avi", f"flow_size_{size}"
            run = run_clip(["model_only", *common, "--video", str(clip), "--test_save",
                            str(work / name), "--flow_size", str(size)])
            run["shares"] = shares(run)
            run["whole_over_model_only"] = round(run["pipeline_seconds"] / run["model_only_seconds"], 2)
            run["against_x1"] = compare_maps(work / "x1" / "Video" / "clip_x1",
                                             work / name / "Video" / "clip_x1")
            report["runs"][name] = run
            print(f"{name}: {json.dumps(run)}", flush=True)
    if args.compare_flow_size:
        default = "auto" if args.flow_size is None else args.flow_size
        sizes = list(dict.fromkeys([default, *args.compare_flow_size]))
        report["flow_quality"] = compare_flow(Path(args.video), sizes, args.testsize)
        print(f"flow_quality: {json.dumps(report['flow_quality'])}", flush=True)
    print("\n" + json.dumps(report, indent=2))
    if args.json:
        from utils.io import save_json
        save_json(report, args.json)
    return report


if __name__ == "__main__":
    main()
