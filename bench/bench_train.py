"""Training-step throughput of FSNet: samples/s of each option as a ratio to the first, one run.

    python -m bench.bench_train                           # CPU: 64 (batch 8, the demo) and 352 (batch 2)
    python -m bench.bench_train --sizes 64 --steps 8      # only the demo size, more samples
    python -m bench.bench_train --device cuda             # GPU: the old fp32 step against fp32 /
                                                          # channels_last / bf16 / graphs at 352, batch 16
    python -m bench.bench_train --device cuda --profile   # + how busy the GPU is inside a step
    python -m bench.bench_train --end_to_end --sizes 64 --batch 8 --loader_workers 1
                                                          # train.py end to end against this step

A step is train.py's (``train.train_batch`` and ``train.build_optimizer``): forward of both
streams under the option's autocast, both BCE-with-logits losses, backward, fused SGD (lr 1e-2,
momentum 0.9, weight decay 5e-4), no host sync inside, on ``finetune`` samples of a small
generated toy set (image + flow + GT). ``old step`` options run it as train.py did before: the
host waits for the device after every size (its per-size non-finite check) and SGD updates one
parameter at a time. ``graphs`` options capture forward + backward as CUDA graphs
(``train.py --cuda_graphs``). The CPU default is float32, contiguous tensors, torch's thread
count and a ``DataLoader`` with ``num_workers=0`` decoding and resizing JPEG/PNG files inside
every step; on the GPU the data comes from memory. ``--loader_workers N`` adds a row for the
loader alone (N persistent workers, decoding the same files without a step) as a ratio to the
first option's step rate: below 1, the loader cannot keep up with that step.

Options run round-robin (turns of ``--block`` consecutive steps each, until ``--steps`` steps per
option are timed; the first step of a turn is not timed, so a worker's prefetch is never credited
twice), so a busy machine slows every option alike: read the ratios, not the absolute rates.
``--multiscale`` makes a step a whole recipe batch (one optimiser step per rate 0.75/1/1.25). ``--profile`` adds, per option, the
number of kernels (GPU) or operators (CPU) per step, the share of the step the GPU is busy
(kernel time / wall time: well below 1 means the step is bound by launches or host work, not by
arithmetic) and the three most expensive kernels. The CPU's fp32 GEMM rate of the same run is
printed with the table.

``--end_to_end`` measures ``train.py`` itself against its own step, side by side in one run, at
the first of ``--sizes``/``--batch`` with the first of ``--options`` (default: train.py's
defaults, fp32): the step on pre-decoded tensors (before and after the train.py run), then
``train.py --train_type pretrain_rgb`` in a child process (``--launcher torchrun``: under
``torchrun --standalone --nproc_per_node=1``) on the bench's toy set with the same size, batch,
rates (``--multiscale``: 0.75/1/1.25), precision, memory format, torch threads and
``--loader_workers`` (default 1 on the CPU, 4 on the GPU), ``--e2e_steps`` batches in two epochs,
and the loader alone. It reports train.py's steady-state, whole-run and whole-process samples/s
as ratios to the step's (every rate here is all samples over all the time: a mean, not a median),
and where train.py's time went (its run.json summary, ``utils.training.timing``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import sys
import tempfile
import time
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

import train
from bench.child import REPO
from bench.gemm import gemm_gflops
from lib.backbones import BACKBONES
from lib.fsnet import FSNet
from utils.cli import BadInputError, UserError, make_parser, run_guarded
from utils.data.dataset import TrainDataset
from utils.data.synthetic import ToyConfig, make_toy_dataset
from utils.device import resolve_device, torch_threads
from utils.io import save_json
from utils.training.cuda_graphs import GraphedForward
from utils.training.distributed import DistEnv
from utils.training.timing import PHASES, describe

#: The toy set the steps read: 6 sequences x 8 frames -> 42 finetune samples (last frames lack flow).
BENCH_TOY = ToyConfig(train_sequences=6, train_frames=8, test_sequences=1, test_frames=3, static_images=2)
RECIPE = SimpleNamespace(lr=1e-2, momentum=0.9, weight_decay=5e-4)


@dataclass(frozen=True)
class StepOption:
    """One way to run the training step (the default changes nothing)."""

    name: str
    amp: str = "off"              # autocast dtype: off, bf16 or fp16
    channels_last: bool = False   # model and inputs in channels_last (NHWC) memory format
    threads: Optional[int] = None  # torch.set_num_threads during the step (None: leave as is)
    data: str = "loader"          # loader (decode every step, 0 workers), worker (1 persistent
                                  # worker, prefetch 1) or tensors (decoded once, in memory)
    old_step: bool = False        # wait for the device after every size; per-parameter SGD
    graphs: bool = False          # forward + backward as CUDA graphs (train.py --cuda_graphs)


CPU_OPTIONS = (StepOption("default (fp32, loader 0 workers)"),
               StepOption("old step (fp32)", old_step=True),
               StepOption("channels_last", channels_last=True),
               StepOption("bf16 autocast", amp="bf16"),
               StepOption("bf16 + channels_last", amp="bf16", channels_last=True),
               StepOption("1 thread", threads=1),
               StepOption("data: 1 persistent worker", data="worker"),
               StepOption("data: pre-decoded tensors", data="tensors"))
#: On the GPU the data comes from memory: only the arithmetic format is compared.
GPU_OPTIONS = (StepOption("fp32 old step", data="tensors", old_step=True),
               StepOption("fp32", data="tensors"),
               StepOption("fp32+channels_last", channels_last=True, data="tensors"),
               StepOption("bf16", amp="bf16", data="tensors"),
               StepOption("bf16+channels_last", amp="bf16", channels_last=True, data="tensors"),
               StepOption("bf16+channels_last+graphs", amp="bf16", channels_last=True,
                          data="tensors", graphs=True),
               StepOption("fp16+channels_last", amp="fp16", channels_last=True, data="tensors"))
MULTISCALE_RATES = (0.75, 1.0, 1.25)  # the official recipe's rates: one optimiser step each
#: Options skipped at large sizes on the CPU, where decoding is a negligible share of a step.
DATA_ONLY = ("data: 1 persistent worker", "data: pre-decoded tensors")
#: --end_to_end: train.py's --workers unless --loader_workers is given, and its epochs (one epoch
#: boundary: the loader's reset and a last.pth; the last epoch also writes its epoch file).
E2E_WORKERS = {"cpu": 1, "cuda": 4}
E2E_EPOCHS = 2
#: train.py's run summary keys that the end-to-end report copies.
TRAIN_PY_KEYS = ("global_step", "world_size", "samples_per_s", "steady_samples_per_s", "whole_run_samples_per_s",
                 "wall_s", *PHASES)


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python -m bench.bench_train``."""
    parser = make_parser("python -m bench.bench_train", __doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--backbone", default="res2net50", choices=BACKBONES)
    parser.add_argument("--sizes", "--size", dest="sizes", type=int, nargs="+", default=None,
                        help="input sizes (CPU: 64 352; GPU: 352)")
    parser.add_argument("--batch", type=int, nargs="+", default=None,
                        help="batch per size, same order (CPU: 8 2; GPU: 16)")
    parser.add_argument("--options", "--configs", dest="options", nargs="+", default=None,
                        help="subset of option names (the first is the baseline; default: all)")
    parser.add_argument("--multiscale", action="store_true",
                        help="a step is a whole recipe batch: one optimiser step per rate 0.75/1/1.25")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per option")
    parser.add_argument("--block", type=int, default=3,
                        help="consecutive steps per option and round-robin turn; the first is not timed")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per option before timing")
    parser.add_argument("--profile", action="store_true", help="also profile two steps per option")
    parser.add_argument("--loader_workers", type=int, default=None, metavar="N",
                        help="also measure the loader alone with N persistent workers")
    parser.add_argument("--json", default=None, help="also write the rows here")
    e2e = parser.add_argument_group("train.py end to end (--end_to_end)")
    e2e.add_argument("--end_to_end", action="store_true",
                     help="run train.py on the toy set beside the step, same settings (see above)")
    e2e.add_argument("--e2e_steps", type=int, default=None, metavar="N",
                     help="train.py batches, in two epochs (default: 12 on the CPU, 30 on the GPU)")
    e2e.add_argument("--launcher", default="python", choices=("python", "torchrun"),
                     help="start train.py plainly or under torchrun with one process")
    return parser


def optimizer_for(model: FSNet, option: StepOption) -> torch.optim.Optimizer:
    """train.py's fused SGD, or (``old_step``) the per-parameter SGD it used before."""
    if option.old_step:
        return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=RECIPE.lr,
                               momentum=RECIPE.momentum, weight_decay=RECIPE.weight_decay)
    return train.build_optimizer(model, RECIPE)


