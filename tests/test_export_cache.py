"""The warm-start cache of ONNX exports (utils.export_cache): hits, keys, damage, eviction, and
its use by inference.py and python -m utils.export. Needs the optional onnxruntime."""
from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import inference
from lib.fsnet import FSNet
from tests.random_weights import randomize_weights
from tests.test_export import tiny_testset
from utils import export_cache
from utils import export as export_cli
from lib.checkpoint import build_fsnet
from utils.torch_files import save_checkpoint
from utils.inference import predict

pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime")),
    reason="onnx/onnxruntime not installed (optional extra)")
SIZE = 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cache") / "fsnet.pth"
    save_checkpoint(randomize_weights(FSNet("resnet50")).state_dict(), path)
    return path


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "hub-cache"
    monkeypatch.setenv(export_cache.DIR_ENV, str(folder))
    return folder


def _loader(path: Path, calls: list):
    def load() -> FSNet:
        calls.append(path)
        return build_fsnet(path)
    return load


def test_second_use_is_a_hit_without_reading_the_checkpoint(checkpoint, cache_dir):
    calls: list = []
    first = export_cache.cached_export(checkpoint, SIZE, _loader(checkpoint, calls))
    second = export_cache.cached_export(checkpoint, SIZE, _loader(checkpoint, calls))
    assert (first.state, second.state) == ("miss", "hit") and len(calls) == 1
    assert first.path == second.path and second.backbone == "resnet50"
    assert second.path.parent.parent == cache_dir
    other_size = export_cache.cached_export(checkpoint, 2 * SIZE, _loader(checkpoint, calls))
    assert other_size.state == "miss" and other_size.path != first.path  # size is in the key
    assert not list(cache_dir.glob(".tmp-*"))


def test_a_hit_imports_neither_onnx_nor_torchvision(checkpoint, cache_dir):
    """A warm start loads only ONNX Runtime: importing onnx or torchvision costs seconds."""
    assert export_cache.cached_export(checkpoint, SIZE, _loader(checkpoint, [])).state == "miss"
    code = ("import sys, torch; from utils.inference.predict import load_predictor; "
            f"loaded = load_predictor({str(checkpoint)!r}, torch.device('cpu'), backend='onnx', "
            f"testsize={SIZE}); print(loaded.cache, 'onnx' in sys.modules, 'torchvision' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                            capture_output=True, text=True, check=True,
                            env={**os.environ, export_cache.DIR_ENV: str(cache_dir)})
    assert result.stdout.split() == ["hit", "False", "False"]


def test_key_follows_content_not_path(checkpoint, tmp_path):
    """A copy of the checkpoint hits (same content); a changed file misses; the memo of hashes
    is refreshed when size/mtime/inode change."""
    calls: list = []
    export_cache.cached_export(checkpoint, SIZE, _loader(checkpoint, calls))
    copied = tmp_path / "copy.pth"
    copied.write_bytes(checkpoint.read_bytes())
    assert export_cache.cached_export(copied, SIZE, _loader(copied, calls)).state == "hit"
    other = randomize_weights(FSNet("resnet50"), seed=3).state_dict()
    save_checkpoint(other, copied)
    assert export_cache.cached_export(copied, SIZE, _loader(copied, calls)).state == "miss"
    fingerprint = export_cache.checkpoint_fingerprint(copied)
    assert fingerprint["architecture"]["backbone"] == "resnet50"
    assert fingerprint["architecture"]["keys_sha256"] == export_cache.checkpoint_fingerprint(
        checkpoint)["architecture"]["keys_sha256"]
    assert fingerprint["sha256"] != export_cache.checkpoint_fingerprint(checkpoint)["sha256"]


def test_damaged_entry_is_rebuilt_with_a_warning(checkpoint, capsys):
    calls: list = []
    entry = export_cache.cached_export(checkpoint, SIZE, _loader(checkpoint, calls))
    weights = entry.path.parent / "fsnet.weights"
    with open(weights, "r+b") as handle:
        handle.truncate(1000)
    again = export_cache.cached_export(checkpoint, SIZE, _loader(checkpoint, calls))
    assert again.state == "miss" and len(calls) == 2
    assert "damaged" in capsys.readouterr().err
    (entry.path.parent / "meta.json").write_text("{not json")
    assert export_cache.cached_export(checkpoint, SIZE, _loader(checkpoint, calls)).state == "miss"


