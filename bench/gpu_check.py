"""The prepared GPU check: every GPU figure of issue 13 in one run (< 8 min on one H100/H200),
written to ONE JSON report. Usually started through ``bench/gpu_check.sh``.

    bench/gpu_check.sh [--out REPORT.json]     # default: $OUT/gpu_check.json, else ./gpu_check.json
    bench/gpu_check.sh --dry_run               # the same steps on the CPU at tiny sizes (the tests)

Steps, each a subprocess with its own time limit (a step that fails or runs out is recorded with
its status and the last lines of its output, and the next step runs):

1. ``inference``: ``bench.bench_inference`` at 352, batch 32, bf16: model-only and end-to-end
   frames/s of the plain forward and of the default (fast) path on a toy test set of 264 frames.
2. ``inference_graphs``: model-only frames/s at 352, batch 32, bf16 of the plain forward, the
   BN-folded eager network, and that network replayed as one CUDA graph: the distance between
   the last two is what kernel launches cost (target: >= 1,000 frames/s).
3. ``train_step``: ``bench.bench_train`` at 352 with batches 16 and 48, fp32 / channels_last /
   bf16 / fp16, with ``--profile`` (kernels per step, GPU busy share, top kernels). If bf16 gains
   over fp32 grow from batch 16 to 48 and the GPU is busy for a small share of a bf16 step, the
   step is launch-bound (small convolutions); if a format conversion kernel tops the list,
   channels_last is paying for layout changes.
4. ``torchrun``: ``torchrun --standalone --nproc_per_node=1 train.py`` on the toy set (bf16,
   channels_last, 30 batches), plus an NCCL all-reduce under the same launcher: with one process
   train.py starts no process group, so the probe is what shows NCCL itself works.

The report: ``{"meta": {...}, "steps": {name: {"status", "seconds", "command", "result"}},
"targets": {...}}``; it is rewritten after every step, so a killed run keeps what finished.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
STEPS = ("inference", "inference_graphs", "train_step", "torchrun")
STEP_KEYS = ("status", "seconds", "command", "result")
#: Time limit of each step in seconds on the GPU (sum 435 s + start-up: under 8 minutes).
LIMITS = {"inference": 120, "inference_graphs": 75, "train_step": 150, "torchrun": 90}
#: The dry run checks the report's shape, not speed: a shared CPU gets generous limits.
DRY_RUN_LIMIT = 400
#: One compute thread in the dry run: on a shared CPU two OpenMP threads stall each other badly.
DRY_RUN_ENV = {"OMP_NUM_THREADS": "1"}


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of ``bench/gpu_check.sh`` / ``python -m bench.gpu_check``."""
    from utils.cli import make_parser
    parser = make_parser("bench/gpu_check.sh", __doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None,
                        help="report path (default: $OUT/gpu_check.json, else ./gpu_check.json)")
    parser.add_argument("--dry_run", action="store_true",
                        help="run every step on the CPU at tiny sizes and check the report's shape")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="steps to run")
    parser.add_argument("--graphs_probe", action="store_true", help=argparse.SUPPRESS)  # step 2's body
    parser.add_argument("--nccl_probe", action="store_true", help=argparse.SUPPRESS)    # step 4's probe
    parser.add_argument("--json", default=None, help=argparse.SUPPRESS)
    return parser


def report_path(out: Optional[str]) -> Path:
    """``--out``, else ``$OUT/gpu_check.json``, else ``./gpu_check.json``."""
    if out:
        return Path(out)
    return Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else Path("gpu_check.json")


def step_commands(dry: bool, work: Path) -> dict[str, list[list[str]]]:
    """The command lines of every step (GPU sizes, or tiny CPU sizes for ``dry``)."""
    py = [sys.executable]
    device = "cpu" if dry else "cuda"
    inference = ["-m", "bench.bench_inference", "--device", device, "--json", str(work / "inference.json")]
    # dry: --backend eager is what auto picks on CUDA (on the CPU it would export to ONNX first)
    inference += (["--testsize", "64", "--batchsize", "2", "--amp", "off", "--workers", "0", "--repeats", "1",
                   "--toy", "--backend", "eager"] if dry else
                  ["--testsize", "352", "--batchsize", "32", "--amp", "bf16", "--workers", "4", "--repeats", "2",
                   "--toy"])
    train_step = ["-m", "bench.bench_train", "--device", device, "--profile", "--json", str(work / "train_step.json")]
    # dry: ResNet-50, whose ~3x fewer operators per step keep the CPU profile's parsing short
    train_step += (["--sizes", "64", "--batch", "2", "--steps", "1", "--block", "2", "--warmup", "0",
                    "--backbone", "resnet50",
                    "--options", "default (fp32, loader 0 workers)", "bf16 + channels_last"] if dry else
                   ["--sizes", "352", "352", "--batch", "16", "48", "--steps", "4", "--block", "3"])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    train = ["train.py", "--train_type", "pretrain_rgb", "--data_root", str(work / "toy"), "--no_imagenet",
             "--epoch", "1" if dry else "4", "--device", device, "--save_path", str(work / "snapshot"), "--run_name", "gpu_check"]
    train += (["--trainsize", "64", "--batchsize", "2", "--max_samples", "4", "--workers", "0", "--rates", "1"]
              if dry else ["--trainsize", "352", "--batchsize", "16", "--stop_after", "30", "--workers", "4",
                           "--amp", "bf16", "--channels_last"])
    probe = ["-m", "bench.gpu_check", "--nccl_probe"] + (["--dry_run"] if dry else [])
    graphs = ["-m", "bench.gpu_check", "--graphs_probe", "--json", str(work / "inference_graphs.json")]
    return {"inference": [py + inference],
            "inference_graphs": [py + graphs + (["--dry_run"] if dry else [])],
            "train_step": [py + train_step],
            "torchrun": [torchrun + train, torchrun + probe]}