def train_step(model: FSNet, optimizer: torch.optim.Optimizer, batch: tuple[Tensor, Tensor, Tensor],
               option: StepOption, device: torch.device, sizes: tuple[int, ...],
               forward: Optional[GraphedForward] = None) -> None:
    """train.py's step on ``batch`` (one optimiser step per size); ``old_step`` waits for the
    device after every size, as the step's per-size non-finite check did."""
    config = SimpleNamespace(amp=option.amp, channels_last=option.channels_last)
    env = DistEnv(0, 1, 0, device)
    scaler = torch.amp.GradScaler(device.type, enabled=option.amp == "fp16")
    for group in ([[size] for size in sizes] if option.old_step else [list(sizes)]):
        losses = train.train_batch(model, optimizer, scaler, list(batch), group, config, env, forward)
        if option.old_step:
            losses.cpu()


def batches(dataset: TrainDataset, option: StepOption, batch: int) -> Iterator[tuple[Tensor, ...]]:
    """Endless batches of ``dataset`` through the option's data path."""
    if option.data == "tensors":
        dataset = TensorDataset(*(torch.stack(column) for column in zip(*(dataset[i] for i in range(len(dataset))))))
    workers = 1 if option.data == "worker" else 0
    sampler = RandomSampler(dataset, replacement=True, num_samples=10**9,
                            generator=torch.Generator().manual_seed(0))
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                        persistent_workers=workers > 0, prefetch_factor=1 if workers else None)
    return iter(loader)


