"""train.py end to end on the quick toy set (CPU, 64x64, batch 2, a step or two per run).

FSNet-ResNet-50 has 102 M parameters, so every run here is a real (if tiny) training run and
each ``last.pth`` is ~0.8 GB: the tests share one toy set and one three-stage chain.
"""
from __future__ import annotations

import json
import os
import shlex
from dataclasses import asdict
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import train
from lib.checkpoint import read_checkpoint
from lib.fsnet import FSNet, FSNetConfig
from utils.data.dataset import TrainDataset
from utils.training.distributed import DistEnv
from utils.training.finetune_init import check_stage_finished, flow_keys_to_copy, init_finetune
from utils.data.synthetic import make_toy_dataset
from utils.training.timing import PHASES

STAGES = ("pretrain_rgb", "pretrain_flow", "finetune")


def _argv(toy: Path, save_path: Path, train_type: str, *extra: str) -> list[str]:
    return ["--train_type", train_type, "--data_root", str(toy), "--save_path", str(save_path),
            "--backbone", "resnet50", "--no_imagenet", "--trainsize", "64", "--batchsize", "2",
            "--max_samples", "2", "--epoch", "1", "--rates", "1", "--num_workers", "0",
            "--device", "cpu", *extra]


def run(toy: Path, save_path: Path, train_type: str, *extra: str) -> dict:
    """train.train on the toy set with the tiny test recipe (``extra`` overrides flags)."""
    return asdict(train.train(train.parse_config(_argv(toy, save_path, train_type, *extra))))


def assert_time_adds_up(summary: dict) -> None:
    """The run summary's time shares exist, are >= 0 and add up to at most the wall time."""
    shares = [summary[name] for name in PHASES]
    assert all(share >= 0 for share in shares) and summary["step_s"] > 0, summary
    assert sum(shares) <= summary["wall_s"] + 0.01, summary  # the keys are rounded to 1 ms
    assert summary["whole_run_samples_per_s"] > 0


def _train_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "Toy", quick=True)


