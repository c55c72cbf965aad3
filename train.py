"""Train FSNet: the paper's three stages on 1..N GPUs (torchrun DDP) or the CPU.

    python train.py --train_type pretrain_rgb  --imagenet snapshot/backbone/<file>.pth
    python train.py --train_type pretrain_flow --imagenet snapshot/backbone/<file>.pth
    python train.py --train_type finetune      # starts from the two stages above
    torchrun --nproc_per_node=4 train.py --train_type finetune   # same global batch (16)

Each stage writes ``<save_path>/<run_name>/<train_type>/``: ``last.pth`` (resume state, every
epoch and every ``--save_every`` batches), ``FSNet-<n>epoch.pth`` (bare state_dicts in the
release's format), ``run.json`` and ``tensorboard/``. One batch = one optimiser step per
multi-scale rate, as in the official code; the learning rate is ``--lr`` until epoch
``--decay_epoch`` (0-based) and ``--lr * --gamma`` from then on.

Reading order: :class:`TrainConfig` (every flag), :func:`train` (check, build, loop, summary),
:func:`train_one_epoch`, :func:`save_state`; ``get_args_parser`` and ``main`` are at the bottom.
Everything is checked before the model is built (docs/training.md, "Checks before training").
"""
from __future__ import annotations

from utils.cli import install_interrupt_hook

install_interrupt_hook()  # first: a Ctrl-C while torch is still being imported is one error line too

import argparse
import contextlib
import io
import math
import random
import shlex
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tensorboardX import SummaryWriter
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from experiments.variants import get_variant
from lib.backbones import BACKBONES
from lib.backbones.imagenet import find_imagenet_file
from lib.checkpoint import CONFIG_KEY, Checkpoint, checkpoint_dict, config_difference
from lib.fsnet import BPM_CHOICES, RCAM_CHOICES, STREAM_CHOICES, FSNet, FSNetConfig
from utils.torch_files import first_non_finite, load_model_weights, save_checkpoint
from utils.cli import BadInputError, UserError, add_device_argument, make_parser, progress, run_guarded
from utils.data.dataset import GT_MODES, TRAIN_TYPES, TrainDataset
from utils.data.verify import verify_samples
from utils.device import AMP_DTYPES, add_amp_argument, autocast
from utils.io import save_json
from utils.safety import check_outputs_apart, output_lock
from utils.training import distributed
from utils.training.distributed import DistEnv, ResumableDistributedSampler
from utils.training.cuda_graphs import GraphedForward
from utils.training.finetune_init import (
    FLOW_BN_STATS_CHOICES, PRETRAIN_STAGES, check_stage_finished, for_both_stages, init_finetune,
    require_stage_file,
)
from utils.training.run_info import collect_run_info
from utils.training.state import (
    all_finite, capture_rng, check_resume_args, load_train_state, params_digest, restore_rng,
    save_train_state,
)
from utils.training.timing import RunClock, describe
from utils.weights import NO_IMAGENET_HINT, add_offline_argument, imagenet_init, user_errors

#: TrainConfig fields that set the architecture besides --backbone; --variant sets them all.
ARCH_FIELDS = ("num_bpm", "rcam", "bpm", "streams")


@dataclass
class TrainConfig:
    """Every flag of train.py; the defaults are the paper's / official recipe. Saved in run.json
    and (as ``args``) in last.pth. Help texts: ``python train.py --help``."""

    train_type: str
    epoch: int = 20
    lr: float = 2e-3
    decay_epoch: int = 19
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batchsize: int = 16
    trainsize: int = 352
    rates: list[float] = field(default_factory=lambda: [0.75, 1.0, 1.25])
    seed: int = 0
    backbone: str = "res2net50"
    num_bpm: int = 4
    rcam: str = "duplex"
    bpm: str = "duplex"
    streams: str = "both"
    variant: Optional[str] = None
    imagenet: str | None = None
    no_imagenet: bool = False
    offline: bool = False
    rgb_ckpt: str | None = None
    flow_ckpt: str | None = None
    flow_bn_stats: str = "rgb"
    data_root: str = "./dataset"
    max_samples: int | None = None
    gt_mode: str = "binary"
    drop_unpaired: bool = False
    hflip: bool = False
    workers: int = 4
    save_path: str = "snapshot"
    run_name: str = "FSNet"
    save_from_epoch: int = 17
    save_every: int = 0
    stop_after: int = 0
    resume: str | None = None
    overwrite: bool = False
    device: str = "auto"
    amp: str = "off"
    channels_last: bool = False
    cuda_graphs: bool = False
    sync_bn: bool = False
    freeze_bn: bool = False
    log_every: int = 10


@dataclass
class TrainResult:
    """What a run did (also the ``summary`` of run.json; ``asdict`` gives the old summary dict)."""

    train_type: str
    out_dir: str
    last_checkpoint: str
    epoch_checkpoints: list[str]
    epoch_losses: list[dict]
    global_step: int
    finished: bool
    stopped_early: bool
    world_size: int
    samples_per_epoch: int
    samples_per_s: float | None  # over the loop's data waits and steps (logs, checkpoints out)
    resumed_from: str | None
    changed_on_resume: dict[str, list[Any]]
    params_sha256: str
    # where the wall time went (utils.training.timing; docs/training.md, "Where the time goes")
    wall_s: float
    startup_s: float
    epoch_start_s: float
    loader_wait_s: float
    step_s: float
    log_s: float
    checkpoint_s: float
    steady_samples_per_s: float | None  # after the first step, checkpoint writing excluded
    whole_run_samples_per_s: float | None  # every sample over wall_s