class OptionRunner:
    """An option's model (one per memory format, shared), optimiser and batch stream."""

    def __init__(self, option: StepOption, model: FSNet, dataset: TrainDataset, batch: int,
                 device: torch.device, sizes: tuple[int, ...]) -> None:
        self.option, self.model, self.device, self.sizes = option, model, device, sizes
        self.optimizer = optimizer_for(model, option)
        self.stream = batches(dataset, option, batch)
        self.batch, self.times = batch, []
        self.forward = GraphedForward(
            model, sizes, batch, train.AMP_DTYPES[option.amp],
            torch.channels_last if option.channels_last else torch.contiguous_format,
            device) if option.graphs else None

    def step(self) -> float:
        """One training step including the wait for its batch and for the device; return its
        seconds."""
        with torch_threads(self.option.threads):
            start = time.perf_counter()
            train_step(self.model, self.optimizer, next(self.stream), self.option, self.device,
                       self.sizes, self.forward)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            return time.perf_counter() - start

    def block(self, steps: int) -> None:
        """``steps`` consecutive steps; every one but the first is recorded."""
        for index in range(steps):
            seconds = self.step()
            if index:
                self.times.append(seconds)

    def profile(self) -> dict:
        """Kernels (GPU) or operators (CPU) per step, GPU busy share and the top kernels."""
        from torch.profiler import ProfilerActivity, profile
        cuda = self.device.type == "cuda"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        steps = 2
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                self.step()
            wall = time.perf_counter() - start
        events = prof.key_averages()
        if cuda:
            kernels = [e for e in events if e.self_device_time_total > 0 and e.device_type.name == "CUDA"]
            busy_us = sum(e.self_device_time_total for e in kernels)
            top = sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)[:3]
            return {"kernels_per_step": sum(e.count for e in kernels) / steps,
                    "gpu_busy_share": busy_us / 1e6 / wall,
                    "top_kernels": [{"name": e.key[:80], "share": e.self_device_time_total / max(busy_us, 1)}
                                    for e in top]}
        top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:3]
        total_us = sum(e.self_cpu_time_total for e in events)
        return {"operators_per_step": sum(e.count for e in events) / steps, "gpu_busy_share": None,
                "top_kernels": [{"name": e.key[:80], "share": e.self_cpu_time_total / max(total_us, 1)}
                                for e in top]}