@pytest.fixture(scope="module")
def chain(toy: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The three stages with default chaining; pretrain_flow also exercises multi-scale resizing."""
    root = tmp_path_factory.mktemp("snap")
    with pytest.warns(UserWarning, match="random initialisation"):
        rgb = run(toy, root, "pretrain_rgb")
    summaries = {
        "pretrain_rgb": rgb,
        "pretrain_flow": run(toy, root, "pretrain_flow", "--rates", "0.5", "1"),
        "finetune": run(toy, root, "finetune"),
    }
    return root / "FSNet", summaries


def test_three_stages_chain_and_write_their_outputs(chain: tuple[Path, dict]) -> None:
    run_dir, summaries = chain
    assert summaries["pretrain_flow"]["global_step"] == 1  # one batch, two rates
    for stage in STAGES:
        out, summary = run_dir / stage, summaries[stage]
        assert summary["finished"] and summary["epoch_checkpoints"] == [str(out / "FSNet-1epoch.pth")]
        info = json.loads((out / "run.json").read_text())
        assert info["args"]["train_type"] == stage and info["world_size"] == 1
        assert info["packages"]["torch"] and "commit" in info["git"]
        assert info["summary"]["params_sha256"] == summary["params_sha256"]
        assert_time_adds_up(info["summary"])
        assert summary["steady_samples_per_s"] is None  # one step: no steady state after it
        assert any(p.name.startswith("events.") for p in (out / "tensorboard").iterdir())
        assert _train_state(out / "last.pth")["finished"] is True
    assert summaries["finetune"]["epoch_losses"][0]["loss_s"] > 0
    # The epoch file holds the release's keys ('module.' + the 2,160 keys, equal to last.pth)
    # and the architecture; so do last.pth and run.json.
    saved = torch.load(run_dir / "finetune" / "FSNet-1epoch.pth", weights_only=True)
    epoch_file, last_pth = saved["model"], _train_state(run_dir / "finetune" / "last.pth")
    last = last_pth["model"]
    config = asdict(FSNetConfig(backbone="resnet50"))
    assert saved["config"] == last_pth["config"] == config
    assert json.loads((run_dir / "finetune" / "run.json").read_text())["config"] == config
    assert len(epoch_file) == 2160 and all(k.startswith("module.") for k in epoch_file)
    assert all(torch.equal(epoch_file["module." + k], v) for k, v in last.items())


@pytest.mark.parametrize("flow_bn_stats", ["rgb", "flow"])
def test_finetune_init_copies_exactly_the_documented_tensors(chain: tuple[Path, dict],
                                                             flow_bn_stats: str) -> None:
    run_dir, _ = chain
    rgb_path, flow_path = (run_dir / s / "last.pth" for s in STAGES[:2])
    rgb, flow = read_checkpoint(rgb_path).state, read_checkpoint(flow_path).state
    model = FSNet("resnet50")
    copied = init_finetune(model, rgb_path, flow_path, flow_bn_stats)
    assert copied == flow_keys_to_copy(list(rgb), flow_bn_stats)
    for key, value in model.state_dict().items():
        expected = flow[key] if key in copied else rgb[key]
        assert torch.equal(value, expected), key
    # the stages really differ in what is copied and in what is not (the test is not vacuous)
    for key in ("resnet.layer1_flow.0.bn1.running_mean", "resnet.layer1_flow.0.conv1.weight",
                "atten_flow_1.1.weight"):
        assert not torch.equal(rgb[key], flow[key]), key


def test_overfitting_a_fixed_batch_lowers_the_loss(toy: Path) -> None:
    torch.manual_seed(0)
    args = train.parse_config(["--train_type", "finetune", "--lr", "1e-2"])
    model = FSNet("resnet50")
    model.train()
    optimizer = train.build_optimizer(model, args)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    data = TrainDataset(toy, "finetune", trainsize=64)
    batch = [torch.stack(t) for t in zip(data[0], data[1])]
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    losses = train.train_batch(model, optimizer, scaler, batch, [64] * 8, args, env).sum(1)
    assert losses[-1] == losses.min() and losses[-1] < 0.9 * losses[0], losses


def test_resume_is_bit_identical(toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 2 epochs x 2 batches, lr decay at epoch 1; B stops after batch 1 (mid-epoch), then resumes
    recipe = ("--max_samples", "4", "--epoch", "2", "--decay_epoch", "1", "--save_from_epoch", "9")
    logged, log_batches = [], train.log_batches
    monkeypatch.setattr(train, "log_batches", lambda run, bar, losses, *rest: (
        logged.append(len(losses)), log_batches(run, bar, losses, *rest)))
    described = []  # the per-tensor check runs only when the one-pass check finds a NaN/inf
    monkeypatch.setattr(train, "first_non_finite", lambda state: described.append(1))
    straight = run(toy, tmp_path, "pretrain_flow", *recipe, "--run_name", "A")
    assert logged == [1, 1, 2]  # the first batch is waited for alone, then once per epoch end
    assert not described
    stopped = run(toy, tmp_path, "pretrain_flow", *recipe, "--run_name", "B", "--stop_after", "1")
    last_b = tmp_path / "B" / "pretrain_flow" / "last.pth"
    assert stopped["stopped_early"] and _train_state(last_b)["batch_in_epoch"] == 1
    with pytest.raises(ValueError, match="unfinished pretrain_flow run"):
        check_stage_finished(last_b, "pretrain_flow")
    resumed = run(toy, tmp_path, "pretrain_flow", *recipe, "--run_name", "B", "--resume", "auto")
    assert straight["global_step"] == resumed["global_step"] == 4 and resumed["finished"]
    assert_time_adds_up(straight)
    assert straight["steady_samples_per_s"] > 0 and straight["checkpoint_s"] > 0
    a, b = (_train_state(tmp_path / n / "pretrain_flow" / "last.pth") for n in "AB")
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), "weights differ"
    momenta = [(sa["momentum_buffer"], sb["momentum_buffer"]) for sa, sb in
               zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values())]
    assert momenta and all(torch.equal(x, y) for x, y in momenta)
    assert a["optimizer"]["param_groups"][0]["lr"] == pytest.approx(2e-4)
    assert straight["params_sha256"] == resumed["params_sha256"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, argv: list[str], port: int, out: str) -> None:
    """One torchrun-like rank: set the rendezvous environment, train, write the summary."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    summary = asdict(train.train(train.parse_config(argv)))
    Path(out, f"rank{rank}.json").write_text(json.dumps(summary))


def test_ddp_two_ranks_equal_single_process(toy: Path, tmp_path: Path) -> None:
    # BN frozen (--freeze_bn): a sample's gradient then does not depend on the rest of its batch,
    # so 2 ranks x 2 samples must equal 1 process x 4 samples. (With batch-statistics BN the two
    # differ by design, as with the official DataParallel; torch's SyncBatchNorm is CUDA-only.)
    recipe = ("--batchsize", "4", "--max_samples", "4", "--rates", "0.5", "1", "--freeze_bn")
    argv = _argv(toy, tmp_path, "pretrain_flow", *recipe, "--run_name", "ddp")
    mp.spawn(_ddp_worker, args=(argv, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["world_size"] == 2 and ranks[0]["global_step"] == 1
    assert ranks[0]["params_sha256"] == ranks[1]["params_sha256"]  # replicas in sync
    single = run(toy, tmp_path, "pretrain_flow", *recipe, "--run_name", "single")
    assert single["global_step"] == 1
    ddp_state = _train_state(tmp_path / "ddp" / "pretrain_flow" / "last.pth")["model"]
    one_state = _train_state(tmp_path / "single" / "pretrain_flow" / "last.pth")["model"]
    init = FSNet("resnet50").state_dict()  # seed 0 init, as in both runs (checks a step happened)
    moved = 0
    for key, value in one_state.items():
        torch.testing.assert_close(ddp_state[key], value, rtol=1e-5, atol=1e-7, msg=key)
        moved += not torch.equal(value, init[key])
    assert moved > 100


def test_nan_loss_stops_and_keeps_last_good_checkpoint(toy: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = train.bce_loss

    def poisoned(*tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(1)
        loss_s, loss_e = real(*tensors)
        return (loss_s * float("nan"), loss_e) if len(calls) == 2 else (loss_s, loss_e)

    monkeypatch.setattr(train, "bce_loss", poisoned)
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* batch 2\. .*last good") as stop:
        run(toy, tmp_path, "pretrain_rgb", "--max_samples", "4", "--save_every", "1")
    out = tmp_path / "FSNet" / "pretrain_rgb"
    state = _train_state(out / "last.pth")
    assert state["global_step"] == 1 and state["batch_in_epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    # the advice is a complete command that works: it resumes the kept state at lr/10, logged
    command = str(stop.value).split("learning rate: ", 1)[1]
    argv = shlex.split(command)
    assert argv[:2] == ["python", "train.py"] and f"--resume {out / 'last.pth'}" in command
    assert train.main(argv[2:]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["changed_on_resume"] == {"lr": [2e-3, 2e-4]} and info["summary"]["finished"]
    assert info["summary"]["global_step"] == 2 and info["resumed_from"] == str(out / "last.pth")


def test_clear_errors(toy: Path, tmp_path: Path, chain: tuple[Path, dict]) -> None:
    with pytest.raises(FileNotFoundError, match="Training folder not found"):
        run(tmp_path / "nowhere", tmp_path, "pretrain_rgb")
    with pytest.raises(FileNotFoundError, match="finetune needs the pretrain_rgb weights"):
        run(toy, tmp_path, "finetune")
    with pytest.raises(ValueError, match="fewer than one batch"):
        run(toy, tmp_path, "pretrain_rgb", "--batchsize", "64", "--max_samples", "3")
    run_dir = chain[0]
    with pytest.raises(FileExistsError, match="--resume auto"):
        run(toy, run_dir.parent, "pretrain_rgb")
    with pytest.raises(ValueError, match="holds an FSNet with backbone='resnet50' but this run "
                                         "trains backbone='res2net50'"):
        run(toy, tmp_path, "finetune", "--backbone", "res2net50",
            "--rgb_ckpt", str(run_dir / "pretrain_rgb" / "FSNet-1epoch.pth"),
            "--flow_ckpt", str(run_dir / "pretrain_flow" / "last.pth"))
    with pytest.raises(ValueError, match="multiple of 32"):
        run(toy, tmp_path, "pretrain_rgb", "--trainsize", "80")
