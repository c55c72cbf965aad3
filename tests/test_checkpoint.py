"""Checkpoint I/O: prefixed strict load, training dicts, backbone detection, errors, atomic save."""
from __future__ import annotations

import pytest
import torch

import utils.checkpoint as checkpoint
from lib.fsnet import FSNet
from utils.checkpoint import (build_model_from_checkpoint, detect_backbone, load_model_weights,
                              load_state_dict_file, save_checkpoint)


@pytest.fixture(scope="module")
def resnet_model() -> FSNet:
    torch.manual_seed(1)
    model = FSNet("resnet50")
    with torch.no_grad():  # make the state distinguishable from a fresh model
        for buffer in model.buffers():
            if buffer.is_floating_point():
                buffer.uniform_(0.5, 1.5)
    return model


def test_strict_load_of_module_prefixed_release_format(resnet_model, tmp_path):
    path = tmp_path / "2021-ICCV-FSNet-20epoch-new.pth"
    state = {f"module.{k}": v for k, v in resnet_model.state_dict().items()}
    assert len(state) == 2160
    torch.save(state, path)
    model = build_model_from_checkpoint(path)
    assert model.backbone_name == "resnet50" and not model.training
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in resnet_model.state_dict().items())


def test_training_dict_and_compile_prefix_are_unwrapped(tmp_path):
    path = tmp_path / "last.pth"
    torch.save({"model": {"module._orig_mod.a.weight": torch.ones(2)}, "epoch": 3}, path)
    assert list(load_state_dict_file(path)) == ["a.weight"]


def test_detect_backbone_for_both():
    assert detect_backbone({"resnet.conv1_rgb.weight": torch.zeros(64, 3, 7, 7)}) == "resnet50"
    assert detect_backbone({"resnet.conv1_rgb.0.weight": torch.zeros(32, 3, 3, 3)}) == "res2net50"
    with pytest.raises(ValueError, match="Not an FSNet state_dict"):
        detect_backbone({"conv1.weight": torch.zeros(1)})


def test_detect_backbone_on_real_res2net_model():
    prefixed = {f"module.{k}": v for k, v in FSNet("res2net50").state_dict().items()}
    assert detect_backbone(checkpoint.strip_prefixes(prefixed)) == "res2net50"


def test_mismatch_error_lists_keys(resnet_model):
    state = dict(resnet_model.state_dict())
    state.pop("bpm1.conv1.conv.conv_bn.0.weight")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as info:
        load_model_weights(resnet_model, state)
    message = str(info.value)
    assert "bpm1.conv1.conv.conv_bn.0.weight" in message and "extra.weight" in message
    assert "FSNet resnet50 state_dict" in message
    missing, unexpected = load_model_weights(resnet_model, state, strict=False)
    assert missing == ["bpm1.conv1.conv.conv_bn.0.weight"] and unexpected == ["extra.weight"]


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_state_dict_file(tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        load_state_dict_file(garbage)
    not_state = tmp_path / "list.pth"
    torch.save([1, 2], not_state)
    with pytest.raises(ValueError, match="not an FSNet state_dict"):
        load_state_dict_file(not_state)


def test_atomic_save_interrupted_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.pth"
    save_checkpoint({"w": torch.ones(3)}, target)

    def failing_save(obj, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.torch, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"w": torch.zeros(3)}, target)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"w": torch.zeros(3)}, tmp_path / "new.pth")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pth"]
    assert torch.equal(torch.load(target)["w"], torch.ones(3))