def run_step(commands: list[list[str]], limit: float, env: dict[str, str]) -> dict:
    """Run the step's commands in turn within ``limit`` seconds (``env`` added to the environment);
    status ok / failed / timeout."""
    start, tails, status = time.perf_counter(), [], "ok"
    for command in commands:
        left = limit - (time.perf_counter() - start)
        try:
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=max(left, 1),
                                  env={**os.environ, "PYTHONPATH": str(REPO), **env})
        except subprocess.TimeoutExpired as error:
            tails.append(_tail(error.stdout) + _tail(error.stderr))
            status = "timeout"
            break
        tails.append(_tail(done.stdout + done.stderr))
        if done.returncode != 0:
            status = f"failed (exit {done.returncode})"
            break
    return {"status": status, "seconds": round(time.perf_counter() - start, 1),
            "command": [shlex.join(c) for c in commands], "output_tail": tails}


def _tail(text: object, lines: int = 15) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(str(text or "").splitlines()[-lines:])


def read_json(path: Path) -> object:
    """A step's JSON output, or None if it wrote none."""
    return json.loads(path.read_text()) if path.is_file() else None


def torchrun_result(work: Path, output_tail: list[str]) -> dict:
    """The torchrun step's numbers: train.py's run summary and the NCCL probe's line."""
    run = read_json(work / "snapshot" / "gpu_check" / "pretrain_rgb" / "run.json") or {}
    summary = run.get("summary", {})
    probe = [line for tail in output_tail for line in tail.splitlines() if line.startswith("nccl_probe")]
    return {"samples_per_s": summary.get("samples_per_s"), "global_step": summary.get("global_step"),
            "world_size": summary.get("world_size"), "probe": probe[-1] if probe else None}


def step_result(name: str, work: Path, output_tail: list[str]) -> object:
    """What a step measured, read from the JSON it wrote (or the torchrun outputs)."""
    if name == "torchrun":
        return torchrun_result(work, output_tail)
    return read_json(work / f"{name}.json")


def targets(steps: dict) -> dict:
    """The issue's GPU targets against what this run measured (None: not measured)."""
    graphs = (steps.get("inference_graphs") or {}).get("result") or {}
    rows = (steps.get("train_step") or {}).get("result") or []
    rate = {(r["batch"], r["option"]): r["samples_per_s"] for r in rows}
    best_fps = max((v for k, v in graphs.items() if k.endswith("_fps") and v), default=None)
    ratios = {f"batch_{b}": rate[(b, "bf16+channels_last")] / rate[(b, "fp32")]
              for b in sorted({b for b, _ in rate}) if (b, "fp32") in rate and (b, "bf16+channels_last") in rate}
    return {"model_only_fps_at_352_bf16": best_fps,
            "model_only_fps_target": 1000,
            "model_only_met": None if best_fps is None else best_fps >= 1000,
            "train_bf16_channels_last_over_fp32": ratios or None,
            "train_bf16_target": "> 1.0"}


def check_report(report: dict, steps: Sequence[str]) -> list[str]:
    """Problems with the report's shape (empty when every step ran and wrote its result)."""
    problems = [f"missing top-level key {k!r}" for k in ("meta", "steps", "targets") if k not in report]
    for name in steps:
        step = report.get("steps", {}).get(name)
        if step is None:
            problems.append(f"step {name} missing")
            continue
        problems += [f"step {name}: no {k!r}" for k in STEP_KEYS if k not in step]
        if step.get("status") != "ok":
            problems.append(f"step {name}: status {step.get('status')}")
        elif not step.get("result"):
            problems.append(f"step {name}: empty result")
    return problems


