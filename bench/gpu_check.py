"""The prepared GPU check: every GPU figure of the project in one run (< 8 min on one H100/H200),
written to ONE JSON report. Usually started through ``bench/gpu_check.sh`` (its header says how
to carry the tensorboardX wheel that the GPU image lacks).

    bench/gpu_check.sh [--out REPORT.json]     # default: $OUT/gpu_check.json, else ./gpu_check.json
    bench/gpu_check.sh --dry_run               # the same steps on the CPU at tiny sizes (the tests)

Steps, each a subprocess with its own time limit (:data:`LIMITS`; a step that fails or runs out
is recorded with its status, the real error -- the last traceback or ``error:`` line of the
command that failed, not a launcher's summary -- and the last lines of its output, and the next
step runs):

1. ``inference``: ``bench.bench_inference`` on a toy set of 1,376 frames at 854x480 (the size
   of DAVIS-2016 val; flow precomputed, rendered sequences hard-linked): end-to-end and
   model-only frames/s of the default path (bf16, ``--batchsize auto`` = 32 here) and of the
   plain path (official forward, fp32, batch 1), one run each.
2. ``inference_small``: the same two paths on a 36-frame toy set (start-up dominates; the
   default must still be at least as fast as the plain path).
3. ``inference_graphs``: model-only frames/s at 352, batch 32, bf16 of the plain forward, the
   BN-folded eager network and that network replayed as one CUDA graph
   (:mod:`utils.inference.cuda_graph`, as ``inference.py`` captures it), plus the official
   arithmetic's baseline: the plain forward in fp32 at batch 1. Then the fidelity of the replay:
   the streaming pipeline writes the maps of 65 random frames (two batches and a padded one)
   eagerly, replayed from the graph, and eagerly again; the replayed maps may differ from the
   first eager ones by no more than 1 grey level or than the second eager run does (the GPU's own
   run-to-run noise). The dry run replays through a CPU stand-in of the capture.
4. ``train_step``: ``bench.bench_train`` at 352, batch 16: the fp32 step as it was (a host wait
   after every size, per-parameter SGD) against train.py's step in bf16 + channels_last and in
   fp32, with ``--profile`` (kernels per step, GPU busy share, top kernels).
5. ``torchrun``: ``bench.bench_train --end_to_end --launcher torchrun``: ``torchrun
   --standalone --nproc_per_node=1 train.py`` on the bench's toy set (352, batch 16, bf16,
   channels_last, 4 workers, 30 batches) against the same step in the same run, plus an NCCL
   all-reduce under the same launcher: with one process train.py starts no process group, so the
   probe is what shows NCCL itself works.

``targets`` compares the run with the goals: end to end >= 50% of model-only at the same batch and
precision, default >= plain on both set sizes, the graph replay's maps as the eager ones, bf16 +
channels_last >= 1.5x the old fp32 training step, ``train.py`` (steady state) >= 85% of its own
step rate; and whether graphs were used: ``pipeline_cuda_graphs`` (step 3),
``end_to_end_cuda_graphs`` (step 1, from bench_inference's rows, which carry inference's
``cuda_graphs`` summary key) and the capture warnings of steps 1 and 2. A replay that differs
from eager or a capture that failed in step 3 makes the check fail (exit 1). The report:
``{"meta": {...}, "steps": {name:
{"status", "seconds", "command", "result", "error", "output_tail"}}, "targets": {...}}``; it is
rewritten after every step, so a killed run keeps what finished.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
STEPS = ("inference", "inference_small", "inference_graphs", "train_step", "torchrun")
STEP_KEYS = ("status", "seconds", "command", "result")
#: Time limit of each step in seconds on the GPU (sum 440 s + the report: under 8 minutes).
LIMITS = {"inference": 150, "inference_small": 50, "inference_graphs": 60, "train_step": 100,
          "torchrun": 80}
#: The dry run checks the report's shape, not speed: a shared CPU gets generous limits.
DRY_RUN_LIMIT = 400
#: One compute thread in the dry run: on a shared CPU two OpenMP threads stall each other badly.
DRY_RUN_ENV = {"OMP_NUM_THREADS": "1"}
#: Packages the GPU image lacks that a step imports (train.py logs through tensorboardX).
CARRIED = {"tensorboardX": ("train_step", "torchrun")}
#: Grey levels the graph replay's maps may differ from the eager maps (or as much as two eager runs).
GRAPH_TOLERANCE = 1
#: Training-step options compared (names of bench.bench_train's GPU options): the baseline (the
#: fp32 step as it was before the step lost its host waits) first, the target option second.
TRAIN_OPTIONS = ("fp32 old step", "bf16+channels_last", "fp32")
#: The same roles in the dry run (bench.bench_train's CPU options).
DRY_TRAIN_OPTIONS = ("old step (fp32)", "bf16 + channels_last")


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of ``bench/gpu_check.sh`` / ``python -m bench.gpu_check``."""
    from utils.cli import make_parser
    parser = make_parser("bench/gpu_check.sh", __doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None,
                        help="report path (default: $OUT/gpu_check.json, else ./gpu_check.json)")
    parser.add_argument("--dry_run", action="store_true",
                        help="run every step on the CPU at tiny sizes and check the report's shape")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="steps to run")
    parser.add_argument("--graphs_probe", action="store_true", help=argparse.SUPPRESS)  # step 3's body
    parser.add_argument("--nccl_probe", action="store_true", help=argparse.SUPPRESS)    # step 5's probe
    parser.add_argument("--json", default=None, help=argparse.SUPPRESS)
    return parser