@dataclass
class Run:
    """Everything one training run works with, built by :func:`build_run` before the loop."""

    config: TrainConfig
    env: DistEnv
    sizes: list[int]
    out_dir: Path
    model: FSNet
    net: nn.Module  # the model, DDP-wrapped when distributed
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loader: DataLoader
    sampler: ResumableDistributedSampler
    worker_seeds: torch.Generator  # seeds the loader's workers; reseeded every epoch
    steps_per_epoch: int
    writer: SummaryWriter | None
    run_info: dict[str, Any]
    clock: RunClock  # where the wall time goes (utils.training.timing)
    forward: GraphedForward | None = None  # --cuda_graphs: the captured forward + backward
    global_step: int = 0
    saved_step: int | None = None  # global step of the last.pth this run may be resumed from
    start: tuple[int, int] = (0, 0)  # (epoch, batch in epoch) to start from (resume position)
    samples: int = 0
    epoch_checkpoints: list[str] = field(default_factory=list)

    @property
    def last_path(self) -> Path:
        """This stage's resume state."""
        return self.out_dir / "last.pth"


class TrainingDiverged(UserError, FloatingPointError):
    """A NaN/inf loss or model state stopped the run; only finite states were ever saved."""


class RunExistsError(UserError, FileExistsError):
    """The run folder already holds a last.pth and neither --resume nor --overwrite was given."""


# ----------------------------------------------------------------------------- the recipe

def scale_sizes(trainsize: int, rates: Sequence[float]) -> list[int]:
    """Official multi-scale sizes: ``round(trainsize * rate / 32) * 32`` (352 -> 256/352/448)."""
    return [int(round(trainsize * rate / 32) * 32) for rate in rates]


def lr_at(epoch: int, config: TrainConfig) -> float:
    """Learning rate of 0-based ``epoch``: ``lr`` before ``decay_epoch``, ``lr * gamma`` after."""
    return config.lr * (config.gamma if epoch >= config.decay_epoch else 1.0)


