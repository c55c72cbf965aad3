"""FSNet model: shapes, checkpoint layout, frozen modules, gradients, input check, fast path."""
from __future__ import annotations

import copy
import csv
import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn

import lib.backbones.imagenet as imagenet
from lib.backbones import BACKBONES, load_imagenet_weights, resnet
from lib.fast import build_fast_model
from lib.fsnet import FSNet
from tests.random_weights import randomize_weights

TSV = Path(__file__).parent / "fixtures" / "fsnet_resnet50_state_dict.tsv"
FROZEN_PREFIXES = ("resnet.conv1.", "resnet.bn1.", "RGBF_conv3.")


@pytest.fixture(scope="module")
def models() -> dict[str, FSNet]:
    torch.manual_seed(0)
    return {name: FSNet(backbone=name) for name in BACKBONES}


def _inputs(batch: int, height: int, width: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, height, width, generator=gen),
            torch.randn(batch, 3, height, width, generator=gen))


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("size", [(64, 64), (96, 128)])
def test_forward_shapes(models, backbone, size):
    model = models[backbone].eval()
    with torch.no_grad():
        pred_s, pred_e = model(*_inputs(2, *size))
    assert pred_s.shape == pred_e.shape == (2, 1, *size)
    assert torch.isfinite(pred_s).all() and torch.isfinite(pred_e).all()


