"""Training-step throughput and peak memory of FSNet: fp32 vs channels_last (vs AMP on CUDA).

    python -m bench.bench_train                        # CUDA: batch 16 at 352; CPU: batch 2 at 64
    python -m bench.bench_train --multiscale           # one full batch = steps at 256/352/448

Every configuration runs ``train.train_batch`` (the training loop's own step: forward, both BCE
losses, backward, SGD) on the same random batch from the same initial weights; the table gives
median samples/s, the ratio to the fp32 baseline measured in the same run, and peak memory (CUDA:
``max_memory_allocated`` per configuration; CPU: the process's peak RSS so far).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch


import train  # noqa: E402
from lib.backbones import BACKBONES  # noqa: E402
from lib.fsnet import FSNet  # noqa: E402
from utils.training.distributed import DistEnv  # noqa: E402

#: (name, --amp, --channels_last); AMP rows only on CUDA.
CONFIGS = [("fp32", "off", False), ("fp32+channels_last", "off", True),
           ("bf16", "bf16", False), ("bf16+channels_last", "bf16", True),
           ("fp16", "fp16", False), ("fp16+channels_last", "fp16", True)]


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags of the benchmark (sizes and batch default per device)."""
    p = argparse.ArgumentParser("Benchmark FSNet training steps")
    p.add_argument("--backbone", default="res2net50", choices=BACKBONES)
    p.add_argument("--size", type=int, default=None, help="input size (CUDA 352, CPU 64)")
    p.add_argument("--batch", type=int, default=None, help="batch (CUDA 16, CPU 2)")
    p.add_argument("--multiscale", action="store_true",
                   help="time a whole batch of the recipe: one step per rate 0.75/1/1.25")
    p.add_argument("--steps", type=int, default=5, help="timed batches per configuration")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--configs", nargs="+", default=None, choices=[c[0] for c in CONFIGS],
                   help="subset of configurations (the first one is the baseline)")
    p.add_argument("--device", default=None)
    return p


def peak_memory_gib(device: torch.device) -> float:
    """CUDA: peak allocated since the last reset; CPU: peak resident set size of the process."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def bench_config(amp: str, channels_last: bool, sizes: list[int], batch: list[torch.Tensor],
                 opts: argparse.Namespace, env: DistEnv) -> tuple[float, float]:
    """Median samples/s and peak memory (GiB) of ``opts.steps`` training batches."""
    args = train.get_args_parser().parse_args(
        ["--train_type", "finetune", "--amp", amp] + (["--channels_last"] if channels_last else []))
    torch.manual_seed(0)
    model = FSNet(opts.backbone).to(env.device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    optimizer = train.build_optimizer(model, args)
    scaler = torch.amp.GradScaler(env.device.type, enabled=amp == "fp16")
    if env.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(env.device)
    times = []
    for step in range(opts.warmup + opts.steps):
        start = time.perf_counter()
        train.train_batch(model, optimizer, scaler, batch, sizes, args, env)  # syncs via .item()
        if step >= opts.warmup:
            times.append(time.perf_counter() - start)
    memory = peak_memory_gib(env.device)
    del model, optimizer
    if env.device.type == "cuda":
        torch.cuda.empty_cache()
    return len(batch[0]) / statistics.median(times), memory


def main(argv: list[str] | None = None) -> list[dict]:
    """Run every configuration, print the table and return its rows (ratio vs the first row)."""
    opts = get_args_parser().parse_args(argv)
    device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = cuda
    size, n = opts.size or (352 if cuda else 64), opts.batch or (16 if cuda else 2)
    sizes = train.scale_sizes(size, [0.75, 1.0, 1.25]) if opts.multiscale else [size]
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=device)
    generator = torch.Generator().manual_seed(0)
    batch = [torch.randn(n, 3, size, size, generator=generator),
             torch.randn(n, 3, size, size, generator=generator),
             (torch.rand(n, 1, size, size, generator=generator) > 0.7).float()]
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(f"FSNet-{opts.backbone} training step, batch {n}, sizes {sizes}, {name}, "
          f"torch {torch.__version__}; median of {opts.steps} batches after {opts.warmup} warm-up")
    memory_label = "peak alloc GiB" if cuda else "peak RSS GiB (process)"
    print(f"{'config':<22}{'samples/s':>11}{'vs fp32':>9}{memory_label:>24}")
    rows, baseline = [], None
    configs = [c for c in CONFIGS if c[0] in opts.configs] if opts.configs else CONFIGS
    for config, amp, channels_last in configs:
        if amp != "off" and not cuda:
            continue  # CPU autocast is not the recipe's target; fp16 needs CUDA
        speed, memory = bench_config(amp, channels_last, sizes, batch, opts, env)
        baseline = baseline or speed
        rows.append({"config": config, "samples_per_s": speed, "ratio": speed / baseline,
                     "peak_gib": memory})
        print(f"{config:<22}{speed:>11.2f}{speed / baseline:>8.2f}x{memory:>24.2f}")
    return rows


if __name__ == "__main__":
    main()