def bce_loss(pred_s: Tensor, pred_e: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """BCE-with-logits (mean) of both outputs against the (soft) GT, computed in float32."""
    return (F.binary_cross_entropy_with_logits(pred_s.float(), gt),
            F.binary_cross_entropy_with_logits(pred_e.float(), gt))


def skip_if_non_finite(optimizer: torch.optim.Optimizer, losses: Tensor) -> None:
    """Make the next fused optimiser step a no-op on the device when ``losses`` holds a NaN/inf
    (its ``found_inf`` input, as GradScaler uses it): no host sync, and a non-finite loss never
    reaches the weights. A non-fused optimiser cannot skip; the loop's check still stops the run."""
    if all(group.get("fused") for group in optimizer.param_groups):
        optimizer.found_inf = (~torch.isfinite(losses).all()).float()


def train_batch(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                batch: list[Tensor], sizes: list[int], config: Any, env: DistEnv,
                forward: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None) -> Tensor:
    """One optimiser step per multi-scale size; return this rank's ``(loss_s, loss_e)`` per size,
    shape ``(len(sizes), 2)``, on the device. Nothing in it waits for the device (no ``.item()``,
    no check on the host): a step with a non-finite loss is skipped on the device
    (:func:`skip_if_non_finite`) and the loop reports it (:func:`first_non_finite_loss`). ``config`` needs
    ``amp`` and ``channels_last``; ``forward`` replaces the autocast forward of ``model`` (the
    CUDA graphs of ``--cuda_graphs``)."""
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    image, flow = (t.to(env.device, non_blocking=True).contiguous(memory_format=memory_format)
                   for t in batch[:2])
    gt = batch[2].to(env.device, non_blocking=True)
    losses = []
    for size in sizes:
        if size != image.shape[-1]:  # the resize keeps the memory format
            image_r, flow_r, gt_r = (F.interpolate(t, size=(size, size), mode="bilinear",
                                                   align_corners=True) for t in (image, flow, gt))
        else:
            image_r, flow_r, gt_r = image, flow, gt
        optimizer.zero_grad(set_to_none=True)
        if forward is not None:
            pred_s, pred_e = forward(image_r, flow_r)
        else:
            with autocast(env.device.type, AMP_DTYPES[config.amp]):
                pred_s, pred_e = model(image_r, flow_r)
        loss_s, loss_e = bce_loss(pred_s, pred_e, gt_r)
        pair = torch.stack([loss_s, loss_e]).detach()
        skip_if_non_finite(optimizer, pair)
        scaler.scale(loss_s + loss_e).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(pair)
    return torch.stack(losses)


def first_non_finite_loss(losses: Tensor, sizes: Sequence[int]) -> tuple[int, str] | None:
    """The row (batch) of the first NaN/inf in ``losses`` (``(batches, sizes, 2)``, on the host)
    and a description of it, or ``None`` when all are finite."""
    bad = (~torch.isfinite(losses)).any(-1).nonzero()
    if not len(bad):
        return None
    row, size = bad[0].tolist()
    loss_s, loss_e = losses[row, size].tolist()
    return row, f"non-finite loss (loss_s={loss_s:.4g}, loss_e={loss_e:.4g}) at size {sizes[size]}"


# ----------------------------------------------------------------------------- architecture

def resolve_variant(config: TrainConfig, explicit: Sequence[str] = ()) -> TrainConfig:
    """``config`` with ``--variant``'s architecture (:data:`ARCH_FIELDS`) filled in; unchanged
    without a variant. An unknown name, or a field given in ``explicit`` (the command line) or
    set away from its default that disagrees with the variant, is a ``BadInputError``.
    ``--backbone`` stays the run's own (the variants are defined for any backbone)."""
    if config.variant is None:
        return config
    try:
        variant = get_variant(config.variant).config
    except UserError:
        raise
    except ValueError as error:
        raise BadInputError(str(error), "python -m experiments.ablation --list names them") from None
    defaults = TrainConfig(train_type=config.train_type)
    conflicts = [f"--{name} {getattr(config, name)} (the variant has {getattr(variant, name)})"
                 for name in ARCH_FIELDS
                 if (name in explicit or getattr(config, name) != getattr(defaults, name))
                 and getattr(config, name) != getattr(variant, name)]
    if conflicts:
        raise BadInputError(f"--variant {config.variant} disagrees with " + ", ".join(conflicts),
                            "drop those flags (the variant sets them) or drop --variant")
    return replace(config, **{name: getattr(variant, name) for name in ARCH_FIELDS})


def model_config(config: TrainConfig) -> FSNetConfig:
    """The network's :class:`FSNetConfig` (--backbone and :data:`ARCH_FIELDS`, width 32);
    an invalid combination is a ``BadInputError`` naming the valid choices."""
    try:
        return FSNetConfig(backbone=config.backbone,
                           **{name: getattr(config, name) for name in ARCH_FIELDS})
    except ValueError as error:
        raise BadInputError(f"invalid architecture: {error}",
                            "see docs/model.md (Variants) for the valid combinations") from None


def check_stage(config: TrainConfig, architecture: FSNetConfig) -> None:
    """``BadInputError`` if the stage or a stage-checkpoint flag does not apply to a
    single-stream network (no flow stage for appearance only, no RGB stage for motion only)."""
    stages = PRETRAIN_STAGES[architecture.streams]
    if config.train_type != "finetune" and config.train_type not in stages:
        seen = "frames" if architecture.streams == "appearance" else "flow images"
        raise BadInputError(
            f"--streams {architecture.streams} has no {config.train_type} stage (that network "
            f"sees {seen} only)", f"run --train_type {stages[0]}, then --train_type finetune")
    for stage, flag in (("pretrain_rgb", "rgb_ckpt"), ("pretrain_flow", "flow_ckpt")):
        if getattr(config, flag) and stage not in stages:
            raise BadInputError(f"--{flag} does not apply to --streams {architecture.streams} "
                                f"(it has no {stage} stage)", f"drop --{flag}")


# ----------------------------------------------------------------------------- checks

def check_config(config: TrainConfig, env: DistEnv) -> list[int]:
    """Raise one ``BadInputError`` listing every argument problem (the architecture and stage
    first, on their own); return the multi-scale sizes."""
    check_stage(config, model_config(config))
    c, cuda = config, env.device.type == "cuda"
    rank_batch = c.batchsize // env.world_size if c.batchsize % env.world_size == 0 else None
    sizes = scale_sizes(c.trainsize, c.rates) if all(map(math.isfinite, c.rates)) else []
    checks = [
        (math.isfinite(c.lr) and c.lr > 0, f"--lr {c.lr} must be a positive finite number"),
        (math.isfinite(c.gamma) and c.gamma > 0, f"--gamma {c.gamma} must be > 0"),
        (math.isfinite(c.momentum) and c.momentum >= 0, f"--momentum {c.momentum} must be >= 0"),
        (math.isfinite(c.weight_decay) and c.weight_decay >= 0,
         f"--weight_decay {c.weight_decay} must be >= 0"),
        (c.epoch >= 1, f"--epoch {c.epoch} must be >= 1"),
        (c.decay_epoch >= 0, f"--decay_epoch {c.decay_epoch} must be >= 0"),
        (c.trainsize >= 32 and c.trainsize % 32 == 0, f"--trainsize {c.trainsize} must be a "
         f"positive multiple of 32 (e.g. {max(32, round(c.trainsize / 32) * 32)})"),
        (all(r > 0 for r in c.rates) and min(sizes, default=0) >= 32,
         f"--rates {c.rates} give sizes {sizes}; every rate must be > 0 and every size >= 32"),
        (c.batchsize >= 1 and rank_batch is not None, f"--batchsize {c.batchsize} must be a "
         f"positive multiple of the world size {env.world_size} (every rank gets the same share)"),
        (rank_batch is None or rank_batch >= 2 or c.freeze_bn, f"--batchsize {c.batchsize} gives "
         f"{rank_batch} sample per process; BatchNorm in train mode needs >= 2 (use --batchsize "
         f"{2 * env.world_size} or more, or --freeze_bn)"),
        (c.workers >= 0, f"--workers {c.workers} must be >= 0"),
        (c.max_samples is None or c.max_samples >= 1, f"--max_samples {c.max_samples} must be >= 1"),
        (c.save_every >= 0, f"--save_every {c.save_every} must be >= 0"),
        (c.stop_after >= 0, f"--stop_after {c.stop_after} must be >= 0"),
        (c.amp != "fp16" or cuda, "--amp fp16 needs CUDA (use --amp bf16 on the CPU)"),
        (not c.sync_bn or cuda, "--sync_bn needs CUDA (torch's SyncBatchNorm has no CPU kernel)"),
        (not c.cuda_graphs or cuda, "--cuda_graphs needs CUDA (drop it on the CPU: it changes "
         "only the speed)"),
        (not c.cuda_graphs or env.world_size == 1, "--cuda_graphs runs in one process (drop it "
         "under torchrun)"),
        (c.log_every >= 1, f"--log_every {c.log_every} must be >= 1"),
        (not (c.resume and c.overwrite), "--resume and --overwrite contradict each other"),
    ]
    problems = [message for ok, message in checks if not ok]
    if problems:
        raise BadInputError(f"{len(problems)} invalid argument(s): " + "; ".join(problems),
                            "change these flags (python train.py --help describes each)")
    return sizes


def run_folder(config: TrainConfig) -> Path:
    """``<save_path>/<run_name>/<train_type>``: everything this run writes goes there."""
    return Path(config.save_path) / config.run_name / config.train_type


def resolve_resume(config: TrainConfig, last_path: Path) -> Path | None:
    """The checkpoint to resume from, or None for a fresh start (refuses to clobber a run)."""
    if config.resume == "auto":
        return last_path if last_path.is_file() else None
    if config.resume:
        return Path(config.resume)
    if last_path.is_file() and not config.overwrite:
        raise RunExistsError(f"{last_path} already exists", "continue that run with --resume "
                             "auto, start afresh with --overwrite, or pick another --run_name")
    return None


def open_resume(config: TrainConfig, last_path: Path, env: DistEnv
                ) -> tuple[Path | None, dict | None, dict[str, list[Any]]]:
    """The checkpoint to continue from, its contents (checked against ``config``) and the
    arguments deliberately changed (lr, amp), or ``(None, None, {})`` for a fresh start."""
    path = resolve_resume(config, last_path)
    if path is None:
        return None, None, {}
    state = load_train_state(path)
    changed = check_resume_args(state["args"], asdict(config), path)
    with user_errors():
        saved = Checkpoint(path, state["model"], state.get(CONFIG_KEY)).config()
    if saved != model_config(config):
        has, wanted = config_difference(saved, model_config(config))
        raise BadInputError(f"Cannot resume from {path}: it trains an FSNet with {has}, this run "
                            f"asks for {wanted}",
                            "resume with that run's architecture flags, or start a new run "
                            "(--run_name / --overwrite)")
    if state["batch_in_epoch"] and state.get("world_size") != env.world_size:
        raise BadInputError(f"{path} was saved mid-epoch by {state.get('world_size')} processes",
                            f"resume it with the same number (not {env.world_size})")
    if changed and env.is_main:
        print("changed on resume (recorded in run.json): " + ", ".join(
            f"--{key} {old} -> {new}" for key, (old, new) in changed.items()))
    return path, state, changed


def stage_inputs(config: TrainConfig) -> tuple[Path | None, Path | None]:
    """finetune: the rgb and flow stage checkpoints (given, or the earlier stages' finished
    last.pth; ``None`` for a stage the network does not have); the problems of both stages are
    reported in one error naming each missing or unfinished stage."""
    given = {"pretrain_rgb": config.rgb_ckpt, "pretrain_flow": config.flow_ckpt}

    def check(stage: str, path: Path) -> Path:
        require_stage_file(path, stage)
        if not given[stage]:
            check_stage_finished(path, stage)
        return path
    paths = for_both_stages(check, {stage: Path(given[stage]) if given[stage] else
                                    Path(config.save_path) / config.run_name / stage / "last.pth"
                                    for stage in PRETRAIN_STAGES[config.streams]})
    return paths.get("pretrain_rgb"), paths.get("pretrain_flow")


def read_paths(config: TrainConfig) -> dict[str, object]:
    """What the run reads besides its own resume state: the data and the stage's folders in it
    (which may be symlinks), the stage checkpoints and the ImageNet file (None where not used)."""
    finetune = config.train_type == "finetune"
    subset, roles = TRAIN_TYPES.get(config.train_type, ("", {}))
    return {"--data_root": config.data_root, "--imagenet": config.imagenet,
            "the training folder": [Path(config.data_root) / subset / name for name in roles.values()],
            "--rgb_ckpt": config.rgb_ckpt if finetune else None,
            "--flow_ckpt": config.flow_ckpt if finetune else None}


def imagenet_file(config: TrainConfig) -> Path | None:
    """The ImageNet file a pretraining stage starts from (None: random init or not needed)."""
    if config.no_imagenet:
        return None
    with user_errors(NO_IMAGENET_HINT):  # a local file first, else downloaded unless offline
        return find_imagenet_file(config.backbone, config.imagenet, config.offline)


# ----------------------------------------------------------------------------- building

def build_dataset(config: TrainConfig) -> TrainDataset:
    """The stage's training set, every file of it verified (readable, complete, equal sizes)."""
    dataset = TrainDataset(config.data_root, config.train_type, trainsize=config.trainsize,
                           drop_unpaired=config.drop_unpaired, hflip=config.hflip,
                           max_samples=config.max_samples, gt_mode=config.gt_mode)
    verify_samples(dataset.samples, what=f"{config.train_type} training")
    return dataset


def build_loader(dataset: TrainDataset, config: TrainConfig, env: DistEnv
                 ) -> tuple[DataLoader, ResumableDistributedSampler, torch.Generator]:
    """This rank's loader (``batchsize / world`` samples per step, ``drop_last``), its sampler
    and the generator that seeds its workers (reseed it per epoch)."""
    rank_batch = distributed.per_rank_batch(config.batchsize, env.world_size)
    sampler = ResumableDistributedSampler(dataset, env, config.seed)
    if len(sampler) < rank_batch:
        raise BadInputError(f"{config.data_root}: {len(dataset)} {config.train_type} samples are "
                            f"fewer than one batch of {config.batchsize}",
                            "lower --batchsize or add data")
    worker_seeds = torch.Generator()
    # Workers live across epochs (no start-up per epoch, which dominated short epochs), except
    # with --hflip, whose flips come from the workers' seeds, reseeded per epoch.
    loader = DataLoader(dataset, batch_size=rank_batch, sampler=sampler, drop_last=True,
                        num_workers=config.workers, pin_memory=env.device.type == "cuda",
                        persistent_workers=config.workers > 0 and not config.hflip,
                        generator=worker_seeds)
    return loader, sampler, worker_seeds


def build_model(config: TrainConfig, resume: dict | None,
                finetune_from: tuple[Path | None, Path | None] | None, imagenet: Path | None,
                env: DistEnv) -> FSNet:
    """The configured FSNet variant with its initial weights: resumed, finetune-initialised (from
    the rgb and flow stage checkpoints ``finetune_from``), ImageNet (``imagenet``) or random."""
    model = FSNet(model_config(config))  # seeded: identical on every rank
    if resume is not None:
        load_model_weights(model, resume["model"])
    elif finetune_from is not None:
        init_finetune(model, *finetune_from, flow_bn_stats=config.flow_bn_stats)
    elif imagenet is None:
        warnings.warn("--no_imagenet: training from random initialisation (far from the paper)")
    else:
        imagenet_init(model, str(imagenet))  # a file that does not fit: one error line
        if env.is_main:
            print(f"ImageNet weights: {imagenet}")
    model.to(env.device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    if config.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def build_optimizer(model: nn.Module, config: Any) -> torch.optim.SGD:
    """The recipe's SGD (``lr``, ``momentum``, ``weight_decay``) over the trainable parameters;
    the frozen, never-run modules are left out, as the official SGD effectively does. Fused (one
    kernel for all parameters; the same results as the per-parameter loop on the CPU) where torch
    has the fused kernel for the device, else the multi-tensor (foreach) loop."""
    params = [p for p in model.parameters() if p.requires_grad]
    options = {"lr": config.lr, "momentum": config.momentum, "weight_decay": config.weight_decay}
    try:
        return torch.optim.SGD(params, fused=True, **options)
    except RuntimeError:  # no fused SGD kernel for this device in this torch
        return torch.optim.SGD(params, foreach=True, **options)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a saved optimiser state, keeping this optimiser's kernel choice (fused/foreach): a
    state saved before the fused kernel was used stores ``fused: None``."""
    kernels = [{key: group[key] for key in ("fused", "foreach")} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, kernel in zip(optimizer.param_groups, kernels):
        group.update(kernel)


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """``model.train()``; with ``freeze_bn`` BN layers stay in eval mode (running stats)."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def build_run(config: TrainConfig, env: DistEnv, sizes: list[int], out_dir: Path,
              clock: RunClock) -> Run:
    """Resume state, data (verified), model, optimiser and logging, in that order: every input
    is read and checked before the model is built; ``clock`` started with the run."""
    resume_path, resume, changed = open_resume(config, out_dir / "last.pth", env)
    fresh_finetune = config.train_type == "finetune" and resume is None
    finetune_from = stage_inputs(config) if fresh_finetune else None
    imagenet = imagenet_file(config) if resume is None and not fresh_finetune else None
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    torch.backends.cudnn.benchmark = env.device.type == "cuda"
    loader, sampler, worker_seeds = build_loader(build_dataset(config), config, env)
    model = build_model(config, resume, finetune_from, imagenet, env)
    optimizer = build_optimizer(model, config)
    scaler = torch.amp.GradScaler(env.device.type, enabled=config.amp == "fp16")
    # Gradients are views into DDP's all-reduce buckets: no copy in or out of them per step.
    net = model if not env.is_distributed else DistributedDataParallel(
        model, device_ids=[env.device] if env.device.type == "cuda" else None,
        gradient_as_bucket_view=True)
    run_info = {**collect_run_info(asdict(config), env.world_size, str(env.device)),
                CONFIG_KEY: asdict(model.config), "resumed_from": str(resume_path) if resume_path else None,
                "changed_on_resume": changed}
    run = Run(config, env, sizes, out_dir, model, net, optimizer, scaler, loader, sampler,
              worker_seeds, len(loader), None, run_info, clock)
    if config.cuda_graphs:  # after the resumed weights are in place; captured in train mode
        set_train_mode(model, config.freeze_bn)
        run.forward = GraphedForward(
            model, sizes, loader.batch_size, AMP_DTYPES[config.amp],
            torch.channels_last if config.channels_last else torch.contiguous_format, env.device)
    if resume is not None:
        load_optimizer_state(optimizer, resume["optimizer"])
        if config.amp == "fp16" and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        run.global_step = run.saved_step = resume["global_step"]
        run.start = (resume["epoch"], resume["batch_in_epoch"])
        restore_rng(resume["rng"][env.rank % len(resume["rng"])])
    if env.is_main:
        save_json(run_info, out_dir / "run.json")
        run.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=run.global_step or None)
    return run