def test_stale_temporary_folder_of_a_killed_run_is_removed(checkpoint, cache_dir):
    calls: list = []
    key = export_cache.entry_key(export_cache.checkpoint_fingerprint(checkpoint), SIZE, False)
    stale = cache_dir / f".tmp-{key}-999999"
    stale.mkdir(parents=True)
    (stale / "fsnet.weights").write_bytes(b"partial")
    export_cache.cached_export(checkpoint, SIZE, _loader(checkpoint, calls))
    assert not stale.exists()


def test_size_bound_evicts_the_least_recently_used(checkpoint, tmp_path, monkeypatch):
    calls: list = []
    second = tmp_path / "second.pth"
    save_checkpoint(randomize_weights(FSNet("resnet50"), seed=5).state_dict(), second)
    first = export_cache.cached_export(checkpoint, SIZE, _loader(checkpoint, calls))
    entry_mb = sum(f.stat().st_size for f in first.path.parent.iterdir()) / 2**20
    monkeypatch.setenv(export_cache.MAX_MB_ENV, str(1.5 * entry_mb))  # room for one entry
    kept = export_cache.cached_export(second, SIZE, _loader(second, calls))
    assert export_cache.entries() == [kept.path.parent] and not first.path.exists()


def test_inference_reports_the_cache_and_export_cli_reuses_it(checkpoint, tmp_path, monkeypatch,
                                                             capsys):
    testset = tiny_testset(tmp_path)
    common = ["--model_path", str(checkpoint), "--dataset_path", str(testset), "--testsize",
              str(SIZE), "--device", "cpu", "--workers", "0", "--no_progress", "--backend", "onnx"]

    def run(name: str, *extra: str) -> dict:
        argv = common + ["--test_save", str(tmp_path / name), *extra]
        return inference.predict(inference.config_from_args(
            inference.get_args_parser().parse_args(argv))).summary()

    assert run("off", "--no_cache")["cache"] == "off" and not export_cache.entries()
    assert run("cold")["cache"] == "miss"
    real_build = predict.build_fsnet

    def not_read(*args, **kwargs):
        raise AssertionError("a cache hit read the checkpoint")
    monkeypatch.setattr(predict, "build_fsnet", not_read)
    warm = run("warm")
    assert warm["cache"] == "hit" and "ONNX export cache: hit" in capsys.readouterr().out
    for png in (tmp_path / "off").rglob("*.png"):
        assert np.array_equal(np.asarray(Image.open(png)),
                              np.asarray(Image.open(tmp_path / "warm" / png.relative_to(tmp_path / "off"))))
    monkeypatch.setattr(predict, "build_fsnet", real_build)
    assert run("plain", "--backend", "plain")["cache"] is None
    out = tmp_path / "fsnet.onnx"
    assert export_cli.main(["--model_path", str(checkpoint), "--out", str(out),
                            "--testsize", str(SIZE)]) == 0
    assert "export cache hit" in capsys.readouterr().out and out.is_file()


def test_a_failed_check_drops_the_cached_entry(checkpoint, tmp_path, monkeypatch, capsys):
    calls: list = []
    entry = export_cache.cached_export(checkpoint, SIZE, _loader(checkpoint, calls))
    model = copy.deepcopy(build_fsnet(checkpoint))
    with torch.no_grad():
        model.output_s.output[1].bias.add_(1.0)  # PyTorch now disagrees with the cached file
    monkeypatch.setattr(export_cli, "build_fsnet", lambda *a, **k: model)
    code = export_cli.main(["--model_path", str(checkpoint), "--out", str(tmp_path / "x.onnx"),
                            "--testsize", str(SIZE)])
    assert code == 2 and "deviates from PyTorch" in capsys.readouterr().err
    assert not entry.path.exists() and not (tmp_path / "x.onnx").exists()


def test_an_unusable_cache_folder_falls_back_to_a_fresh_export(checkpoint, tmp_path, monkeypatch,
                                                               capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv(export_cache.DIR_ENV, str(blocker / "cache"))
    loaded = predict.load_predictor(str(checkpoint), torch.device("cpu"), backend="onnx",
                                    testsize=SIZE)
    assert loaded.cache == "off" and "cannot be used" in capsys.readouterr().err
