"""Benchmark inference.py end to end: default settings (cold and warm start) vs the plain forward.

    python -m bench.bench_inference [--sequence car-shadow] [--backbone resnet50] [--testsize 352]
        [--workers 1] [--repeats 1] [--configs plain default-cold default-warm] [--json report.json]
        [--backend auto] [--batchsize auto] [--amp [off|bf16|fp16]]  (the default configuration)
        [--toy] [--toy_frames 1376 --toy_size 854x480]   (a toy set big enough for throughput)

Real frames when ``../shared/real/DAVIS2016-sample`` (relative to the repository root) is present:
the sequence's 854x480 JPEGs are linked into a temporary test set and their DIS flow is made with
``utils.flow.generate`` (last frame by backward flow, so every frame is predicted). Otherwise
the toy test set (``utils.data.synthetic``): 4 sequences of 10 frames at 128x96, or with
``--toy_frames N`` about N frames of ``--toy_size``: 4 sequences of N/4 frames (at most 43) are
rendered (with their DIS flow) and hard-linked as further sequences until N frames are listed (a
1,376-frame set at 854x480, the size of DAVIS-2016 val, takes seconds instead of minutes; the
last frame of each sequence has no flow, so 42 of every 43 frames are predicted). The checkpoint holds random
weights (``tests.random_weights.randomize_weights``).

Each configuration runs ``inference.predict`` in its own child process (so its peak resident
memory, read with ``os.wait4``, is its own), in the order ``plain, default, default-warm``,
``--repeats`` times; the best run of each is reported. ``plain`` = ``--backend plain --batchsize 1``
(the official one-frame-at-a-time forward); ``default`` (alias ``default-cold``) =
``--backend``/``--batchsize``/``--amp`` of this script (``auto``/``auto``/``off`` unless given,
i.e. inference's defaults) with an empty export cache (the ONNX export happens and fills the
cache); ``default-warm`` = the same again, reading the export from the cache
(:mod:`utils.export_cache`). Every repeat starts from an empty cache of its own
(``FSNET_CACHE_DIR``), never the user's. Reported per configuration: model-only and end-to-end frames/s (inference's
own summary: from the first batch request to the last PNG on disk), the whole child's wall time
(start-up, checkpoint load, ONNX export or trace included), whether the export cache was hit,
and its peak RSS; ratios are default / plain and default-warm / plain from this run, beside the fp32 GEMM rate measured
in the same run (:mod:`bench.gemm`).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.child import run_child
from bench.gemm import gemm_gflops
from utils.export_cache import DIR_ENV
from utils.io import save_json

REPO = Path(__file__).resolve().parents[1]
REAL_DAVIS = REPO.parent / "shared" / "real" / "DAVIS2016-sample" / "JPEGImages" / "480p"
CONFIGS = {"plain": ["--backend", "plain", "--batchsize", "1"], "default": [], "default-warm": []}
ALIASES = {"default-cold": "default"}
TOY_SEQUENCE_FRAMES = 43  # 32 sequences of 43 frames: 1,376, the frame count of DAVIS-2016 val


def get_args_parser() -> argparse.ArgumentParser:
    """Options of the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequence", default="car-shadow", help="real DAVIS-2016 sequence")
    parser.add_argument("--backbone", default="resnet50", choices=("res2net50", "resnet50"))
    parser.add_argument("--testsize", type=int, default=352)
    parser.add_argument("--workers", default="1")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mode", choices=("saliency", "binary"), default="saliency")
    parser.add_argument("--backend", default="auto", help="default configuration: --backend")
    parser.add_argument("--batchsize", default="auto", help="default configuration: --batchsize")
    parser.add_argument("--amp", nargs="?", const="bf16", default="off",
                        help="default configuration: --amp (bare --amp = bf16)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each configuration")
    parser.add_argument("--configs", nargs="+", default=None, choices=[*CONFIGS, *ALIASES],
                        help="configurations, run in this order (default: all three on the CPU; "
                             "plain and default elsewhere, where no export is cached)")
    parser.add_argument("--toy", action="store_true", help="toy frames even if real ones exist")
    parser.add_argument("--toy_frames", type=int, default=0,
                        help="toy set of about this many frames (implies --toy; see above)")
    parser.add_argument("--toy_size", default="854x480", help="--toy_frames: WIDTHxHEIGHT")
    parser.add_argument("--json", default=None, help="also write the results here")
    return parser