# ----------------------------------------------------------------------------- the loop

@dataclass
class LossWindow:
    """The batches since the last host sync: their numbers in the epoch and their losses, still
    on the device; ``sums``/``count`` hold the epoch's synced totals."""

    batches: list[int] = field(default_factory=list)
    losses: list[Tensor] = field(default_factory=list)
    start: float = field(default_factory=time.perf_counter)
    sums: Tensor = field(default_factory=lambda: torch.zeros(2, dtype=torch.float64))
    count: int = 0


def train_one_epoch(run: Run, epoch: int, start_batch: int) -> tuple[dict | None, bool]:
    """Train 0-based ``epoch`` from batch ``start_batch`` (saving last.pth every --save_every
    batches); return the epoch's mean losses (None if no batch ran) and whether --stop_after
    ended it. The device is waited for once per ``--log_every`` batches, after this process's
    first batch and before every save (:func:`sync_losses`), never inside a step; ``run.clock``
    counts the time around these blocking calls."""
    config, env, clock = run.config, run.env, run.clock
    with clock.phase("epoch_start_s"):
        lr = start_epoch(run, epoch, start_batch)
        batches = iter(run.loader)  # starts (or resets) the workers
    window, stopped = LossWindow(), False
    bar = progress(clock.waited(batches), enabled=env.is_main,
                   total=run.steps_per_epoch - start_batch,
                   desc=f"{config.train_type} {epoch + 1}/{config.epoch}")
    for done, batch in enumerate(bar, start=start_batch + 1):
        with clock.phase("step_s"):  # on CUDA: the launches; the device is waited for at the sync
            window.losses.append(train_batch(run.net, run.optimizer, run.scaler, batch, run.sizes,
                                             config, env, run.forward))
        window.batches.append(done)
        run.global_step, run.samples = run.global_step + 1, run.samples + config.batchsize
        stopped = bool(config.stop_after) and run.global_step >= config.stop_after
        save_mid = done < run.steps_per_epoch and (stopped or (
            config.save_every and run.global_step % config.save_every == 0))
        if save_mid or done == run.steps_per_epoch:
            sync_losses(run, window, epoch, lr, bar)
            with clock.phase("checkpoint_s"):
                if save_mid:
                    save_state(run, epoch, done)
                else:
                    save_state(run, epoch + 1, 0)
                    export_epoch(run, epoch + 1)
            window.start = time.perf_counter()  # checkpoint time is not throughput
        elif len(window.batches) >= config.log_every or run.samples == config.batchsize:
            sync_losses(run, window, epoch, lr, bar)  # the first batch alone: its one-off costs
        if stopped:
            break
    sync_losses(run, window, epoch, lr, bar)
    bar.close()
    if not window.count:
        return None, stopped
    return {"epoch": epoch + 1, "batches": window.count,
            "loss_s": window.sums[0].item() / window.count,
            "loss_e": window.sums[1].item() / window.count}, stopped