def report_path(out: Optional[str]) -> Path:
    """``--out``, else ``$OUT/gpu_check.json``, else ``./gpu_check.json``."""
    if out:
        return Path(out)
    return Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else Path("gpu_check.json")


def _inference(work: Path, name: str, device: str, dry: bool, frames: int) -> list[str]:
    """``bench.bench_inference``: default against plain on a toy set of about ``frames`` frames."""
    command = [sys.executable, "-m", "bench.bench_inference", "--device", device, "--toy",
               "--json", str(work / f"{name}.json"), "--repeats", "1"]
    if dry:  # --backend eager is what auto picks on CUDA (on the CPU it would export to ONNX first)
        return command + ["--testsize", "64", "--amp", "off", "--workers", "0", "--backend", "eager",
                          "--toy_frames", str(frames), "--toy_size", "128x96"]
    return command + ["--testsize", "352", "--amp", "bf16", "--workers", "auto", "--toy_frames",
                      str(frames), "--toy_size", "854x480"]


def step_commands(dry: bool, work: Path) -> dict[str, list[list[str]]]:
    """The command lines of every step (GPU sizes, or tiny CPU sizes for ``dry``)."""
    py = [sys.executable]
    device = "cpu" if dry else "cuda"
    # dry: ResNet-50, whose ~3x fewer operators per step keep the CPU profile's parsing short
    train_step = ["-m", "bench.bench_train", "--device", device, "--profile", "--json", str(work / "train_step.json")]
    train_step += (["--sizes", "64", "--batch", "2", "--steps", "1", "--block", "2", "--warmup", "0",
                    "--backbone", "resnet50",
                    "--options", *DRY_TRAIN_OPTIONS] if dry else
                   ["--sizes", "352", "--batch", "16", "--steps", "4", "--block", "2", "--options", *TRAIN_OPTIONS])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    # train.py under torchrun beside its own step: same size, batch, precision and format
    e2e = ["-m", "bench.bench_train", "--end_to_end", "--launcher", "torchrun", "--device", device,
           "--json", str(work / "torchrun.json")]
    e2e += (["--sizes", "64", "--batch", "2", "--e2e_steps", "4", "--steps", "1", "--warmup", "0",
             "--backbone", "resnet50", "--loader_workers", "0", "--options", DRY_TRAIN_OPTIONS[1]] if dry else
            ["--sizes", "352", "--batch", "16", "--e2e_steps", "30", "--steps", "4", "--loader_workers", "4",
             "--options", TRAIN_OPTIONS[1]])
    probe = ["-m", "bench.gpu_check", "--nccl_probe"] + (["--dry_run"] if dry else [])
    graphs = ["-m", "bench.gpu_check", "--graphs_probe", "--json", str(work / "inference_graphs.json")]
    return {"inference": [_inference(work, "inference", device, dry, 16 if dry else 1376)],
            "inference_small": [_inference(work, "inference_small", device, dry, 8 if dry else 36)],
            "inference_graphs": [py + graphs + (["--dry_run"] if dry else [])],
            "train_step": [py + train_step],
            "torchrun": [py + e2e, torchrun + probe]}