def make_large_toy(root: Path, frames: int, size: str) -> tuple[Path, str]:
    """About ``frames`` toy frames of ``size`` (WxH): 4 rendered sequences of at most
    :data:`TOY_SEQUENCE_FRAMES`, hard-linked as further sequences (see the module docstring)."""
    from utils.data.synthetic import ToyConfig, make_toy_dataset
    width, height = (int(v) for v in size.lower().split("x"))
    length = min(TOY_SEQUENCE_FRAMES, max(2, -(-frames // 4)))
    config = ToyConfig(width=width, height=height, train_sequences=1, train_frames=2,
                       test_sequences=4, test_frames=length, static_images=0)
    workers = min(8, os.cpu_count() or 1) if frames > 4 * TOY_SEQUENCE_FRAMES else 1
    testset = make_toy_dataset(root / "Toy", config=config, workers=workers) / "TestSet"
    rendered = sorted((testset / "Toy").iterdir())
    copies = max(1, -(-frames // (len(rendered) * length)))
    for copy in range(1, copies):
        for seq in rendered:
            for folder in ("Frame", "OF_FlowNet2"):
                target = testset / "Toy" / f"copy{copy:02d}_{seq.name}" / folder
                target.mkdir(parents=True)
                for path in (seq / folder).iterdir():
                    os.link(path, target / path.name)
    total = copies * len(rendered) * length
    return testset, f"toy frames ({total} at {width}x{height}, {copies * len(rendered)} sequences)"


def make_testset(root: Path, sequence: str, toy: bool, toy_frames: int = 0,
                 toy_size: str = "854x480") -> tuple[Path, str]:
    """A test set under ``root`` (real frames when present) and a description of it."""
    from utils.flow.generate import generate_flow
    if toy_frames:
        return make_large_toy(root, toy_frames, toy_size)
    source = REAL_DAVIS / sequence
    if toy or not source.is_dir():
        from utils.data.synthetic import ToyConfig, make_toy_dataset
        config = ToyConfig(train_sequences=1, train_frames=2, test_sequences=4, test_frames=10,
                           static_images=1)
        return make_toy_dataset(root / "Toy", config=config, workers=1) / "TestSet", "toy frames"
    seq = root / "TestSet" / "DAVIS" / sequence
    seq.mkdir(parents=True)
    (seq / "Frame").symlink_to(source, target_is_directory=True)
    generate_flow(seq / "Frame", seq / "OF_FlowNet2", method="dis", last_frame="backward",
                  progress=False)
    return root / "TestSet", f"real DAVIS-2016 {sequence} ({len(list(source.glob('*.jpg')))} frames)"


def run_config(argv: list[str], cache_dir: Path) -> dict:
    """Run one configuration in a child process (export cache in ``cache_dir``); return its
    summary, wall time and peak RSS."""
    summary, seconds, peak = run_child("bench.bench_inference", argv, {DIR_ENV: str(cache_dir)})
    return {"backend": summary["backend"], "batchsize": summary["batchsize"],
            "frames": summary["written"], "model_fps": summary["model_fps"],
            "end_to_end_fps": summary["end_to_end_fps"], "cache": summary.get("cache"),
            "cuda_graphs": summary.get("cuda_graphs"),
            "process_seconds": seconds, "peak_rss_mb": peak}


def _child(argv: list[str]) -> None:
    import inference
    args = inference.get_args_parser().parse_args(argv)
    result = inference.predict(inference.config_from_args(args))
    print(json.dumps(result.summary()))


def _write_checkpoint(path: Path, backbone: str) -> None:
    from lib.fsnet import FSNet
    from tests.random_weights import randomize_weights
    from utils.torch_files import save_checkpoint
    save_checkpoint(randomize_weights(FSNet(backbone)).state_dict(), path)


def main(argv: list[str] | None = None) -> dict:
    """Run the configurations alternately on one test set; print (and return) the report."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_child"]:
        _child(argv[1:])
        return {}
    if argv[:1] == ["--_checkpoint"]:
        _write_checkpoint(Path(argv[1]), argv[2])
        return {}
    args = get_args_parser().parse_args(argv)
    names = args.configs or (list(CONFIGS) if args.device == "cpu" else ["plain", "default"])
    configs = list(dict.fromkeys(ALIASES.get(name, name) for name in names))
    gemm = round(gemm_gflops())
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        tmp_path = Path(tmp)
        testset, frames = make_testset(tmp_path, args.sequence, args.toy, args.toy_frames,
                                       args.toy_size)
        checkpoint = tmp_path / "fsnet.pth"
        # In a child process: a child's peak RSS starts from its parent's size at the fork.
        subprocess.run([sys.executable, "-m", "bench.bench_inference", "--_checkpoint",
                        str(checkpoint), args.backbone], cwd=REPO, check=True)
        common = ["--model_path", str(checkpoint), "--dataset_path", str(testset),
                  "--testsize", str(args.testsize), "--device", args.device, "--workers",
                  args.workers, "--mode", args.mode, "--no_progress"]
        runs: dict[str, list[dict]] = {name: [] for name in configs}
        for repeat in range(args.repeats):
            for name in configs:
                out = tmp_path / f"{name}{repeat}"
                config = CONFIGS[name] or ["--backend", args.backend, "--batchsize",
                                           args.batchsize, "--amp", args.amp]
                runs[name].append(run_config(common + config + ["--test_save", str(out)],
                                             tmp_path / f"export-cache{repeat}"))
                print(f"{name}: {runs[name][-1]}", flush=True)
    best = {name: max(values, key=lambda r: r["end_to_end_fps"]) for name, values in runs.items()}
    report = {"frames": frames, "backbone": args.backbone, "testsize": args.testsize,
              "workers": args.workers, "cpu_cores": os.cpu_count(),
              "torch_threads": torch.get_num_threads(), "fp32_gemm_gflops": gemm,
              "date": time.strftime("%Y-%m-%d"), "runs": runs, "best": best}
    for name in (n for n in configs if n != "plain" and "plain" in best):
        prefix = name.replace("-", "_")
        for key in ("model_fps", "end_to_end_fps"):
            report[f"{prefix}_over_plain_{key}"] = round(best[name][key] / best["plain"][key], 2)
        report[f"{prefix}_over_plain_process_time"] = round(
            best["plain"]["process_seconds"] / best[name]["process_seconds"], 2)
    print("\n" + json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
    if args.json:
        save_json(report, args.json)
    return report


if __name__ == "__main__":
    main()