def sync_losses(run: Run, window: LossWindow, epoch: int, lr: float, bar: Any) -> None:
    """Wait for the window's steps (one copy to the host, averaged over ranks; step time), stop
    a diverged run naming the first non-finite loss, log every batch (log time); the steady state
    begins after the first of these waits."""
    if not window.batches:
        return
    with run.clock.phase("step_s"):
        losses = distributed.mean_over_ranks(torch.stack(window.losses), run.env).cpu()
    seconds = time.perf_counter() - window.start  # data wait + every rate's step
    with run.clock.phase("log_s"):
        bad = first_non_finite_loss(losses, run.sizes)
        if bad is not None:
            row, what = bad
            raise diverged(run, f"{what} in epoch {epoch + 1}, batch {window.batches[row]}")
        per_batch = losses.mean(1)  # (batches, 2): mean over the sizes
        window.sums += per_batch.double().sum(0)
        window.count += len(window.batches)
        log_batches(run, bar, per_batch, window.sums.sum().item() / window.count, lr,
                    len(window.batches) * run.config.batchsize / seconds)
    run.clock.begin_steady(run.samples)
    window.batches, window.losses, window.start = [], [], time.perf_counter()


def start_epoch(run: Run, epoch: int, start_batch: int) -> float:
    """Set the epoch's lr, data order (skipping ``start_batch`` batches), worker seeds and train
    mode; return the lr."""
    lr = lr_at(epoch, run.config)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.sampler.set_position(epoch, start_batch * run.loader.batch_size)
    run.worker_seeds.manual_seed((run.config.seed * 1_000_003 + epoch) * 1024 + run.env.rank)
    set_train_mode(run.net, run.config.freeze_bn)
    return lr


