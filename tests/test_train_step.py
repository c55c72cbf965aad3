"""The training step: no host sync inside it, a non-finite loss skipped on the device, the fused
optimiser equal to the plain one, and --cuda_graphs (refused on the CPU; its plumbing checked
with a stand-in for the CUDA capture)."""
from __future__ import annotations

import copy

import pytest
import torch

import train
from lib.fsnet import FSNet
from utils.training.cuda_graphs import GraphedForward
from utils.training.distributed import DistEnv

ENV = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
SIZES = [32, 64]


def _config(*flags: str) -> train.TrainConfig:
    return train.parse_config(["--train_type", "finetune", "--lr", "1e-2", *flags])


def _batch(seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    image, flow = (torch.randn(2, 3, 64, 64, generator=gen) for _ in range(2))
    return [image, flow, (torch.rand(2, 1, 64, 64, generator=gen) > 0.5).float()]


@pytest.fixture(scope="module")
def model() -> FSNet:
    torch.manual_seed(0)
    return FSNet("resnet50").train()


def _steps(model: FSNet, optimizer: torch.optim.Optimizer, config: train.TrainConfig,
           batches: int = 2, forward=None) -> torch.Tensor:
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return torch.stack([train.train_batch(model, optimizer, scaler, _batch(seed), SIZES, config,
                                          ENV, forward) for seed in range(batches)])


def test_fused_optimizer_gives_the_plain_sgd_results(model):
    config = _config()
    fused_model, plain_model = copy.deepcopy(model), copy.deepcopy(model)
    fused = train.build_optimizer(fused_model, config)
    assert all(group["fused"] for group in fused.param_groups)
    plain = torch.optim.SGD([p for p in plain_model.parameters() if p.requires_grad],
                            lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    assert torch.equal(_steps(fused_model, fused, config), _steps(plain_model, plain, config))
    for a, b in zip(fused_model.state_dict().values(), plain_model.state_dict().values()):
        assert torch.equal(a, b)


def test_the_step_never_waits_for_the_device(model, monkeypatch):
    """No ``.item()``, ``bool(tensor)``, ``.tolist()`` or copy to the host inside the step."""
    config = _config("--channels_last")
    net = copy.deepcopy(model).to(memory_format=torch.channels_last)
    optimizer = train.build_optimizer(net, config)

    def sync(*args, **kwargs):
        raise AssertionError("host sync inside the training step")
    for name in ("item", "__bool__", "tolist", "cpu"):
        monkeypatch.setattr(torch.Tensor, name, sync)
    losses = _steps(net, optimizer, config, batches=1)
    monkeypatch.undo()
    assert losses.shape == (1, len(SIZES), 2) and torch.isfinite(losses).all()


def test_a_non_finite_loss_never_reaches_the_weights(model, monkeypatch):
    config = _config()
    net = copy.deepcopy(model)
    optimizer = train.build_optimizer(net, config)
    _steps(net, optimizer, config, batches=1)  # momentum buffers exist
    before = copy.deepcopy(net.state_dict()), copy.deepcopy(optimizer.state_dict()["state"])
    real = train.bce_loss
    monkeypatch.setattr(train, "bce_loss", lambda *t: (real(*t)[0] * float("nan"), real(*t)[1]))
    losses = _steps(net, optimizer, config, batches=1)
    assert train.first_non_finite_loss(losses, SIZES)[0] == 0
    assert "non-finite loss (loss_s=nan" in train.first_non_finite_loss(losses, SIZES)[1]
    parameters = {name for name, _ in net.named_parameters()}
    for name, value in net.state_dict().items():
        if name in parameters:
            assert torch.equal(value, before[0][name]), name
    for key, state in optimizer.state_dict()["state"].items():
        assert torch.equal(state["momentum_buffer"], before[1][key]["momentum_buffer"])


def test_optimizer_state_of_an_older_run_keeps_the_fused_kernel(model):
    config = _config()
    params = [p for p in model.parameters() if p.requires_grad]
    old = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum).state_dict()
    optimizer = train.build_optimizer(model, config)
    train.load_optimizer_state(optimizer, old)
    assert all(group["fused"] for group in optimizer.param_groups)


def test_cuda_graphs_and_log_every_are_checked_before_work():
    with pytest.raises(train.BadInputError, match="--cuda_graphs needs CUDA.*--log_every 0"):
        train.check_config(_config("--cuda_graphs", "--log_every", "0"), ENV)


def test_graphed_forward_dispatches_by_size_and_restores_bn_statistics(model):
    """With a stand-in for ``torch.cuda.make_graphed_callables`` that runs its warm-up like the
    real one (moving BN statistics), training through GraphedForward equals plain training."""
    config = _config()

    def capture(callables, samples):
        for callable_, sample in zip(callables, samples):
            callable_(*sample)  # warm-up: BN running statistics move
        return callables
    graphed_model, plain_model = copy.deepcopy(model), copy.deepcopy(model)
    forward = GraphedForward(graphed_model, SIZES, 2, None, torch.contiguous_format,
                             torch.device("cpu"), make_graphed=capture)
    assert sorted(forward.by_size) == SIZES
    for a, b in zip(graphed_model.state_dict().values(), plain_model.state_dict().values()):
        assert torch.equal(a, b)
    graphed = _steps(graphed_model, train.build_optimizer(graphed_model, config), config,
                     forward=forward)
    assert torch.equal(graphed, _steps(plain_model, train.build_optimizer(plain_model, config), config))
