"""Checkpoint I/O: prefixed strict load (lib.checkpoint.build_fsnet), training dicts, backbone
detection, errors, atomic save."""
from __future__ import annotations

import errno
import io
import subprocess

import pytest
import torch

import utils.torch_files as checkpoint
from utils.cli import run_guarded
from lib.checkpoint import build_fsnet, read_checkpoint
from lib.fsnet import FSNet
from lib.state_dict import backbone_of
from utils.torch_files import first_non_finite, load_model_weights, save_checkpoint


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
    model = build_fsnet(path)
    assert model.backbone_name == "resnet50" and not model.training
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in resnet_model.state_dict().items())


def test_half_precision_file_loads_as_float32_with_nothing_left_on_meta(resnet_model, tmp_path):
    """The network is built on the meta device and takes the file's tensors: every one must
    arrive, in float32 (a half-precision file is widened, as a copy into float32 would be)."""
    path = tmp_path / "half.pth"
    torch.save({k: v.half() if v.is_floating_point() else v
                for k, v in resnet_model.state_dict().items()}, path)
    model = build_fsnet(path)
    tensors = list(model.parameters()) + list(model.buffers())
    assert not any(t.is_meta for t in tensors)
    assert all(t.dtype == torch.float32 for t in tensors if t.is_floating_point())
    weight = next(iter(resnet_model.state_dict()))
    assert torch.equal(model.state_dict()[weight], resnet_model.state_dict()[weight].half().float())
    flags = [p.requires_grad for p in model.parameters()]  # trainable as built, not frozen
    assert flags == [p.requires_grad for p in resnet_model.parameters()] and sum(flags) > 1000


def test_training_dict_and_compile_prefix_are_unwrapped(tmp_path):
    path = tmp_path / "last.pth"
    torch.save({"model": {"module._orig_mod.a.weight": torch.ones(2)}, "epoch": 3}, path)
    assert list(read_checkpoint(path).state) == ["a.weight"]


def test_detect_backbone_for_both():
    assert backbone_of({"resnet.conv1_rgb.weight": torch.zeros(64, 3, 7, 7)}) == "resnet50"
    assert backbone_of({"resnet.conv1_rgb.0.weight": torch.zeros(32, 3, 3, 3)}) == "res2net50"
    assert backbone_of({"conv1.weight": torch.zeros(1)}) is None


def test_detect_backbone_on_real_res2net_model():
    prefixed = {f"module.{k}": v for k, v in FSNet("res2net50").state_dict().items()}
    assert backbone_of(checkpoint.strip_prefixes(prefixed)) == "res2net50"


def test_mismatch_error_lists_keys(resnet_model):
    state = dict(resnet_model.state_dict())
    state.pop("bpm1.conv1.conv.conv_bn.0.weight")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as info:
        load_model_weights(resnet_model, state)
    message = str(info.value)
    assert "bpm1.conv1.conv.conv_bn.0.weight" in message and "extra.weight" in message
    assert "FSNetConfig(backbone='resnet50'" in message
    missing, unexpected = load_model_weights(resnet_model, state, strict=False)
    assert missing == ["bpm1.conv1.conv.conv_bn.0.weight"] and unexpected == ["extra.weight"]


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_fsnet(tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        build_fsnet(garbage)
    not_state = tmp_path / "list.pth"
    torch.save([1, 2], not_state)
    with pytest.raises(ValueError, match="list.pth holds no FSNet state_dict"):
        build_fsnet(not_state)


def test_atomic_save_interrupted_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.pth"
    save_checkpoint({"w": torch.ones(3)}, target)

    def failing_save(obj, handle, *args, **kwargs):
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


class FullDisk(io.FileIO):
    """A file that accepts ``limit`` bytes, then fails like a full disk."""

    limit = 4096

    def write(self, data):  # type: ignore[override]
        if self.tell() + len(data) > self.limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def test_disk_full_during_save_is_named_with_the_file(tmp_path, monkeypatch):
    target = tmp_path / "last.pth"
    save_checkpoint({"w": torch.ones(3)}, target)
    monkeypatch.setattr(checkpoint, "open", FullDisk, raising=False)
    with pytest.raises(OSError) as error:  # torch.save alone would say "unexpected pos ..."
        save_checkpoint({"w": torch.zeros(100_000)}, target)
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(target)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pth"]  # old file kept, no temp
    assert torch.equal(torch.load(target)["w"], torch.ones(3))


def test_real_full_file_system(tmp_path, capsys):
    small = tmp_path / "small"
    small.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True,
                       capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot mount a 1 MB tmpfs here (needs root)")
    try:
        code = run_guarded(lambda: save_checkpoint({"w": torch.zeros(500_000)}, small / "last.pth"))
        assert code == 2 and list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True, timeout=10)
    assert capsys.readouterr().err.startswith(
        f"error: no space left on device while writing {small / 'last.pth'} — ")


def test_non_finite_tensors_are_found_and_refused_at_load(tmp_path):
    state = {"model": {"a.weight": torch.ones(4), "bn.running_var": torch.tensor([1.0, float("inf")]),
                       "bn.num_batches_tracked": torch.tensor(3)},
             "optimizer": {"state": {0: {"momentum_buffer": torch.tensor([float("nan")])}}}}
    assert first_non_finite(state) == "model.bn.running_var (1 of 2 values are NaN/inf)"
    assert first_non_finite({"model": {"a": torch.ones(2)}, "rng": [torch.zeros(3, dtype=torch.uint8)]}) is None
    path = tmp_path / "diverged.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"diverged\.pth holds non-finite values, first "
                                         r"bn\.running_var"):
        read_checkpoint(path)