def log_batches(run: Run, bar: Any, losses: Tensor, mean_loss: float, lr: float,
                rate: float) -> None:
    """TensorBoard scalars of the last ``len(losses)`` batches (one row each, ``(loss_s,
    loss_e)``) and the progress bar's numbers (rank 0); ``rate`` = samples/s over them."""
    if run.writer is None:
        return
    first = run.global_step - len(losses) + 1
    for step, (loss_s, loss_e) in enumerate(losses.tolist(), start=first):
        for tag, value in (("loss/total", loss_s + loss_e), ("loss/pred_s", loss_s),
                           ("loss/pred_e", loss_e), ("lr", lr)):
            run.writer.add_scalar(tag, value, step)
    run.writer.add_scalar("throughput/samples_per_s", rate, run.global_step)
    bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.1e}", samples_s=f"{rate:.1f}")


def save_state(run: Run, epoch: int, batch_in_epoch: int) -> None:
    """Write last.pth (resume at batch ``batch_in_epoch`` of 0-based ``epoch``) after checking
    that every parameter, buffer and optimiser tensor is finite on every rank; a non-finite one
    stops the run and the previous last.pth stays as it was."""
    rng_states = distributed.gather_objects(capture_rng(), run.env)  # collective: every rank
    state = {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict()}
    bad = None if all_finite(state) else first_non_finite(state)  # the exact check names the tensor
    if distributed.any_rank(bad is not None, run.env):
        raise diverged(run, f"non-finite model state after epoch {epoch + (batch_in_epoch > 0)}, "
                            f"batch {batch_in_epoch or run.steps_per_epoch}: "
                            f"{bad or 'on another rank'}")
    if run.env.is_main:
        save_train_state(
            run.last_path, **state, epoch=epoch, batch_in_epoch=batch_in_epoch,
            scaler=run.scaler.state_dict() if run.config.amp == "fp16" else None,
            global_step=run.global_step, finished=epoch >= run.config.epoch, rng=rng_states,
            args=asdict(run.config), world_size=run.env.world_size,
            **{CONFIG_KEY: asdict(run.model.config)})
    run.saved_step = run.global_step


def export_epoch(run: Run, number: int) -> None:
    """Write ``FSNet-<number>epoch.pth`` (``{"model": state_dict with the release's ``module.``
    keys, "config": the architecture}``) for 1-based epochs from --save_from_epoch on and for the
    last epoch (rank 0; the state was checked finite)."""
    config = run.config
    if not run.env.is_main or (number < config.save_from_epoch and number != config.epoch):
        return
    path = run.out_dir / f"FSNet-{number}epoch.pth"
    save_checkpoint(checkpoint_dict(run.model, prefix="module."), path)
    run.epoch_checkpoints.append(str(path))


