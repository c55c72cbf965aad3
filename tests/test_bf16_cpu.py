"""bf16 inference on the CPU: the folded network with bf16 weights (``--amp bf16``), its agreement
with float32, and the warning on CPUs without native bf16."""
from __future__ import annotations

import pytest
import torch

from lib import fast
from lib.fsnet import FSNet
from tests.random_weights import randomize_weights
from utils.inference import predict


@pytest.fixture(scope="module")
def model() -> FSNet:
    return randomize_weights(FSNet("resnet50")).eval()


def test_bf16_weights_route_agrees_with_float32(model):
    reference = fast.build_fast_model(model, backend="eager")
    bf16 = fast.build_fast_model(model, backend="auto", dtype=torch.bfloat16)
    assert bf16.backend == "eager" and all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    image, flow = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    expected, got = reference(image, flow), bf16(image, flow)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    spread = (expected.max() - expected.min()).item()
    assert 0 < (got - expected).abs().max().item() < 0.1 * spread  # bf16, not float32, yet close
    assert ((got > 0) == (expected > 0)).float().mean() > 0.95
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the source is untouched


def test_inference_bf16_on_cpu_stores_bf16_weights(model, tmp_path):
    from utils.torch_files import save_checkpoint
    path = tmp_path / "fsnet.pth"
    save_checkpoint(model.state_dict(), path)
    for backend, dtype in (("eager", torch.bfloat16), ("plain", torch.float32)):
        loaded = predict.load_predictor(str(path), torch.device("cpu"), backend=backend, amp="bf16")
        assert next(loaded.predictor.parameters()).dtype == dtype
    loaded = predict.load_predictor(str(path), torch.device("cpu"), backend="eager")
    assert next(loaded.predictor.parameters()).dtype == torch.float32  # the default stays float32


@pytest.mark.parametrize("native", [False, True])
def test_warning_when_the_cpu_has_no_native_bf16(native, monkeypatch, capsys):
    monkeypatch.setattr(fast, "cpu_has_native_bf16", lambda: native)
    assert predict.resolve_backend("auto", torch.device("cpu"), "bf16") == "eager"
    warned = "no native bf16" in capsys.readouterr().err
    assert warned != native
    predict.resolve_backend("auto", torch.device("cpu"), "off")
    assert "bf16" not in capsys.readouterr().err


def test_detector_reads_torch_and_cpuinfo(monkeypatch, tmp_path):
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(fast, "Path", lambda _: cpuinfo)
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n")
    assert fast.cpu_has_native_bf16()
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n")
    assert not fast.cpu_has_native_bf16()
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert fast.cpu_has_native_bf16()