def python_path(extra: Optional[str]) -> str:
    """The repository first, then whatever ``PYTHONPATH`` held (carried wheels stay importable)."""
    return os.pathsep.join([str(REPO)] + ([extra] if extra else []))


_TRACEBACK = "Traceback (most recent call last):"
#: A launcher's own report of a failed child (torchrun's ``ChildFailedError`` summary).
_LAUNCHER = re.compile(r"ChildFailedError|torch/distributed/(run|launch)\.py|elastic/multiprocessing")
#: The prefix torchrun puts before each line of a child's output (``[rank0]: ``).
_RANK_PREFIX = re.compile(r"^\[(?:rank|default)\d*\]:\s?")


def real_error(output: str) -> Optional[str]:
    """The error that made a command fail: its last traceback that is not a launcher's own (the
    header, the last frames and the exception line), else the last ``error:`` line."""
    lines = [_RANK_PREFIX.sub("", line) for line in output.splitlines()]
    found: Optional[list[str]] = None
    for start, line in enumerate(lines):
        if line.startswith(_TRACEBACK):
            end = next((i for i in range(start + 1, len(lines)) if lines[i] and not lines[i][0].isspace()),
                       len(lines) - 1)
            block = lines[start:end + 1]
            if not _LAUNCHER.search("\n".join(block)):
                found = block
    if found is not None:
        return "\n".join(found[:1] + found[1:][-7:])
    errors = [line for line in lines if line.startswith("error:")]
    return errors[-1] if errors else None


def run_step(commands: list[list[str]], limit: float, env: dict[str, str]) -> dict:
    """Run the step's commands in turn within ``limit`` seconds (``env`` added to the environment,
    ``PYTHONPATH`` extended); status ok / failed / timeout, and the real error of a failure."""
    start, tails, status, error = time.perf_counter(), [], "ok", None
    environment = {**os.environ, "PYTHONPATH": python_path(os.environ.get("PYTHONPATH")), **env}
    for command in commands:
        left = limit - (time.perf_counter() - start)
        try:
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=max(left, 1),
                                  env=environment)
        except subprocess.TimeoutExpired as expired:
            tails.append(_tail(expired.stdout) + _tail(expired.stderr))
            status = f"timeout (limit {limit:g} s)"
            break
        output = done.stdout + done.stderr
        tails.append(_tail(output))
        if done.returncode != 0:
            status, error = f"failed (exit {done.returncode})", real_error(output)
            break
    return {"status": status, "seconds": round(time.perf_counter() - start, 1),
            "command": [shlex.join(c) for c in commands], "error": error, "output_tail": tails}


def _tail(text: object, lines: int = 15) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(str(text or "").splitlines()[-lines:])


def read_json(path: Path) -> object:
    """A step's JSON output, or None if it wrote none."""
    return json.loads(path.read_text()) if path.is_file() else None


def torchrun_result(work: Path, output_tail: list[str]) -> dict:
    """The torchrun step's numbers: the end-to-end report (train.py's rates and time shares
    against the step's) and the NCCL probe's line."""
    end_to_end = read_json(work / "torchrun.json") or {}
    probe = [line for tail in output_tail for line in tail.splitlines() if line.startswith("nccl_probe")]
    return {"global_step": end_to_end.get("train_py", {}).get("global_step"), "end_to_end": end_to_end or None,
            "probe": probe[-1] if probe else None}


def step_result(name: str, work: Path, output_tail: list[str]) -> object:
    """What a step measured, read from the JSON it wrote (or the torchrun outputs)."""
    if name == "torchrun":
        return torchrun_result(work, output_tail)
    return read_json(work / f"{name}.json")


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 3) if a and b else None


def _best(steps: dict, name: str, config: str) -> dict:
    return (((steps.get(name) or {}).get("result") or {}).get("best") or {}).get(config) or {}