def diverged(run: Run, what: str) -> TrainingDiverged:
    """The stop error of a diverged run: what happened, which state is kept and the exact
    command that continues it with a 10x lower learning rate."""
    config, saved = run.config, run.saved_step is not None
    kept = (f"{run.last_path} (step {run.saved_step}) is the last good checkpoint" if saved
            else "no checkpoint of this run was written")
    lower = replace(config, lr=config.lr / 10, resume=str(run.last_path) if saved else None,
                    overwrite=config.overwrite and not saved)
    launcher = (f"torchrun --nproc_per_node={run.env.world_size} train.py"
                if run.env.is_distributed else "python train.py")
    amp = "; if fp16 overflowed, --amp bf16 or off instead" if config.amp == "fp16" else ""
    return TrainingDiverged(f"training stopped: {what}. {kept}",
                            f"continue with a 10x lower learning rate: {launcher} "
                            f"{shlex.join(config_argv(lower))}{amp}")


def train(config: TrainConfig) -> TrainResult:
    """Train one stage (see the module docstring): check everything, take the run folder's
    lock, build, loop over the epochs, write the summary into run.json."""
    clock = RunClock()
    config = resolve_variant(config)
    env = distributed.setup(config.device)
    try:
        sizes = check_config(config, env)
        out_dir = run_folder(config)
        check_outputs_apart(inputs=read_paths(config), outputs={"the run folder": out_dir})
        with run_lock(out_dir, env):
            run = build_run(config, env, sizes, out_dir, clock)
            try:
                return fit(run)
            finally:
                if run.writer is not None:
                    run.writer.close()
    finally:
        distributed.cleanup(env)


@contextlib.contextmanager
def run_lock(out_dir: Path, env: DistEnv) -> Iterator[None]:
    """Rank 0 holds ``out_dir``'s exclusive lock (utils.safety.output_lock) for the whole run."""
    with output_lock(out_dir, "train.py") if env.is_main else contextlib.nullcontext():
        distributed.barrier(env)  # no rank starts before the folder is ours
        yield


def fit(run: Run) -> TrainResult:
    """The epoch loop from the resume position; returns the summary (also saved in run.json)."""
    config, start = run.config, run.start
    epoch_losses, stopped = [], False
    run.clock.end_startup()
    for epoch in range(start[0], config.epoch):
        losses, stopped = train_one_epoch(run, epoch, start[1] if epoch == start[0] else 0)
        epoch_losses += [losses] if losses else []
        if stopped:
            break
    digest = params_digest(run.model)
    timing = run.clock.summary(run.samples)
    loop_s = timing["epoch_start_s"] + timing["loader_wait_s"] + timing["step_s"]
    result = TrainResult(
        train_type=config.train_type, out_dir=str(run.out_dir),
        last_checkpoint=str(run.last_path), epoch_checkpoints=run.epoch_checkpoints,
        epoch_losses=epoch_losses, global_step=run.global_step, finished=not stopped,
        stopped_early=stopped, world_size=run.env.world_size,
        samples_per_epoch=run.steps_per_epoch * config.batchsize,
        samples_per_s=run.samples / loop_s if run.samples else None,
        resumed_from=run.run_info["resumed_from"],
        changed_on_resume=run.run_info["changed_on_resume"], params_sha256=digest,
        **timing)
    if run.env.is_main:
        save_json({**run.run_info, "summary": asdict(result)}, run.out_dir / "run.json")
        print(f"{config.train_type}: {run.global_step} steps done; resume state {run.last_path}\n"
              f"{describe(timing, run.samples // config.batchsize)}")
    distributed.barrier(run.env)
    return result




# ----------------------------------------------------------------------------- command line

