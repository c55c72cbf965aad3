"""Model-free parts of the training recipe: flags, schedule, sizes, sampler, finetune key choice,
RNG and resume-argument checks. (The runs themselves are in test_train.py.)"""
from __future__ import annotations

import functools
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from lib.fsnet import FSNet
from utils.training.distributed import DistEnv, ResumableDistributedSampler, per_rank_batch
from utils.training.finetune_init import finetune_state_dict, flow_keys_to_copy
from utils.training.state import (all_finite, capture_rng, check_resume_args, load_train_state,
                                  restore_rng)


@functools.lru_cache(maxsize=None)
def _keys(backbone: str) -> tuple[str, ...]:
    """state_dict keys of FSNet with ``backbone`` (resnet50: the release's 2,160 keys)."""
    return tuple(FSNet(backbone).state_dict())


def test_defaults_are_the_papers() -> None:
    args = train.parse_config(["--train_type", "finetune"])
    assert args == train.TrainConfig("finetune") and args.device == "auto" and args.workers == 4
    assert (args.epoch, args.lr, args.batchsize, args.trainsize) == (20, 2e-3, 16, 352)
    assert (args.momentum, args.weight_decay, args.rates) == (0.9, 5e-4, [0.75, 1.0, 1.25])
    assert (args.decay_epoch, args.gamma, args.amp, args.flow_bn_stats) == (19, 0.1, "off", "rgb")


def test_multiscale_sizes_match_official_rounding() -> None:
    assert train.scale_sizes(352, [0.75, 1, 1.25]) == [256, 352, 448]
    assert train.scale_sizes(64, [0.5, 1]) == [32, 64]


def test_lr_schedule_last_epoch_decayed() -> None:
    config = train.parse_config(["--train_type", "pretrain_rgb"])
    lrs = [train.lr_at(e, config) for e in range(config.epoch)]
    assert lrs[:19] == [2e-3] * 19 and lrs[19] == pytest.approx(2e-4)
    config.decay_epoch = 20  # pre-PyTorch-1.1 behaviour: never decays within 20 epochs
    assert {train.lr_at(e, config) for e in range(20)} == {2e-3}


def test_old_flag_spellings_are_aliases() -> None:
    old = train.parse_config(["--train_type", "finetune", "--num_workers", "0",
                              "--dataset_path", "data"])
    new = train.parse_config(["--train_type", "finetune", "--workers", "0", "--data_root", "data"])
    assert old == new and (new.workers, new.data_root) == (0, "data")


def test_config_argv_round_trips() -> None:
    config = train.parse_config(["--train_type", "pretrain_flow", "--lr", "1e-4", "--rates", "1",
                                 "--hflip", "--resume", "auto", "--workers", "0"])
    argv = train.config_argv(config)
    assert train.parse_config(argv) == config
    assert "--epoch" not in argv  # defaults are left out


def test_per_rank_batch() -> None:
    assert per_rank_batch(16, 4) == 4
    with pytest.raises(ValueError, match="not divisible by the world size 3"):
        per_rank_batch(16, 3)


def _env(rank: int, world: int) -> DistEnv:
    return DistEnv(rank=rank, world_size=world, local_rank=rank, device=torch.device("cpu"))


def test_sampler_shards_compose_the_global_batch_and_resume() -> None:
    data, batch, epoch = list(range(11)), 4, 3
    single = ResumableDistributedSampler(data, _env(0, 1), seed=5)
    single.set_position(epoch)
    order = list(single)
    steps = len(order) // batch
    shards = []
    for rank in range(2):
        sampler = ResumableDistributedSampler(data, _env(rank, 2), seed=5)
        sampler.set_position(epoch)
        shards.append(list(sampler))
    for step in range(steps):  # ranks' per-step batches (batch/2 each) = the single-process batch
        half = batch // 2
        merged = shards[0][step * half:(step + 1) * half] + shards[1][step * half:(step + 1) * half]
        assert sorted(merged) == sorted(order[step * batch:(step + 1) * batch])
    resumed = ResumableDistributedSampler(data, _env(1, 2), seed=5)
    resumed.set_position(epoch, start=2)
    assert list(resumed) == shards[1][2:] and len(resumed) == len(shards[1]) - 2
    other_epoch = ResumableDistributedSampler(data, _env(0, 1), seed=5)
    other_epoch.set_position(epoch + 1)
    assert list(other_epoch) != order