def targets(steps: dict) -> dict:
    """The GPU targets against what this run measured (None: not measured)."""
    from utils.inference.cuda_graph import FALLBACK_WARNING
    graphs = (steps.get("inference_graphs") or {}).get("result") or {}
    rows = (steps.get("train_step") or {}).get("result") or []
    by_option = {r.get("option"): r.get("samples_per_s") for r in rows}
    # the baseline, then the target option (whichever names this run used: GPU or dry run)
    rates = [next((by_option[n] for n in names if n in by_option), None)
             for names in zip(TRAIN_OPTIONS[:2], DRY_TRAIN_OPTIONS)]
    default, plain = _best(steps, "inference", "default"), _best(steps, "inference", "plain")
    small = {k: _best(steps, "inference_small", k) for k in ("default", "plain")}
    train_py = ((steps.get("torchrun") or {}).get("result") or {}).get("end_to_end") or {}
    end_to_end = _ratio(default.get("end_to_end_fps"), graphs.get("folded_eager_fps"))
    default_over_plain = {
        "1376_frames": _ratio(default.get("end_to_end_fps"), plain.get("end_to_end_fps")),
        "36_frames": _ratio(small["default"].get("end_to_end_fps"), small["plain"].get("end_to_end_fps"))}
    train = _ratio(rates[1], rates[0])
    replay_diff, eager_diff = (graphs.get(k) for k in ("graph_vs_eager_max_abs_diff",
                                                        "eager_vs_eager_max_abs_diff"))
    warnings = [line for name in ("inference", "inference_small")
                for tail in (steps.get(name) or {}).get("output_tail", [])
                for line in tail.splitlines() if line.startswith(FALLBACK_WARNING)]
    return {"official_fp32_batch1_fps": graphs.get("official_fp32_batch1_fps"),
            "model_only_fps_at_352_bf16": graphs.get("folded_eager_fps"),
            "model_only_cuda_graph_fps": graphs.get("folded_cuda_graph_fps"),
            "end_to_end_fps_1376_frames": default.get("end_to_end_fps"),
            "end_to_end_over_model_only": end_to_end,
            "end_to_end_over_its_own_model_fps": _ratio(default.get("end_to_end_fps"),
                                                        default.get("model_fps")),
            "end_to_end_target": ">= 0.5",
            "end_to_end_met": None if end_to_end is None else end_to_end >= 0.5,
            "default_over_plain_end_to_end": default_over_plain,
            "default_over_plain_target": ">= 1.0 on both sets",
            "pipeline_cuda_graphs": graphs.get("pipeline_cuda_graphs"),
            "end_to_end_cuda_graphs": default.get("cuda_graphs"),
            "graph_capture_warnings": warnings,
            "graph_vs_eager_max_abs_diff": replay_diff,
            "graph_fidelity_target": f"<= max({GRAPH_TOLERANCE}, eager_vs_eager_max_abs_diff) grey levels",
            "graph_fidelity_met": (None if replay_diff is None or eager_diff is None
                                   else replay_diff <= max(GRAPH_TOLERANCE, eager_diff)),
            "train_bf16_channels_last_over_fp32": train,
            "train_bf16_target": ">= 1.5",
            "train_py_over_step_rate": train_py.get("steady_over_step"),
            "train_py_whole_run_over_step_rate": train_py.get("whole_run_over_step"),
            "train_py_target": ">= 0.85"}


def missing_packages(steps: Sequence[str]) -> list[str]:
    """Carried packages (:data:`CARRIED`) that the chosen ``steps`` need but Python cannot find."""
    return [name for name, users in CARRIED.items()
            if set(users) & set(steps) and importlib.util.find_spec(name) is None]


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
    targets = report.get("targets") or {}
    if targets.get("graph_fidelity_met") is False:
        problems.append(f"the CUDA graph's maps differ from the eager maps by "
                        f"{targets.get('graph_vs_eager_max_abs_diff')} grey levels "
                        f"(target {targets.get('graph_fidelity_target')})")
    if targets.get("pipeline_cuda_graphs") is False:
        problems.append("the pipeline ran eagerly: the CUDA graph capture failed (the "
                        "inference_graphs step's output names the reason)")
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