def write_report(report: dict, path: Path) -> None:
    """Rewrite the report atomically (a killed run keeps the steps that finished)."""
    from utils.io import save_json
    save_json(report, path)


def meta(dry: bool) -> dict:
    """Where and when this ran."""
    import torch
    cuda = torch.cuda.is_available() and not dry
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "dry_run": dry, "host": platform.node(),
            "device": torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores)",
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version()}


def make_toy(work: Path, dry: bool) -> None:
    """The toy training set the torchrun step reads."""
    from utils.data.synthetic import QUICK, ToyConfig, make_toy_dataset
    make_toy_dataset(work / "toy", config=QUICK if dry else ToyConfig(), workers=1 if dry else 4)


def run_checks(args: argparse.Namespace) -> int:
    """Run the steps, writing the report after each; return 0, or 1 if the report is incomplete."""
    path = report_path(args.out)
    from utils.safety import check_file_writable
    check_file_writable(path, "--out")
    report: dict = {"meta": meta(args.dry_run), "steps": {}, "targets": {}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check.") as tmp:
        work = Path(tmp)
        make_toy(work, args.dry_run)
        commands = step_commands(args.dry_run, work)
        for name in args.steps:
            print(f"[gpu_check] {name} ...", flush=True)
            outcome = run_step(commands[name], DRY_RUN_LIMIT if args.dry_run else LIMITS[name],
                               DRY_RUN_ENV if args.dry_run else {})
            outcome["result"] = step_result(name, work, outcome["output_tail"])
            report["steps"][name] = outcome
            report["targets"] = targets(report["steps"])
            report["meta"]["total_seconds"] = round(time.perf_counter() - start, 1)
            write_report(report, path)
            print(f"[gpu_check] {name}: {outcome['status']} in {outcome['seconds']} s", flush=True)
    problems = check_report(report, args.steps)
    print(json.dumps(report["targets"], indent=2))
    print(f"[gpu_check] report: {path}" + ("" if not problems else "\n  " + "\n  ".join(problems)))
    return 1 if problems else 0


def frames_per_s(fn: Callable[[], object], batch: int, sync: Callable[[], None], repeats: int) -> float:
    """Frames/s of ``fn`` (one batch per call) over ``repeats`` calls after 3 warm-ups."""
    for _ in range(3):
        fn()
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return batch * repeats / (time.perf_counter() - start)


def graphs_probe(dry: bool) -> dict:
    """Step 2's body: model-only frames/s of plain, folded-eager and CUDA-graph-replayed forwards."""
    import torch
    from lib.fast import build_fast_model
    from lib.fsnet import FSNet
    from tests.random_weights import randomize_weights
    cuda = torch.cuda.is_available() and not dry
    device = torch.device("cuda" if cuda else "cpu")
    size, batch, repeats = (64, 2, 2) if dry else (352, 32, 20)
    torch.backends.cudnn.benchmark = cuda
    model = randomize_weights(FSNet("res2net50")).eval().to(device)
    folded = build_fast_model(model, backend="eager").to(device)
    image, flow = (torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
                   for _ in range(2))
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda, cache_enabled=False)

    def run(net: Callable) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode(), autocast():
                return net(image, flow)
        return call

    result = {"size": size, "batch": batch, "dtype": "bfloat16" if cuda else "float32", "device": str(device),
              "plain_fps": frames_per_s(run(lambda i, f: model(i, f)[0]), batch, sync, repeats),
              "folded_eager_fps": frames_per_s(run(folded), batch, sync, repeats),
              "folded_cuda_graph_fps": None}
    if cuda:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            run(folded)()  # warm-up on a side stream, as graph capture requires
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode(), autocast():
            folded(image, flow)
        result["folded_cuda_graph_fps"] = frames_per_s(graph.replay, batch, sync, repeats)
    return result


def nccl_probe(dry: bool) -> str:
    """An all-reduce through the launcher's process group (NCCL on the GPU, gloo for the dry run)."""
    import torch
    import torch.distributed as dist
    cuda = torch.cuda.is_available() and not dry
    dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    value = torch.ones(1, device=device)
    dist.all_reduce(value)
    line = (f"nccl_probe backend={dist.get_backend()} world_size={dist.get_world_size()} "
            f"all_reduce={value.item():g}")
    dist.destroy_process_group()
    return line


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: the whole check, or one of its probes."""
    args = get_args_parser().parse_args(argv)
    if args.nccl_probe:
        print(nccl_probe(args.dry_run))
        return 0
    if args.graphs_probe:
        result = graphs_probe(args.dry_run)
        print(json.dumps(result))
        Path(args.json).write_text(json.dumps(result))
        return 0
    from utils.cli import run_guarded
    return run_guarded(lambda: run_checks(args), args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