def test_resnet50_state_dict_matches_release_listing(models):
    with open(TSV, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    state = models["resnet50"].state_dict()
    assert list(state) == [row["key"] for row in rows]
    params = dict(models["resnet50"].named_parameters())
    for row in rows:
        tensor = state[row["key"]]
        shape = "x".join(map(str, tensor.shape)) if tensor.dim() else "scalar"
        assert shape == row["shape"], row["key"]
        assert str(tensor.dtype).removeprefix("torch.") == row["dtype"], row["key"]
        assert (row["key"] in params) == (row["kind"] == "param"), row["key"]
    assert len(rows) == 2160
    assert sum(p.numel() for p in params.values()) == 102_301_698


def _stream_state(model: FSNet, suffix: str) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in model.resnet.state_dict().items():
        first, _, rest = key.partition(".")
        if suffix and first.endswith(suffix):
            out[f"{first[:-len(suffix)]}.{rest}"] = value
        elif not suffix and not first.endswith(("_rgb", "_flow")):
            out[key] = value
    return out


def test_res2net_stream_key_layout(models):
    model = models["res2net50"]
    streams = [_stream_state(model, s) for s in ("_rgb", "_flow", "")]
    assert list(streams[0]) == list(streams[1]) == list(streams[2])
    keys = list(streams[0])
    # 524 keys of res2net50_v1b_26w_4s minus fc.weight / fc.bias
    assert len(keys) == 522
    assert keys[:7] == ["conv1.0.weight", "conv1.1.weight", "conv1.1.bias", "conv1.1.running_mean",
                        "conv1.1.running_var", "conv1.1.num_batches_tracked", "conv1.3.weight"]
    block = [k.removeprefix("layer1.0.") for k in keys if k.startswith("layer1.0.")]
    assert block[0] == "conv1.weight" and block[-6:] == [
        "downsample.1.weight", "downsample.2.weight", "downsample.2.bias",
        "downsample.2.running_mean", "downsample.2.running_var", "downsample.2.num_batches_tracked"]
    assert "convs.2.weight" in block and "bns.2.running_var" in block
    shapes = {k: tuple(v.shape) for k, v in streams[0].items()}
    assert shapes["layer1.0.conv1.weight"] == (104, 64, 1, 1)
    assert [shapes[f"layer{i}.0.convs.0.weight"] for i in range(1, 5)] == [
        (26, 26, 3, 3), (52, 52, 3, 3), (104, 104, 3, 3), (208, 208, 3, 3)]
    stream_params = sum(v.numel() for k, v in streams[0].items() if "running" not in k
                        and "num_batches" not in k)
    assert stream_params == 23_669_352


def test_heads_identical_across_backbones(models):
    heads = [{k: v.shape for k, v in models[b].state_dict().items() if not k.startswith("resnet.")}
             for b in BACKBONES]
    assert list(heads[0].items()) == list(heads[1].items())


@pytest.mark.parametrize("backbone", BACKBONES)
def test_gradients_reach_trainable_and_never_frozen(models, backbone):
    model = models[backbone].train()
    model.zero_grad(set_to_none=True)
    image, flow = _inputs(2, 64, 64)
    pred_s, pred_e = model(image, flow)
    target = torch.rand_like(pred_s)
    loss = (nn.functional.binary_cross_entropy_with_logits(pred_s, target)
            + nn.functional.binary_cross_entropy_with_logits(pred_e, target))
    loss.backward()
    frozen = {k for k, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {k for k, _ in model.named_parameters() if k.startswith(FROZEN_PREFIXES)}
    assert frozen  # the dead modules exist and are frozen
    for name, param in model.named_parameters():
        if name in frozen:
            assert param.grad is None, name
        else:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
    model.zero_grad(set_to_none=True)
    model.eval()


@pytest.mark.parametrize("size,nearest", [((100, 130), "96x128"), ((352, 20), "352x32")])
def test_size_not_multiple_of_32_names_nearest(models, size, nearest):
    with pytest.raises(ValueError, match=nearest):
        models["resnet50"](*_inputs(1, *size))


def test_flow_shape_must_match_image(models):
    image, _ = _inputs(1, 64, 64)
    with pytest.raises(ValueError, match="flow"):
        models["resnet50"](image, torch.zeros(1, 3, 64, 96))


@pytest.mark.parametrize("backbone", BACKBONES)
def test_fast_path_matches_plain_eval_forward(models, backbone):
    model = randomize_weights(copy.deepcopy(models[backbone]), seed=1).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = build_fast_model(model, backend="eager")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert not hasattr(fast.net, "output_e")
    for size in [(64, 64), (96, 128)]:
        image, flow = _inputs(2, *size, seed=2)
        with torch.no_grad():
            pred_s, _ = model(image, flow)
        fast_s = fast(image, flow)
        assert fast_s.shape == (2, 1, *size)
        assert pred_s.std() > 1e-2  # outputs vary, so a wrong fold would show
        assert (fast_s - pred_s).abs().max() <= 1e-4
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the source is untouched
    with pytest.raises(RuntimeError, match="inference-only"):
        fast.train()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_fast_path_jit_backend_matches_and_caches_per_shape(models, backbone):
    model = randomize_weights(copy.deepcopy(models[backbone]), seed=3).eval()
    fast = build_fast_model(model)  # default "auto": TorchScript + oneDNN on CPU float32
    image, flow = _inputs(2, 64, 64, seed=4)
    assert fast.uses_jit(image)
    with torch.no_grad():
        pred_s, _ = model(image, flow)
    assert pred_s.std() > 1e-2
    for _ in range(2):  # second call reuses the cached trace
        assert (fast(image, flow) - pred_s).abs().max() <= 1e-4
    assert len(fast._traces) == 1
    with pytest.raises(ValueError, match="multiple"):  # the input check still runs
        fast(*_inputs(1, 64, 70))
    fast.to(torch.float64)  # moving the module drops traces that hold the old weights
    assert not fast._traces and not fast.uses_jit(image.double())
    assert (fast(image.double(), flow.double()) - pred_s.double()).abs().max() <= 1e-4


def _write_imagenet_file(model: FSNet, folder: Path, name: str, seed: int) -> dict:
    """A fake ImageNet state_dict with the stream layout + fc, without num_batches_tracked."""
    gen = torch.Generator().manual_seed(seed)
    source = {k: torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
              for k, v in _stream_state(model, "").items() if not k.endswith("num_batches_tracked")}
    source["fc.weight"] = torch.zeros(1000, 2048)
    source["fc.bias"] = torch.zeros(1000)
    path = folder / name
    torch.save(source, path)
    return source


@pytest.mark.parametrize("backbone", BACKBONES)
def test_imagenet_init_copies_one_file_into_all_streams(models, backbone, tmp_path, monkeypatch):
    model = models[backbone]
    monkeypatch.setattr(imagenet, "default_dirs", lambda: [tmp_path / "none"])
    source = _write_imagenet_file(model, tmp_path, "weights.pth", seed=3)
    used = imagenet.load_imagenet_weights(model, tmp_path / "weights.pth")
    assert used == tmp_path / "weights.pth"
    for suffix in ("_rgb", "_flow", ""):
        stream = _stream_state(model, suffix)
        for key, value in source.items():
            if not key.startswith("fc."):
                assert torch.equal(stream[key], value), (suffix, key)


def test_imagenet_file_found_by_name_and_hash_checked(models, tmp_path, monkeypatch):
    model = models["resnet50"]
    _write_imagenet_file(model, tmp_path, "tmp.pth", seed=4)
    digest = hashlib.sha256((tmp_path / "tmp.pth").read_bytes()).hexdigest()
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(imagenet, "default_dirs", lambda: [tmp_path / "snap", hub])
    good = hub / f"resnet50-{digest[:8]}.pth"
    (tmp_path / "tmp.pth").rename(good)
    monkeypatch.setattr(resnet, "IMAGENET_FILES", (good.name,))
    assert imagenet.load_imagenet_weights(model) == good
    bad = hub / "resnet50-00000000.pth"
    good.rename(bad)
    with pytest.raises(ValueError, match="SHA-256"):
        imagenet.load_imagenet_weights(model, bad)


def test_imagenet_missing_file_names_every_place(models, tmp_path, monkeypatch):
    places = [tmp_path / "snapshot" / "backbone", tmp_path / "hub" / "checkpoints"]
    monkeypatch.setattr(imagenet, "default_dirs", lambda: list(places))
    with pytest.raises(FileNotFoundError) as info:
        imagenet.load_imagenet_weights(models["res2net50"])
    for place in places:
        assert str(place / "res2net50_v1b_26w_4s-3cf99910.pth") in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        imagenet.load_imagenet_weights(models["resnet50"], tmp_path / "nope.pth")


def test_imagenet_wrong_backbone_file_is_rejected(models, tmp_path):
    _write_imagenet_file(models["res2net50"], tmp_path, "r2.pth", seed=5)
    with pytest.raises(ValueError, match="does not fit backbone 'resnet50'"):
        load_imagenet_weights(models["resnet50"], tmp_path / "r2.pth")