def run_checks(args: argparse.Namespace) -> int:
    """Run the steps, writing the report after each; return 0, or 1 if the report is incomplete."""
    path = report_path(args.out)
    from utils.cli import UserError
    from utils.safety import check_file_writable
    check_file_writable(path, "--out")
    missing = missing_packages(args.steps)
    if missing:
        raise UserError(f"{', '.join(missing)} is not installed here (train.py imports it)",
                        "carry its wheel as the header of bench/gpu_check.sh shows, or leave out "
                        "--steps train_step torchrun")
    report: dict = {"meta": meta(args.dry_run), "steps": {}, "targets": {}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check.") as tmp:
        work = Path(tmp)
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
            print(f"[gpu_check] {name}: {outcome['status']} in {outcome['seconds']} s"
                  + (f"\n{outcome['error']}" if outcome["error"] else ""), flush=True)
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
    """Step 3's body: model-only frames/s of plain, folded-eager and CUDA-graph-replayed forwards
    (bf16, batch 32), the official arithmetic's baseline (plain, fp32, batch 1), and the replay's
    fidelity through the pipeline (:func:`graph_fidelity`)."""
    import torch
    from lib.fast import build_fast_model
    from lib.fsnet import FSNet
    from tests.cuda_graph_standin import RerunCapture
    from tests.random_weights import randomize_weights
    from utils.device import autocast
    from utils.inference.cuda_graph import GraphReplay, capture_predictor
    cuda = torch.cuda.is_available() and not dry
    device = torch.device("cuda" if cuda else "cpu")
    size, batch, repeats = (64, 2, 2) if dry else (352, 32, 20)
    dtype = torch.bfloat16 if cuda else None
    torch.backends.cudnn.benchmark = cuda
    model = randomize_weights(FSNet("res2net50")).eval().to(device)
    folded = build_fast_model(model, backend="eager").to(device)
    image, flow = (torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
                   for _ in range(2))
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def run(net: Callable) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode(), autocast(device.type, dtype):
                return net(image, flow)
        return call

    result = {"size": size, "batch": batch, "dtype": "bfloat16" if cuda else "float32", "device": str(device),
              "plain_fps": frames_per_s(run(lambda i, f: model(i, f)[0]), batch, sync, repeats),
              "folded_eager_fps": frames_per_s(run(folded), batch, sync, repeats),
              "folded_cuda_graph_fps": None}
    single = tuple(t[:1].contiguous() for t in (image, flow))
    with torch.inference_mode():
        result["official_fp32_batch1_fps"] = frames_per_s(lambda: model(*single)[0], 1, sync, repeats)
    # the dry run replays through the CPU stand-in: the same wrapper and pipeline, no graph
    replayed = capture_predictor(folded, image, flow, dtype, capture=None if cuda else RerunCapture())
    if cuda and isinstance(replayed, GraphReplay):
        result["folded_cuda_graph_fps"] = frames_per_s(lambda: replayed(image, flow), batch, sync, repeats)
    result["replay"] = "CUDA graph" if cuda else "CPU stand-in (re-runs the captured call)"
    return {**result, **graph_fidelity(folded, replayed, device, batch, size, "bf16" if cuda else "off")}


def graph_fidelity(eager: Callable, replayed: Callable, device: object, batch: int, size: int,
                   amp: str) -> dict:
    """The pipeline's 8-bit maps of ``2 * batch + 1`` random frames (the last batch padded) with
    the ``eager`` network, with its ``replayed`` graph and with the eager network again: the
    largest differences in grey levels (replay vs first eager, second eager vs first eager) and
    whether the pipeline replayed a graph."""
    import numpy as np
    import torch
    from utils.inference.pipeline import PredictOptions, batches_of, run_pipeline
    frames = 2 * batch + 1

    def samples():
        for index in range(frames):
            generator = torch.Generator().manual_seed(index)
            yield {"image": torch.randn(3, size, size, generator=generator),
                   "flow": torch.randn(3, size, size, generator=generator), "sequence": "probe",
                   "frame": f"{index:05d}", "height": size, "width": size}

    options = PredictOptions(batchsize=batch, amp=amp, show_progress=False, writer_threads=4)

    def maps(predictor: Callable, out_dir: Path) -> tuple:
        arrays: list = []  # the sink sees the maps in frame order
        stats = run_pipeline(predictor, batches_of(samples(), batch), out_dir, device, options, frames,
                             on_mask=lambda _, array: arrays.append(array))
        return np.stack(arrays).astype(np.int16), stats.cuda_graphs

    with tempfile.TemporaryDirectory(prefix="gpu_check_fidelity.") as tmp:
        (first, _), (graph, used), (second, _) = (maps(p, Path(tmp) / str(i))
                                                  for i, p in enumerate((eager, replayed, eager)))
    return {"pipeline_cuda_graphs": used, "graph_vs_eager_frames": frames,
            "graph_vs_eager_max_abs_diff": int(np.abs(graph - first).max()),
            "eager_vs_eager_max_abs_diff": int(np.abs(second - first).max())}


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
        from utils.io import save_json
        save_json(result, args.json)
        return 0
    from utils.cli import run_guarded
    return run_guarded(lambda: run_checks(args), args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
