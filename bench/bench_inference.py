"""Benchmark inference.py: frames/s model-only and end-to-end, plain forward vs fast path.

    python -m bench.bench_inference [--device cpu|cuda] [--testsize 352] [--batchsize N]
        [--test_sequences 4 --test_frames 10] [--repeats 2]

Generates the toy test set (``utils.data.toy``) and a random FSNet checkpoint in a temporary folder,
then runs ``inference.main`` with ``--no_fast`` (plain FSNet forward, official path) and with the
fast path (``lib.fast``: BatchNorm folded, channels_last, ``pred_s`` only) in the same process,
``--repeats`` times each; the last repeat of each is reported (earlier ones warm up cuDNN,
the allocator and the page cache). Model-only = forward passes alone, synchronised on CUDA;
end-to-end = from the first batch request to the last PNG on disk. On CUDA the defaults are
batch 32 and bf16 autocast (``--amp``). Ratios are fast / plain from this run.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

import inference  # noqa: E402
from lib.fsnet import FSNet  # noqa: E402
from lib.verify import randomize_weights  # noqa: E402
from utils.checkpoint import save_checkpoint  # noqa: E402
from utils.io import save_json  # noqa: E402
from utils.data.toy import ToyConfig, make_toy_dataset  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    """Options of the benchmark."""
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--backbone", default="res2net50", choices=("res2net50", "resnet50"))
    parser.add_argument("--testsize", type=int, default=352)
    parser.add_argument("--batchsize", type=int, default=32 if cuda else 4)
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=cuda,
                        help="bf16 autocast (default on CUDA)")
    parser.add_argument("--workers", type=int, default=4 if cuda else 1)
    parser.add_argument("--mode", choices=("saliency", "binary"), default="binary")
    parser.add_argument("--test_sequences", type=int, default=4)
    parser.add_argument("--test_frames", type=int, default=10)
    parser.add_argument("--width", type=int, default=128, help="toy frame width")
    parser.add_argument("--height", type=int, default=96, help="toy frame height")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the results here")
    return parser


def run_inference(common: list[str], fast: bool, repeats: int) -> dict:
    """Run inference.main ``repeats`` times; return the last summary."""
    argv = common + ([] if fast else ["--no_fast"])
    summary = {}
    for _ in range(repeats):
        summary = inference.main(inference.get_args_parser().parse_args(argv))
    return summary


def main(argv: list[str] | None = None) -> dict:
    """Time the plain and the fast path on a fresh toy set; print (and return) the report."""
    args = get_args_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        tmp_path = Path(tmp)
        config = ToyConfig(width=args.width, height=args.height, train_sequences=1, train_frames=2,
                           test_sequences=args.test_sequences, test_frames=args.test_frames,
                           static_images=1)
        toy = make_toy_dataset(tmp_path / "Toy", config=config, workers=2)
        checkpoint = tmp_path / "fsnet.pth"
        with torch.no_grad():
            save_checkpoint(randomize_weights(FSNet(args.backbone)).state_dict(), checkpoint)
        common = ["--model_path", str(checkpoint), "--dataset_path", str(toy / "TestSet"),
                  "--testsize", str(args.testsize), "--batchsize", str(args.batchsize),
                  "--device", args.device, "--workers", str(args.workers), "--mode", args.mode,
                  "--no_progress", *(["--amp"] if args.amp else [])]
        results = {}
        for name, fast in (("plain", False), ("fast", True)):
            summary = run_inference(common + ["--test_save", str(tmp_path / name)], fast, args.repeats)
            results[name] = {"frames": summary["written"], "model_fps": summary["model_fps"],
                             "end_to_end_fps": summary["end_to_end_fps"]}
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    report = {
        "device": device_name, "backbone": args.backbone, "testsize": args.testsize,
        "batchsize": args.batchsize, "amp_bf16": args.amp, "torch_threads": torch.get_num_threads(),
        "frame_size": f"{args.width}x{args.height}", **results,
        "fast_over_plain_model": round(results["fast"]["model_fps"] / results["plain"]["model_fps"], 3),
        "fast_over_plain_end_to_end": round(
            results["fast"]["end_to_end_fps"] / results["plain"]["end_to_end_fps"], 3),
    }
    print("\n" + json.dumps(report, indent=2))
    if args.json:
        save_json(report, args.json)
    return report


if __name__ == "__main__":
    main()
