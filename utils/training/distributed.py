"""torchrun / DDP set-up and the few collective helpers train.py needs.

One code path for every case: a plain ``python train.py`` is a world of size 1 (no process
group), ``torchrun --nproc_per_node=N train.py`` a world of N (NCCL on GPU, gloo on CPU). The
global batch stays ``--batchsize`` whatever N is: each rank loads ``batchsize / N`` samples.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from utils.cli import BadInputError
from utils.device import resolve_device


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job: rank, world size, local rank and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that logs and writes files."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when a process group is running (world size > 1)."""
        return self.world_size > 1


def rank_from_env() -> int:
    """This process's global rank as torchrun announces it (0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def setup(requested_device: str | None = "auto") -> DistEnv:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and start the process group.

    Without torchrun this returns a world of size 1 and starts nothing. The backend is NCCL on
    CUDA and gloo on the CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = rank_from_env()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(requested_device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistEnv(rank, world_size, local_rank, device)


def cleanup(env: DistEnv) -> None:
    """Tear the process group down (no-op for a world of size 1)."""
    if env.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def per_rank_batch(global_batch: int, world_size: int) -> int:
    """Samples each rank loads per step; ``ValueError`` unless ``world_size`` divides the batch."""
    if global_batch % world_size:
        raise BadInputError(
            f"--batchsize {global_batch} is not divisible by the world size {world_size}: every "
            f"rank must get the same number of samples. Use a multiple of {world_size}, e.g. "
            f"--batchsize {max(1, global_batch // world_size) * world_size}."
        )
    return global_batch // world_size


def mean_over_ranks(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Mean of ``values`` across ranks (returns a new tensor; identity for one process)."""
    values = values.detach().clone()
    if env.is_distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= env.world_size
    return values


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True on every rank if ``flag`` is true on at least one (a collective: call on all ranks)."""
    return bool(mean_over_ranks(torch.tensor([float(flag)], device=env.device), env).item() > 0)


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's ``obj`` as a list indexed by rank (``[obj]`` for one process)."""
    if not env.is_distributed:
        return [obj]
    gathered: list[Any] = [None] * env.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(env: DistEnv) -> None:
    """Wait for every rank (no-op for one process)."""
    if env.is_distributed:
        dist.barrier(device_ids=[env.device.index] if env.device.type == "cuda" else None)


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` that can start part-way into an epoch.

    The order of an epoch depends only on ``(seed, epoch)``, never on the global RNG, so a resumed
    run sees exactly the samples the interrupted one had left. ``set_position(epoch, start)``
    skips the first ``start`` samples of this rank's share for that epoch (used once, after a
    mid-epoch resume). It also works without a process group (``num_replicas=1, rank=0``).
    """

    def __init__(self, dataset: Dataset, env: DistEnv, seed: int) -> None:
        super().__init__(
            dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed,
            drop_last=True,
        )
        self.start = 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation and skip this rank's first ``start`` samples."""
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return self.num_samples - self.start