@pytest.mark.parametrize("backbone", ["resnet50", "res2net50"])
def test_flow_keys_are_the_flow_backbone_only(backbone: str) -> None:
    keys = list(_keys(backbone))
    official = flow_keys_to_copy(keys, "rgb")
    with_stats = flow_keys_to_copy(keys, "flow")
    assert official and all(k.startswith("resnet.") and "_flow." in k for k in with_stats)
    assert not any(k.endswith(("running_mean", "running_var")) for k in official)
    assert any(k.endswith("num_batches_tracked") for k in official)  # copied, as officially
    stats = set(with_stats) - set(official)
    assert stats and all(k.endswith(("running_mean", "running_var")) for k in stats)
    assert not any(k.startswith("atten_flow") or k.startswith("reduce_m") for k in with_stats)
    # every flow-backbone key in the release is covered
    flow_backbone = [k for k in keys if k.split(".")[1].endswith("_flow")]
    assert set(flow_backbone) == set(with_stats)


@pytest.mark.parametrize("mode", ["rgb", "flow"])
def test_finetune_state_dict_takes_each_tensor_from_the_documented_stage(mode: str) -> None:
    keys = list(_keys("resnet50"))
    rgb = {k: torch.tensor([float(i)]) for i, k in enumerate(keys)}
    flow = {k: torch.tensor([-float(i) - 1]) for i, k in enumerate(keys)}
    merged = finetune_state_dict(rgb, flow, mode)
    from_flow = set(flow_keys_to_copy(keys, mode))
    assert list(merged) == keys
    for key in keys:
        assert merged[key] is (flow[key] if key in from_flow else rgb[key]), key


def test_finetune_state_dict_rejects_foreign_flow_checkpoint() -> None:
    keys = list(_keys("resnet50"))
    rgb = {k: torch.zeros(1) for k in keys}
    with pytest.raises(ValueError, match="lacks"):
        finetune_state_dict(rgb, {"other.weight": torch.zeros(1)})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_all_finite_finds_any_nan_or_inf(bad: float) -> None:
    state = {"model": {"w": torch.ones(3, 2), "steps": torch.tensor(7), "empty": torch.zeros(0),
                       "half": torch.ones(4, dtype=torch.float16)},
             "optimizer": {"state": {0: {"momentum_buffer": torch.zeros(5)}},
                           "param_groups": [{"lr": 0.1, "params": [0]}]}}
    assert all_finite(state) and all_finite({"no tensors": [1, 2.0, None]})
    for where in (state["model"]["half"], state["optimizer"]["state"][0]["momentum_buffer"]):
        where[-1] = bad
        assert not all_finite(state), where
        where[-1] = 0


def test_rng_round_trip() -> None:
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = capture_rng()
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_resume_refuses_changed_recipe(tmp_path: Path) -> None:
    args = asdict(train.parse_config(["--train_type", "finetune"]))
    assert check_resume_args(args, {**args, "epoch": 30, "workers": 0}, tmp_path) == {}  # allowed
    with pytest.raises(ValueError, match="--batchsize: checkpoint 16, now 8"):
        check_resume_args(args, {**args, "batchsize": 8, "lr": 1e-4}, tmp_path)
    # lr and amp may change on purpose (the way out of a diverged run); the change is returned
    assert check_resume_args(args, {**args, "lr": 1e-4, "amp": "bf16"}, tmp_path) == {
        "lr": [2e-3, 1e-4], "amp": ["off", "bf16"]}


def _env1() -> DistEnv:
    return _env(0, 1)


def test_argument_problems_are_reported_together() -> None:
    config = train.parse_config(["--train_type", "finetune", "--lr", "nan", "--trainsize", "80",
                                 "--batchsize", "1", "--workers", "-1", "--epoch", "0"])
    with pytest.raises(ValueError) as error:
        train.check_config(config, _env1())
    message = str(error.value)
    for fragment in ("5 invalid", "--lr nan", "--trainsize 80", "e.g. 64", "--batchsize 1",
                     "--workers -1", "--epoch 0"):
        assert fragment in message, fragment
    frozen = train.parse_config(["--train_type", "finetune", "--batchsize", "1", "--freeze_bn"])
    assert train.check_config(frozen, _env1()) == [256, 352, 448]  # 1 per rank is fine with frozen BN
    with pytest.raises(ValueError, match="multiple of the world size 3"):
        train.check_config(train.parse_config(["--train_type", "finetune"]), _env(0, 3))


def test_load_train_state_names_the_file_and_the_fix(tmp_path: Path) -> None:
    garbage = tmp_path / "last.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"last\.pth.*--overwrite"):
        load_train_state(garbage)
    bare = tmp_path / "FSNet-1epoch.pth"
    torch.save({"module.a.weight": torch.zeros(1)}, bare)
    with pytest.raises(ValueError, match="cannot be resumed"):
        load_train_state(bare)
