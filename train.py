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
"""
from __future__ import annotations

import argparse
import random
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tensorboardX import SummaryWriter
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from lib.backbones import BACKBONES, load_imagenet_weights
from lib.fsnet import FSNet
from utils.training import distributed
from utils.checkpoint import load_model_weights, save_checkpoint
from utils.data.dataset import GT_MODES, TrainDataset
from utils.io import save_json
from utils.training.finetune_init import (
    FLOW_BN_STATS_CHOICES, check_stage_finished, init_finetune, require_stage_file,
)
from utils.training.run_info import collect_run_info
from utils.training.state import (
    capture_rng, check_resume_args, load_train_state, params_digest, restore_rng,
    save_train_state,
)

TRAIN_TYPES = ("pretrain_rgb", "pretrain_flow", "finetune")
AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line flags; defaults are the paper's / official recipe."""
    p = argparse.ArgumentParser("Train FSNet", add_help=True)
    p.add_argument("--train_type", required=True, choices=TRAIN_TYPES)
    # recipe (official defaults)
    p.add_argument("--epoch", type=int, default=20, help="number of epochs")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--decay_epoch", type=int, default=19,
                   help="0-based epoch from which lr = lr*gamma; 19 = the last of 20 epochs, what "
                        "the official code does under PyTorch>=1.1 (>= --epoch: no decay)")
    p.add_argument("--gamma", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight_decay", type=float, default=5e-4)
    p.add_argument("--batchsize", type=int, default=16, help="global batch, split over ranks")
    p.add_argument("--trainsize", type=int, default=352, help="multiple of 32")
    p.add_argument("--rates", type=float, nargs="+", default=[0.75, 1.0, 1.25],
                   help="multi-scale rates; size = round(trainsize*rate/32)*32, one step each")
    p.add_argument("--seed", type=int, default=0)
    # model and initialisation
    p.add_argument("--backbone", default="res2net50", choices=BACKBONES)
    p.add_argument("--imagenet", default=None, metavar="PATH",
                   help="ImageNet backbone file (default: search snapshot/backbone/, torch hub)")
    p.add_argument("--no_imagenet", action="store_true",
                   help="pretraining stages start from random weights (demo/tests only)")
    p.add_argument("--rgb_ckpt", default=None, metavar="PATH",
                   help="finetune: pretrain_rgb weights (default: that stage's last.pth)")
    p.add_argument("--flow_ckpt", default=None, metavar="PATH",
                   help="finetune: pretrain_flow weights (default: that stage's last.pth)")
    p.add_argument("--flow_bn_stats", default="rgb", choices=FLOW_BN_STATS_CHOICES,
                   help="finetune: flow-stream BN running stats from the rgb stage (official) "
                        "or from the flow stage")
    # data
    p.add_argument("--data_root", default="./dataset")
    p.add_argument("--max_samples", type=int, default=None,
                   help="train on N evenly spaced samples (demo/tests)")
    p.add_argument("--gt_mode", default="binary", choices=GT_MODES,
                   help="GT reading, see utils.data.TrainDataset ('official': no threshold)")
    p.add_argument("--drop_unpaired", action="store_true",
                   help="skip files without a partner in the other folders instead of failing")
    p.add_argument("--hflip", action="store_true",
                   help="random horizontal flips (not in the paper's recipe)")
    p.add_argument("--num_workers", type=int, default=4)
    # output, resume
    p.add_argument("--save_path", default="snapshot")
    p.add_argument("--run_name", default="FSNet")
    p.add_argument("--save_from_epoch", type=int, default=17,
                   help="write FSNet-<n>epoch.pth for 1-based epochs n >= this (official: 17..20) "
                        "and always for the last epoch")
    p.add_argument("--save_every", type=int, default=0, metavar="N",
                   help="also write last.pth every N batches (mid-epoch resume); 0 = per epoch")
    p.add_argument("--stop_after", type=int, default=0, metavar="N",
                   help="stop after N batches in total, saving last.pth (e.g. wall-clock-limited "
                        "jobs); continue later with --resume")
    p.add_argument("--resume", default=None, metavar="PATH|auto",
                   help="continue from a last.pth; 'auto' = this stage's last.pth if it exists")
    p.add_argument("--overwrite", action="store_true", help="start afresh over an existing run")
    # hardware
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--amp", default="off", choices=tuple(AMP_DTYPES))
    p.add_argument("--channels_last", action="store_true")
    p.add_argument("--sync_bn", action="store_true", help="SyncBatchNorm across GPUs (CUDA only)")
    p.add_argument("--freeze_bn", action="store_true",
                   help="BN layers in eval mode: fixed running stats, no batch statistics")
    return p


def scale_sizes(trainsize: int, rates: list[float]) -> list[int]:
    """Official multi-scale sizes: ``round(trainsize * rate / 32) * 32`` (352 -> 256/352/448)."""
    return [int(round(trainsize * rate / 32) * 32) for rate in rates]


def lr_for_epoch(args: argparse.Namespace, epoch: int) -> float:
    """Learning rate of 0-based ``epoch``: ``lr`` before ``decay_epoch``, ``lr * gamma`` after."""
    return args.lr * (args.gamma if epoch >= args.decay_epoch else 1.0)


def bce_loss(pred_s: Tensor, pred_e: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """BCE-with-logits (mean) of both outputs against the (soft) GT, computed in float32."""
    return (F.binary_cross_entropy_with_logits(pred_s.float(), gt),
            F.binary_cross_entropy_with_logits(pred_e.float(), gt))


def check_args(args: argparse.Namespace, env: distributed.DistEnv) -> list[int]:
    """Validate flag combinations; return the multi-scale sizes."""
    if args.trainsize % 32:
        raise ValueError(f"--trainsize {args.trainsize} must be a multiple of 32 (e.g. "
                         f"{max(32, round(args.trainsize / 32) * 32)})")
    sizes = scale_sizes(args.trainsize, args.rates)
    if min(sizes) < 32:
        raise ValueError(f"--rates {args.rates} give sizes {sizes}; each must be >= 32")
    if args.amp == "fp16" and env.device.type != "cuda":
        raise ValueError("--amp fp16 needs CUDA; use --amp bf16 on the CPU")
    if args.sync_bn and env.device.type != "cuda":
        raise ValueError("--sync_bn needs CUDA (torch's SyncBatchNorm has no CPU kernel); drop it")
    distributed.per_rank_batch(args.batchsize, env.world_size)
    return sizes


def resolve_resume(args: argparse.Namespace, last_path: Path) -> Path | None:
    """The checkpoint to resume from, or None for a fresh start (refuses to clobber a run)."""
    if args.resume == "auto":
        return last_path if last_path.is_file() else None
    if args.resume:
        return Path(args.resume)
    if last_path.is_file() and not args.overwrite:
        raise FileExistsError(f"{last_path} already exists. Continue that run with --resume auto, "
                              "start afresh with --overwrite, or pick another --run_name.")
    return None


def stage_inputs(args: argparse.Namespace) -> tuple[Path, Path]:
    """finetune: the rgb and flow stage checkpoints (given, or the earlier stages' finished
    last.pth); errors name the missing stage."""
    paths = []
    for stage, given in (("pretrain_rgb", args.rgb_ckpt), ("pretrain_flow", args.flow_ckpt)):
        path = Path(given) if given else Path(args.save_path) / args.run_name / stage / "last.pth"
        require_stage_file(path, stage)
        if not given:
            check_stage_finished(path, stage)
        paths.append(path)
    return paths[0], paths[1]


def build_model(args: argparse.Namespace, resume: dict | None,
                finetune_from: tuple[Path, Path] | None, env: distributed.DistEnv) -> FSNet:
    """FSNet with its initial weights: resumed, finetune-initialised (from the rgb and flow stage
    checkpoints ``finetune_from``), ImageNet or random."""
    model = FSNet(backbone=args.backbone)  # seeded: identical on every rank
    if resume is not None:
        load_model_weights(model, resume["model"])
    elif finetune_from is not None:
        init_finetune(model, *finetune_from, flow_bn_stats=args.flow_bn_stats)
    elif args.no_imagenet:
        warnings.warn("--no_imagenet: training from random initialisation (far from the paper)")
    else:
        try:
            path = load_imagenet_weights(model, args.imagenet)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{error}\nOr pass --no_imagenet to start from random "
                                    "weights (demo/tests only).") from None
        if env.is_main:
            print(f"ImageNet weights: {path}")
    model.to(env.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """``model.train()``; with ``freeze_bn`` BN layers stay in eval mode (running stats)."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def build_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.SGD:
    """The recipe's SGD (``--lr``, ``--momentum``, ``--weight_decay``) over the trainable parameters;
    the frozen, never-run modules are left out, as the official SGD effectively does."""
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                           momentum=args.momentum, weight_decay=args.weight_decay)


def train_batch(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                batch: list[Tensor], sizes: list[int], args: argparse.Namespace,
                env: distributed.DistEnv) -> Tensor:
    """One optimiser step per multi-scale size; return the rank-averaged ``(loss_s, loss_e)``
    per size, shape ``(len(sizes), 2)``. Raises ``FloatingPointError`` before a non-finite loss
    reaches the weights."""
    image, flow, gt = (t.to(env.device, non_blocking=True) for t in batch)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    losses = []
    for size in sizes:
        if size != image.shape[-1]:
            image_r, flow_r, gt_r = (F.interpolate(t, size=(size, size), mode="bilinear",
                                                   align_corners=True) for t in (image, flow, gt))
        else:
            image_r, flow_r, gt_r = image, flow, gt
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(env.device.type, dtype=AMP_DTYPES[args.amp] or torch.float32,
                            enabled=args.amp != "off"):
            pred_s, pred_e = model(image_r.contiguous(memory_format=memory_format),
                                   flow_r.contiguous(memory_format=memory_format))
        loss_s, loss_e = bce_loss(pred_s, pred_e, gt_r)
        pair = distributed.mean_over_ranks(torch.stack([loss_s, loss_e]), env)
        if not torch.isfinite(pair).all():
            raise FloatingPointError(f"non-finite loss (loss_s={pair[0].item():.4g}, "
                                     f"loss_e={pair[1].item():.4g}) at size {size}")
        scaler.scale(loss_s + loss_e).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(pair)
    return torch.stack(losses).cpu()


def open_resume(args: argparse.Namespace, last_path: Path,
                env: distributed.DistEnv) -> tuple[Path | None, dict | None]:
    """The checkpoint to continue from and its contents (checked against ``args``), or Nones."""
    path = resolve_resume(args, last_path)
    if path is None:
        return None, None
    state = load_train_state(path)
    check_resume_args(state["args"], vars(args), path)
    if state["batch_in_epoch"] and state.get("world_size") != env.world_size:
        raise ValueError(f"{path} was saved mid-epoch by {state.get('world_size')} processes; "
                         f"resume it with the same number (not {env.world_size}).")
    return path, state


def build_loader(args: argparse.Namespace, env: distributed.DistEnv
                 ) -> tuple[DataLoader, distributed.ResumableDistributedSampler, torch.Generator]:
    """This rank's loader (``batchsize / world`` samples per step, ``drop_last``), its sampler
    and the generator that seeds its workers (reseed it per epoch)."""
    dataset = TrainDataset(args.data_root, args.train_type, trainsize=args.trainsize,
                           drop_unpaired=args.drop_unpaired, hflip=args.hflip,
                           max_samples=args.max_samples, gt_mode=args.gt_mode)
    rank_batch = distributed.per_rank_batch(args.batchsize, env.world_size)
    sampler = distributed.ResumableDistributedSampler(dataset, env, args.seed)
    if len(sampler) < rank_batch:
        raise ValueError(f"{args.data_root}: {len(dataset)} {args.train_type} samples are fewer "
                         f"than one batch of {args.batchsize}; lower --batchsize or add data.")
    worker_seeds = torch.Generator()
    loader = DataLoader(dataset, batch_size=rank_batch, sampler=sampler, drop_last=True,
                        num_workers=args.num_workers, pin_memory=env.device.type == "cuda",
                        generator=worker_seeds)
    return loader, sampler, worker_seeds


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Train one stage; return a summary (checkpoint paths, losses, steps). See module docstring."""
    env = distributed.setup(args.device)
    try:
        return _train(args, env)
    finally:
        distributed.cleanup(env)


def _train(args: argparse.Namespace, env: distributed.DistEnv) -> dict[str, Any]:
    sizes = check_args(args, env)
    out_dir = Path(args.save_path) / args.run_name / args.train_type
    last_path = out_dir / "last.pth"
    resume_path, resume = open_resume(args, last_path, env)
    finetune_from = stage_inputs(args) if args.train_type == "finetune" and not resume else None
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.benchmark = env.device.type == "cuda"

    loader, sampler, worker_seeds = build_loader(args, env)
    steps_per_epoch = len(loader)
    model = build_model(args, resume, finetune_from, env)
    if args.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(model, args)
    scaler = torch.amp.GradScaler(env.device.type, enabled=args.amp == "fp16")
    net = model if not env.is_distributed else DistributedDataParallel(
        model, device_ids=[env.device] if env.device.type == "cuda" else None)
    start_epoch, start_batch, global_step = 0, 0, 0
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        if args.amp == "fp16":
            scaler.load_state_dict(resume["scaler"])
        start_epoch, start_batch = resume["epoch"], resume["batch_in_epoch"]
        global_step = resume["global_step"]
        restore_rng(resume["rng"][env.rank % len(resume["rng"])])

    writer = None
    if env.is_main:
        run_info = collect_run_info(vars(args), env.world_size, str(env.device))
        run_info["resumed_from"] = str(resume_path) if resume_path else None
        save_json(run_info, out_dir / "run.json")
        writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=global_step or None)

    def checkpoint(epoch: int, batch_in_epoch: int) -> None:
        """Write last.pth: resume at batch ``batch_in_epoch`` of 0-based ``epoch``."""
        rng_states = distributed.gather_objects(capture_rng(), env)  # collective: every rank
        if env.is_main:
            save_train_state(
                last_path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                scaler=scaler.state_dict() if args.amp == "fp16" else None, epoch=epoch,
                batch_in_epoch=batch_in_epoch, global_step=global_step,
                finished=epoch >= args.epoch, rng=rng_states, args=vars(args),
                world_size=env.world_size)

    epoch_checkpoints, epoch_losses = [], []
    stopped, samples, train_time = False, 0, 0.0
    for epoch in range(start_epoch, args.epoch):
        lr = lr_for_epoch(args, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        sampler.set_position(epoch, start_batch * loader.batch_size)
        worker_seeds.manual_seed((args.seed * 1_000_003 + epoch) * 1024 + env.rank)
        set_train_mode(net, args.freeze_bn)
        sums, count, done = torch.zeros(2, dtype=torch.float64), 0, start_batch
        bar = tqdm(loader, total=steps_per_epoch - start_batch, disable=not env.is_main,
                   desc=f"{args.train_type} {epoch + 1}/{args.epoch}", dynamic_ncols=True)
        tick = time.perf_counter()
        for done, batch in enumerate(bar, start=start_batch + 1):
            try:
                losses = train_batch(net, optimizer, scaler, batch, sizes, args, env).mean(0)
            except FloatingPointError as error:
                kept = (f"{last_path} is the last good checkpoint (continue with --resume "
                        f"{last_path})" if last_path.is_file() else "no checkpoint was written")
                raise FloatingPointError(
                    f"Training stopped: {error} in epoch {epoch + 1}, batch {done}. {kept}. "
                    "Lower --lr, or use --amp bf16/off if fp16 overflowed.") from None
            seconds = time.perf_counter() - tick  # data wait + every rate's step
            train_time, samples, global_step = train_time + seconds, samples + args.batchsize, \
                global_step + 1
            sums, count = sums + losses, count + 1
            if writer is not None:
                for tag, value in (("loss/total", losses.sum()), ("loss/pred_s", losses[0]),
                                   ("loss/pred_e", losses[1]), ("lr", lr),
                                   ("throughput/samples_per_s", args.batchsize / seconds)):
                    writer.add_scalar(tag, float(value), global_step)
                bar.set_postfix(loss=f"{sums.sum().item() / count:.4f}", lr=f"{lr:.1e}",
                                samples_s=f"{args.batchsize / seconds:.1f}")
            stopped = bool(args.stop_after) and global_step >= args.stop_after
            if done < steps_per_epoch and (stopped or (args.save_every and
                                                       global_step % args.save_every == 0)):
                checkpoint(epoch, done)
            if stopped:
                break
            tick = time.perf_counter()  # checkpoint time is not throughput
        bar.close()
        if count:
            epoch_losses.append({"epoch": epoch + 1, "batches": count,
                                 "loss_s": sums[0].item() / count,
                                 "loss_e": sums[1].item() / count})
        if done == steps_per_epoch:
            checkpoint(epoch + 1, 0)
            number = epoch + 1
            if env.is_main and (number >= args.save_from_epoch or number == args.epoch):
                path = out_dir / f"FSNet-{number}epoch.pth"  # the release's format: module.<key>
                save_checkpoint({f"module.{k}": v for k, v in model.state_dict().items()}, path)
                epoch_checkpoints.append(str(path))
        start_batch = 0
        if stopped:
            break

    summary = {
        "train_type": args.train_type, "out_dir": str(out_dir), "last_checkpoint": str(last_path),
        "epoch_checkpoints": epoch_checkpoints, "epoch_losses": epoch_losses,
        "global_step": global_step, "finished": not stopped and args.epoch > 0,
        "stopped_early": stopped, "world_size": env.world_size,
        "samples_per_epoch": steps_per_epoch * args.batchsize,
        "samples_per_s": samples / train_time if samples else None,
        "resumed_from": str(resume_path) if resume_path else None,
        "params_sha256": params_digest(model),
    }
    if env.is_main:
        writer.close()
        save_json({**run_info, "summary": summary}, out_dir / "run.json")
    distributed.barrier(env)
    return summary


if __name__ == "__main__":
    main(get_args_parser().parse_args())
