"""ONNX export (lib.export, its command line utils.export) and the ONNX Runtime backend of inference.py.

The export and run tests need the optional onnxruntime (``requirements-extra.txt``) and skip
cleanly without it; the "clear error without onnxruntime" tests simulate its absence. Tiny sizes:
ResNet-50 FSNet at 64x64, a 2-frame test set.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import inference
from lib import export
from lib.fsnet import FSNet
from tests.random_weights import randomize_weights
from tests.cli_checks import assert_user_error, checksums, run_module
from utils import export as export_cli
from utils.torch_files import save_checkpoint

HAS_ORT = all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnx/onnxruntime not installed (optional "
                                                   "extra: pip install -r requirements-extra.txt)")


@pytest.fixture(scope="module")
def model() -> FSNet:
    """Random, well-conditioned weights (a broken fold or pooling would not hide below 1e-4)."""
    return randomize_weights(FSNet("resnet50")).eval()


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export") / "fsnet.pth"
    save_checkpoint({"model": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch flags the exporter used here
def test_adaptive_pool_export_matches_torch_bins():
    """The exported pooling reproduces PyTorch's bins, also when they overlap (bins > size)."""
    if not HAS_ORT:
        pytest.skip("onnx/onnxruntime not installed (optional extra)")
    import io

    class Pool(torch.nn.Module):
        def forward(self, x):
            return torch.cat([torch.nn.functional.adaptive_avg_pool2d(x, b).flatten(2)
                              for b in (1, 2, 3, 6)], 2)

    buffer = io.BytesIO()
    with export._exportable_pooling():
        torch.onnx.export(Pool(), (torch.zeros(1, 2, 11, 11),), buffer, dynamo=False,
                          opset_version=export.OPSET, input_names=["x"],
                          dynamic_axes={"x": {2: "h", 3: "w"}})
    import onnxruntime
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for shape in ((1, 2, 11, 11), (1, 2, 2, 5), (1, 2, 7, 13)):
        x = torch.randn(*shape)
        ours = session.run(None, {"x": x.numpy()})[0]
        np.testing.assert_allclose(ours, Pool()(x).numpy(), rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def static_onnx(model) -> bytes:
    return export.export_bytes(model, 64)


@needs_ort
@pytest.mark.parametrize("dynamic", [False, True])
def test_export_matches_pytorch(model, static_onnx, dynamic):
    onnx_model = export.export_bytes(model, 64, dynamic=True) if dynamic else static_onnx
    predictor = export.OnnxPredictor(onnx_model)
    check = export.check_export(model, predictor, (3, 3, 64, 64))
    assert check.passed and check.logit_range > 0.01, check  # a real, varying output
    if dynamic:
        assert export.check_export(model, predictor, (1, 3, 96, 128)).passed
    else:
        with pytest.raises(Exception):
            predictor(torch.zeros(1, 3, 96, 128), torch.zeros(1, 3, 96, 128))


@needs_ort
def test_export_moves_the_weights_into_initializers(model):
    """The weights become initializers (not graph inputs) and leave the consumed network, so the
    export never holds a second copy of them (the TorchScript exporter's own path held three)."""
    import copy
    consumed = copy.deepcopy(model)
    proto = export.export_model(consumed, 64, inplace=True)
    assert [value.name for value in proto.graph.input] == ["image", "flow"]
    weights = {tensor.name for tensor in proto.graph.initializer}
    assert len(weights) > 600 and "net.resnet.conv1_rgb.weight" in weights
    assert sum(tensor.numel() for tensor in consumed.state_dict().values()) < 10 ** 6
    assert all(parameter.numel() > 0 for parameter in model.parameters())  # a copy was consumed


@needs_ort
def test_check_detects_a_different_network(static_onnx):
    other = randomize_weights(FSNet("resnet50"), seed=1).eval()
    assert not export.check_export(other, export.OnnxPredictor(static_onnx),
                                   (1, 3, 64, 64)).passed


@needs_ort
def test_check_tolerance_is_absolute_plus_relative(model):
    """An early checkpoint's nearly flat logits (a large bias, tiny variation) pass the check;
    they failed a tolerance relative to the logit range alone."""
    import copy
    flat = copy.deepcopy(model)
    with torch.no_grad():
        flat.output_s.output[1].weight.mul_(1e-3)
        flat.output_s.output[1].bias.fill_(-8.0)
    predictor = export.OnnxPredictor(export.export_bytes(flat, 64))
    check = export.check_export(flat, predictor, (2, 3, 64, 64))
    assert check.passed, check
    assert check.logit_range < 0.05 and check.max_abs_logit > 7.5
    other = randomize_weights(FSNet("resnet50"), seed=1).eval()
    broken = export.check_export(other, predictor, (2, 3, 64, 64))  # not the exported network
    assert not broken.passed and "FAILED" in str(broken)


@needs_ort
def test_command_line_export(checkpoint, tmp_path, capsys):
    before = checksums(checkpoint)
    out = tmp_path / "onnx" / "fsnet.onnx"
    assert export_cli.main(["--model_path", str(checkpoint), "--out", str(out), "--testsize", "64"]) == 0
    printed = capsys.readouterr().out
    assert "check OK" in printed and "max |logit|" in printed
    assert out.is_file() and not list(out.parent.glob(".*.tmp"))
    assert checksums(checkpoint) == before
    predictor = export.OnnxPredictor(out)  # one self-contained file
    assert predictor(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_command_line_export_errors(checkpoint, tmp_path, capsys):
    folder = tmp_path / "folder.onnx"
    folder.mkdir()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for argv, fragment in ((["--model_path", str(tmp_path / "none.pth")], "python -m utils.weights"),
                           (["--model_path", str(checkpoint), "--testsize", "70"], "multiple of 32"),
                           (["--model_path", str(checkpoint), "--out", str(checkpoint)], "--model_path"),
                           (["--model_path", str(checkpoint), "--out", str(folder)], "is a folder"),
                           (["--model_path", str(checkpoint), "--out", str(blocker / "x.onnx")],
                            "not")):
        argv = ["--out", str(tmp_path / "x.onnx"), *argv]
        assert_user_error(export_cli.main(argv), capsys.readouterr().err, fragment)
    assert not (tmp_path / "x.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder.onnx"]  # no temporary


def test_bad_output_is_refused_before_the_checkpoint_is_read(checkpoint, tmp_path, monkeypatch,
                                                           capsys):
    def no_export(*args, **kwargs):
        raise AssertionError("the checkpoint was read before the output path was checked")
    monkeypatch.setattr(export_cli, "build_fsnet", no_export)
    code = export_cli.main(["--model_path", str(checkpoint), "--out", str(tmp_path)])
    assert_user_error(code, capsys.readouterr().err, "is a folder")


@needs_ort
def test_ctrl_c_is_one_line_and_leaves_nothing(checkpoint, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(export, "export_model", interrupted)
    out = tmp_path / "out" / "fsnet.onnx"
    code = export_cli.main(["--model_path", str(checkpoint), "--out", str(out), "--testsize", "64",
                            "--no_cache"])
    assert_user_error(code, capsys.readouterr().err, "interrupted by Ctrl-C")
    assert not out.exists() and not list(out.parent.iterdir())


def test_lib_export_runs_the_command_line_with_the_common_convention(tmp_path):
    """``python -m lib.export`` is ``python -m utils.export``: one error line, --debug accepted."""
    result = run_module("lib.export", ["--model_path", str(tmp_path / "none.pth"),
                                       "--out", str(tmp_path / "x.onnx")])
    assert_user_error(result.returncode, result.stderr, "checkpoint not found")
    result = run_module("lib.export", ["--debug", "--model_path", str(tmp_path / "none.pth"),
                                       "--out", str(tmp_path / "x.onnx")])
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_require_onnxruntime_names_the_install_command(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install onnx onnxruntime"):
        export.require_onnxruntime()
    code = export_cli.main(["--model_path", str(checkpoint), "--out", str(tmp_path / "x.onnx")])
    assert_user_error(code, capsys.readouterr().err, "onnxruntime is not installed",
                      "pip install onnx onnxruntime")
    assert inference.resolve_backend("auto", torch.device("cpu")) == "jit"


def tiny_testset(root: Path) -> Path:
    """A test set of one 3-frame sequence (48x80 PNGs, 2 flow images) under ``root``."""
    seq = root / "TestSet" / "Toy" / "seq"
    rng = np.random.default_rng(0)
    for folder, count in (("Frame", 3), ("OF_FlowNet2", 2)):
        (seq / folder).mkdir(parents=True)
        for index in range(count):
            Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(
                seq / folder / f"{index:05d}.png")
    return root / "TestSet"


@needs_ort
def test_inference_onnx_backend_end_to_end(checkpoint, tmp_path):
    """``--backend onnx`` writes the maps of the plain forward (binary masks identical away from
    the threshold) and records the backend; ``auto`` picks it on the CPU."""
    testset = tiny_testset(tmp_path)
    common = ["--model_path", str(checkpoint), "--dataset_path", str(testset), "--testsize", "64",
              "--device", "cpu", "--workers", "0", "--no_progress", "--mode", "binary"]
    results = {}
    for backend in ("onnx", "plain"):
        args = inference.get_args_parser().parse_args(
            common + ["--backend", backend, "--test_save", str(tmp_path / backend)])
        results[backend] = inference.predict(inference.config_from_args(args))
    assert results["onnx"].backend == "onnx" and results["onnx"].summary()["backend"] == "onnx"
    assert results["onnx"].written == results["plain"].written == 2
    for plain in (tmp_path / "plain").rglob("*.png"):
        ours = np.asarray(Image.open(tmp_path / "onnx" / plain.relative_to(tmp_path / "plain")))
        assert ours.shape == (48, 80)
        assert (ours != np.asarray(Image.open(plain))).mean() < 0.01
    assert inference.resolve_backend("auto", torch.device("cpu")) == "onnx"