def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags (one per :class:`TrainConfig` field); defaults are the paper's recipe.
    Old spellings stay accepted: ``--num_workers`` (= ``--workers``), ``--dataset_path``
    (= ``--data_root``)."""
    d = TrainConfig(train_type="finetune")  # the defaults
    p = make_parser("python train.py", "Train one FSNet stage (docs/training.md).")
    p.add_argument("--train_type", required=True, choices=tuple(TRAIN_TYPES),
                   help="the stage: pretrain_rgb, pretrain_flow, then finetune")
    recipe = p.add_argument_group("recipe (official defaults)")
    recipe.add_argument("--epoch", type=int, default=d.epoch, help="number of epochs")
    recipe.add_argument("--lr", type=float, default=d.lr, help="SGD learning rate")
    recipe.add_argument("--decay_epoch", type=int, default=d.decay_epoch,
                        help="0-based epoch from which lr = lr*gamma; 19 = the last of 20 epochs, "
                             "what the official code does under PyTorch>=1.1 (>= --epoch: no decay)")
    recipe.add_argument("--gamma", type=float, default=d.gamma, help="lr decay factor")
    recipe.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum")
    recipe.add_argument("--weight_decay", type=float, default=d.weight_decay, help="SGD weight decay")
    recipe.add_argument("--batchsize", type=int, default=d.batchsize,
                        help="global batch, split over ranks (>= 2 per rank unless --freeze_bn)")
    recipe.add_argument("--trainsize", type=int, default=d.trainsize, help="input size, multiple of 32")
    recipe.add_argument("--rates", type=float, nargs="+", default=d.rates,
                        help="multi-scale rates; size = round(trainsize*rate/32)*32, one step each")
    recipe.add_argument("--seed", type=int, default=d.seed, help="seed of init, data order, workers")
    model = p.add_argument_group("model and initialisation")
    model.add_argument("--backbone", default=d.backbone, choices=BACKBONES, help="backbone network")
    arch = p.add_argument_group("architecture (default: the released FSNet; docs/model.md, Variants)")
    arch.add_argument("--variant", default=d.variant, metavar="NAME",
                      help="a named row of the paper's ablation tables (python -m experiments.ablation "
                           "--list); sets --num_bpm/--rcam/--bpm/--streams")
    arch.add_argument("--num_bpm", type=int, default=argparse.SUPPRESS,
                      help=f"number of stacked BPMs (default {d.num_bpm})")
    arch.add_argument("--rcam", choices=RCAM_CHOICES, default=argparse.SUPPRESS,
                      help=f"fusion: duplex RCAM, simplex RCAM or concat (default {d.rcam})")
    arch.add_argument("--bpm", choices=BPM_CHOICES, default=argparse.SUPPRESS,
                      help=f"BPM direction (default {d.bpm})")
    arch.add_argument("--streams", choices=STREAM_CHOICES, default=argparse.SUPPRESS,
                      help=f"both streams, or frames / flow only (default {d.streams})")
    model.add_argument("--imagenet", default=d.imagenet, metavar="PATH",
                       help="ImageNet backbone file (default: search snapshot/backbone/, torch hub)")
    model.add_argument("--no_imagenet", action="store_true",
                       help="pretraining stages start from random weights (demo/tests only)")
    add_offline_argument(model)
    model.add_argument("--rgb_ckpt", default=d.rgb_ckpt, metavar="PATH",
                       help="finetune: pretrain_rgb weights (default: that stage's last.pth)")
    model.add_argument("--flow_ckpt", default=d.flow_ckpt, metavar="PATH",
                       help="finetune: pretrain_flow weights (default: that stage's last.pth)")
    model.add_argument("--flow_bn_stats", default=d.flow_bn_stats, choices=FLOW_BN_STATS_CHOICES,
                       help="finetune: flow-stream BN running stats from the rgb stage (official) "
                            "or from the flow stage")
    data = p.add_argument_group("data")
    data.add_argument("--data_root", default=d.data_root,
                      help="folder holding TrainSet_StaticAndVideo/ and TrainSet_Video/")
    data.add_argument("--max_samples", type=int, default=d.max_samples,
                      help="train on N evenly spaced samples (demo/tests)")
    data.add_argument("--gt_mode", default=d.gt_mode, choices=GT_MODES,
                      help="GT reading, see utils.data.TrainDataset ('official': no threshold)")
    data.add_argument("--drop_unpaired", action="store_true",
                      help="skip files without a partner in the other folders instead of failing")
    data.add_argument("--hflip", action="store_true",
                      help="random horizontal flips (not in the paper's recipe)")
    data.add_argument("--workers", type=int, default=d.workers,
                      help="data loader worker processes per rank")
    out = p.add_argument_group("output and resume")
    out.add_argument("--save_path", default=d.save_path, help="root of the run folders")
    out.add_argument("--run_name", default=d.run_name,
                     help="run folder: <save_path>/<run_name>/<train_type>/")
    out.add_argument("--save_from_epoch", type=int, default=d.save_from_epoch,
                     help="write FSNet-<n>epoch.pth for 1-based epochs n >= this (official: "
                          "17..20) and always for the last epoch")
    out.add_argument("--save_every", type=int, default=d.save_every, metavar="N",
                     help="also write last.pth every N batches (mid-epoch resume); 0 = per epoch")
    out.add_argument("--stop_after", type=int, default=d.stop_after, metavar="N",
                     help="stop after N batches in total, saving last.pth (e.g. wall-clock-"
                          "limited jobs); continue later with --resume")
    out.add_argument("--resume", default=d.resume, metavar="PATH|auto",
                     help="continue from a last.pth; 'auto' = this stage's last.pth if it exists. "
                          "--lr and --amp may change (logged in run.json)")
    out.add_argument("--overwrite", action="store_true", help="start afresh over an existing run")
    out.add_argument("--log_every", type=int, default=d.log_every, metavar="N",
                     help="wait for the device and log every N batches (every batch is logged; "
                          "a non-finite loss is skipped on the device and stops the run here)")
    hardware = p.add_argument_group("hardware")
    add_device_argument(hardware, d.device)
    add_amp_argument(hardware, d.amp)
    hardware.add_argument("--channels_last", action="store_true", help="NHWC model and inputs")
    hardware.add_argument("--cuda_graphs", action="store_true",
                          help="capture forward + backward as one CUDA graph per training size "
                               "(one GPU; fewer kernel launches, same arithmetic)")
    hardware.add_argument("--sync_bn", action="store_true",
                          help="SyncBatchNorm across GPUs (CUDA only)")
    hardware.add_argument("--freeze_bn", action="store_true",
                          help="BN layers in eval mode: fixed running stats, no batch statistics")
    p.accept_old_spellings({"--dataset_path": "--data_root", "--num_workers": "--workers"})
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed flags, ``--variant`` resolved (:func:`resolve_variant`)."""
    defaults = TrainConfig(train_type=args.train_type)
    config = TrainConfig(**{f.name: getattr(args, f.name, getattr(defaults, f.name))
                            for f in fields(TrainConfig)})
    return resolve_variant(config, [name for name in ARCH_FIELDS if hasattr(args, name)])


def parse_config(argv: Sequence[str]) -> TrainConfig:
    """The :class:`TrainConfig` of a train.py command line (without the program name)."""
    return config_from_args(get_args_parser().parse_args(list(argv)))


def config_argv(config: TrainConfig) -> list[str]:
    """The shortest command line (flags that differ from the defaults) giving ``config``."""
    defaults = TrainConfig(train_type=config.train_type)
    argv = ["--train_type", config.train_type]
    for f in fields(TrainConfig):
        value = getattr(config, f.name)
        if f.name == "train_type" or value == getattr(defaults, f.name) or value is None:
            continue
        if isinstance(value, bool):
            argv.append(f"--{f.name}")
        else:
            argv += [f"--{f.name}", *map(str, value if isinstance(value, list) else [value])]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: exit status 0, or 2 after one ``error:`` line (rank 0 only)."""
    args = get_args_parser().parse_args(argv)
    if distributed.rank_from_env() == 0:
        return run_guarded(lambda: train(config_from_args(args)), args.debug)
    with contextlib.redirect_stderr(io.StringIO()):  # every rank fails alike; rank 0 says why
        return run_guarded(lambda: train(config_from_args(args)), args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