def peak_memory_gib(device: torch.device) -> float:
    """CUDA: peak allocated since the last reset; CPU: the process's peak resident set so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def step_sizes(size: int, multiscale: bool) -> tuple[int, ...]:
    """The sizes of one step: train.py's multi-scale sizes of ``size``, or ``size`` alone."""
    return tuple(train.scale_sizes(size, MULTISCALE_RATES)) if multiscale else (size,)


def measure_size(size: int, batch: int, options: list[StepOption], data_root: Path, opts: argparse.Namespace,
                 device: torch.device) -> list[dict]:
    """Rows for one input size: samples/s of every option and its ratio to the first."""
    dataset = TrainDataset(data_root, "finetune", trainsize=size)
    torch.manual_seed(0)
    base = FSNet(opts.backbone).to(device).train()
    models = {False: base}
    if any(o.channels_last for o in options):
        models[True] = FSNet(opts.backbone).to(device).train().to(memory_format=torch.channels_last)
        models[True].load_state_dict(base.state_dict())
    sizes = step_sizes(size, opts.multiscale)
    runners = [OptionRunner(o, models[o.channels_last], dataset, batch, device, sizes) for o in options]
    for runner in runners:  # warm-up: first-call allocations, oneDNN primitive creation
        for _ in range(opts.warmup):
            runner.step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    block = max(opts.block, 2)
    for _ in range(-(-opts.steps // (block - 1))):  # round-robin turns until --steps are timed
        for runner in runners:
            runner.block(block)
    rows, baseline = [], None
    for runner in runners:
        rate = batch / statistics.median(runner.times)
        baseline = baseline or rate
        row = {"size": size, "sizes": list(sizes), "batch": batch, "option": runner.option.name, "samples_per_s": rate,
               "ratio": rate / baseline, "timed_steps": len(runner.times)}
        if opts.profile:
            row["profile"] = runner.profile()
        rows.append(row)
    rows[-1]["peak_memory_gib"] = peak_memory_gib(device)
    if opts.loader_workers is None:
        return rows
    workers = opts.loader_workers
    rate = loader_rate(dataset, batch, workers, device, steps=max(opts.steps, 4))
    rows.append({"size": size, "sizes": list(sizes), "batch": batch,
                 "option": f"loader alone ({workers} workers)", "samples_per_s": rate,
                 "ratio": rate / baseline, "timed_steps": max(opts.steps, 4)})
    return rows


def loader_rate(dataset: TrainDataset, batch: int, workers: int, device: torch.device,
                steps: int) -> float:
    """Samples/s of train.py's kind of loader alone (``workers`` persistent workers, pinned
    memory on CUDA), decoding and resizing without a training step; the first batch (worker
    start-up) is not timed."""
    sampler = RandomSampler(dataset, replacement=True, num_samples=batch * (steps + 1),
                            generator=torch.Generator().manual_seed(0))
    loader = iter(DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                             pin_memory=device.type == "cuda", persistent_workers=workers > 0))
    next(loader)
    start = time.perf_counter()
    for _ in range(steps):
        next(loader)
    return batch * steps / (time.perf_counter() - start)


def print_rows(rows: list[dict]) -> None:
    """The table: one line per (size, option)."""
    print(f"{'size':>5}{'batch':>6}  {'option':<34}{'samples/s':>10}{'ratio':>8}")
    for row in rows:
        print(f"{row['size']:>5}{row['batch']:>6}  {row['option']:<34}{row['samples_per_s']:>10.2f}"
              f"{row['ratio']:>7.2f}x")
        if "profile" in row:
            profile = row["profile"]
            busy = profile["gpu_busy_share"]
            count = profile.get("kernels_per_step", profile.get("operators_per_step"))
            print(f"{'':>13}{count:.0f} kernels/ops per step"
                  + (f", GPU busy {busy:.0%} of the step" if busy is not None else "")
                  + "; top: " + ", ".join(f"{k['name'][:40]} {k['share']:.0%}" for k in profile["top_kernels"]))


def selected_options(device: torch.device, names: Optional[list[str]]) -> list[StepOption]:
    """The options of this device (``names``: a subset, first = baseline)."""
    pool = GPU_OPTIONS if device.type == "cuda" else CPU_OPTIONS
    if not names:
        return list(pool)
    by_name = {o.name: o for o in pool}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise BadInputError(f"unknown --options {unknown}", f"choose from {list(by_name)}")
    return [by_name[n] for n in names]


def end_to_end_option(device: torch.device, names: Optional[list[str]]) -> StepOption:
    """The arithmetic train.py runs end to end: the first of ``names`` (default: the device's
    first option that is train.py's step), its step reading pre-decoded tensors."""
    option = next(o for o in selected_options(device, names) if names or not o.old_step)
    if option.old_step:
        raise BadInputError(f"--end_to_end cannot run {option.name!r}: train.py has no old step",
                            "name another option first in --options")
    return replace(option, data="tensors")


def train_py_command(option: StepOption, opts: argparse.Namespace, data_root: Path, save_path: Path,
                     size: int, batch: int, samples: int, workers: int, device: torch.device) -> list[str]:
    """train.py's command line for the end-to-end run (``option``'s precision and memory format)."""
    launcher = [sys.executable] + (["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
                                   if opts.launcher == "torchrun" else [])
    rates = MULTISCALE_RATES if opts.multiscale else (1.0,)
    return launcher + [
        str(REPO / "train.py"), "--train_type", "pretrain_rgb", "--data_root", str(data_root),
        "--no_imagenet", "--backbone", opts.backbone, "--trainsize", str(size), "--batchsize", str(batch),
        "--rates", *map(str, rates), "--epoch", str(E2E_EPOCHS), "--max_samples", str(samples),
        "--workers", str(workers), "--device", str(device), "--amp", option.amp,
        "--save_path", str(save_path), "--run_name", "bench_train",
        *(["--channels_last"] if option.channels_last else []),
        *(["--cuda_graphs"] if option.graphs else [])]


def run_train_py(command: list[str], threads: int, save_path: Path) -> tuple[dict, float]:
    """Run train.py with ``threads`` OpenMP threads (its output is passed on when it ends); return
    its run summary and the process's wall seconds. A failure names its last line of stderr."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    seconds = time.perf_counter() - start
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    if done.returncode:
        said = [line for line in done.stderr.splitlines() if line.strip()] or ["no output"]
        raise UserError(f"train.py failed (exit {done.returncode}): {said[-1]}",
                        f"run it alone to see why: {shlex.join(command)}")
    run_json = save_path / "bench_train" / "pretrain_rgb" / "run.json"
    return json.loads(run_json.read_text())["summary"], seconds


def end_to_end(opts: argparse.Namespace, device: torch.device) -> dict:
    """``--end_to_end``: the step alone, train.py end to end and the loader alone, one run."""
    cuda = device.type == "cuda"
    size, batch = (opts.sizes or [352 if cuda else 64])[0], (opts.batch or [16 if cuda else 8])[0]
    option = end_to_end_option(device, opts.options)
    workers = E2E_WORKERS[device.type] if opts.loader_workers is None else opts.loader_workers
    samples = -(-(opts.e2e_steps or (30 if cuda else 12)) // E2E_EPOCHS) * batch  # per epoch
    sizes = step_sizes(size, opts.multiscale)
    with torch_threads(option.threads):
        threads = torch.get_num_threads()
        result = {"mode": "end_to_end", "device": torch.cuda.get_device_name(device) if cuda else "CPU",
                  "torch": torch.__version__, "fp32_gemm_gflops": None if cuda else round(gemm_gflops(), 1),
                  "backbone": opts.backbone, "option": option.name, "size": size, "sizes": list(sizes),
                  "batch": batch, "threads": threads, "workers": workers, "launcher": opts.launcher}
    print(f"train.py end to end against its own step: {result}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_train.") as tmp:
        video = BENCH_TOY.train_sequences * BENCH_TOY.train_frames
        toy = make_toy_dataset(Path(tmp) / "toy", config=replace(
            BENCH_TOY, static_images=max(BENCH_TOY.static_images, samples - video)))
        torch.manual_seed(0)
        model = FSNet(opts.backbone).to(device).train()
        if option.channels_last:
            model = model.to(memory_format=torch.channels_last)
        runner = OptionRunner(option, model, TrainDataset(toy, "finetune", trainsize=size), batch,
                              device, sizes)
        for _ in range(opts.warmup):
            runner.step()
        runner.block(opts.steps + 1)
        before = len(runner.times)
        if cuda:
            torch.cuda.empty_cache()
        command = train_py_command(option, opts, toy, Path(tmp) / "snapshot", size, batch, samples,
                                   workers, device)
        summary, process_s = run_train_py(command, threads, Path(tmp) / "snapshot")
        runner.block(opts.steps + 1)
        loader = loader_rate(TrainDataset(toy, "pretrain_rgb", trainsize=size, max_samples=samples),
                             batch, workers, device, steps=max(opts.steps, 4))
    step = mean_rate(runner.times, batch)  # total over total time, as train.py's rates
    train_py = {**{key: summary[key] for key in TRAIN_PY_KEYS}, "process_s": round(process_s, 1),
                "process_samples_per_s": summary["global_step"] * batch / process_s}
    return {**result, "command": shlex.join(command), "step_samples_per_s": step,
            "step_median_samples_per_s": batch / statistics.median(runner.times),
            "step_samples_per_s_before_after": [mean_rate(runner.times[:before], batch),
                                                mean_rate(runner.times[before:], batch)],
            "loader_samples_per_s": loader, "train_py": train_py,
            **{f"{name}_over_step": _over(train_py[f"{name}_samples_per_s"], step)
               for name in ("steady", "whole_run", "process")}}


def mean_rate(times: list[float], batch: int) -> float:
    """Samples/s of steps that took ``times`` seconds: all samples over all the time."""
    return batch * len(times) / sum(times)


def _over(rate: Optional[float], step: float) -> Optional[float]:
    return None if rate is None else round(rate / step, 3)


def print_end_to_end(result: dict) -> None:
    """The end-to-end report: the rates as ratios to the step, and train.py's time shares."""
    step, train_py = result["step_samples_per_s"], result["train_py"]
    print(f"{'':<52}{'samples/s':>10}{'ratio':>10}")
    rows = [("step alone (data in memory), before/after: " + "/".join(
                f"{r:.2f}" for r in result["step_samples_per_s_before_after"]), step),
            (f"loader alone ({result['workers']} workers)", result["loader_samples_per_s"]),
            ("train.py steady (after step 1, no checkpoints)", train_py["steady_samples_per_s"]),
            ("train.py whole run (train() to its summary)", train_py["whole_run_samples_per_s"]),
            ("train.py process (start to exit)", train_py["process_samples_per_s"])]
    for label, rate in rows:
        print(f"{label:<52}" + ("         -" if rate is None else f"{rate:>10.2f}{rate / step:>9.2f}x"))
    print(f"train.py (process {train_py['process_s']:.1f} s), "
          + describe(train_py, train_py["global_step"]))


def measure_steps(opts: argparse.Namespace, device: torch.device) -> list[dict]:
    """Every size and option: print and return the rows."""
    cuda = device.type == "cuda"
    sizes = opts.sizes or ([352] if cuda else [64, 352])
    batch_sizes = opts.batch or ([16] if cuda else [8, 2])
    if len(batch_sizes) != len(sizes):
        raise BadInputError(f"--batch {batch_sizes} does not match --sizes {sizes}",
                            "give one batch per size")
    options = selected_options(device, opts.options)
    name = (torch.cuda.get_device_name(device) if cuda else
            f"CPU, {torch.get_num_threads()} threads, fp32 GEMM {gemm_gflops():.0f} GFLOP/s")
    print(f"FSNet-{opts.backbone} training step ({name}, torch {torch.__version__}); "
          f"median of {opts.steps}+ timed steps per option" + (", multi-scale" if opts.multiscale else ""))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_train.") as tmp:
        data_root = make_toy_dataset(Path(tmp) / "toy", config=BENCH_TOY)
        for size, batch in zip(sizes, batch_sizes):
            chosen = [o for o in options if cuda or size <= 64 or o.name not in DATA_ONLY]
            rows += measure_size(size, batch, chosen, data_root, opts, device)
    print_rows(rows)
    return rows


def run(opts: argparse.Namespace) -> list[dict] | dict:
    """The step table (or ``--end_to_end``'s report), printed, written to ``--json`` and returned."""
    device = resolve_device(opts.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    if opts.end_to_end:
        result = end_to_end(opts, device)
        print_end_to_end(result)
    else:
        result = measure_steps(opts, device)
    if opts.json:
        save_json(result, opts.json)
    return result


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; returns the exit status (2 on bad options)."""
    args = get_args_parser().parse_args(argv)
    return run_guarded(lambda: run(args), args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
