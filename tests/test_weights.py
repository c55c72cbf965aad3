"""Weights on first use (lib.hub, ImageNet, RAFT) tested offline through file:// URLs, and
``python -m utils.weights`` (the released checkpoint's info and --check)."""
from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import pytest
import torch
from torch import nn

import lib.backbones.imagenet as imagenet
from lib import hub
from lib.backbones import resnet
from lib.fsnet import FSNet
from tests.cli_checks import REPO, assert_user_error, checksums, run_module
from utils import weights
from utils.cli import BadInputError, MissingInputError
from utils.weights import load_raft

FIXTURE_TSV = REPO / "tests" / "fixtures" / "fsnet_resnet50_state_dict.tsv"


def _serve(folder: Path, stem: str, state: dict, prefix: str | None = None) -> str:
    """Save ``state`` as ``<stem>-<hash prefix>.pth`` (the true SHA-256 prefix unless given) and
    return its ``file://`` URL."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "tmp.pth"
    torch.save(state, tmp)
    name = f"{stem}-{prefix or hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]}.pth"
    return tmp.rename(folder / name).as_uri()


@pytest.fixture()
def online(tmp_path, monkeypatch) -> Path:
    """Downloads allowed, into a fresh hub cache; returns its checkpoints folder."""
    monkeypatch.delenv(hub.OFFLINE_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture()
def no_network(monkeypatch) -> list:
    """The downloader fails the test if called; returns the list of attempted URLs."""
    calls = []

    def refuse(url, *args, **kwargs):
        calls.append(url)
        raise AssertionError(f"download attempted: {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return calls


def test_download_into_hub_cache_then_reuse(online, tmp_path, monkeypatch):
    state = {"w": torch.arange(6.0)}
    url = _serve(tmp_path / "server", "tiny", state)
    path = hub.find_or_download([hub.file_name(url)], url, "tiny weights file", [tmp_path / "snap"])
    assert path == online / hub.file_name(url)
    assert torch.equal(torch.load(path, weights_only=True)["w"], state["w"])
    assert sorted(p.name for p in online.iterdir()) == [path.name]
    calls = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, *a, **k: calls.append(url))
    assert hub.find_or_download([path.name], url, "tiny weights file", [tmp_path / "snap", online]) == path
    assert calls == []


def test_wrong_hash_is_refused_and_nothing_kept(online, tmp_path):
    url = _serve(tmp_path / "server", "tiny", {"w": torch.ones(3)}, prefix="00000000")
    with pytest.raises(hub.WeightsCorruptError, match="hash"):
        hub.download(url, "tiny weights file")
    assert list(online.iterdir()) == []


def test_network_failure_is_a_clear_missing_file(online, tmp_path):
    url = (tmp_path / "nowhere" / "tiny-0123abcd.pth").as_uri()
    with pytest.raises(hub.WeightsNotFoundError, match="downloading .* failed.*--imagenet PATH"):
        hub.download(url, "tiny weights file", flag="--imagenet")
    assert list(online.iterdir()) == []


@pytest.mark.parametrize("how", ["env", "argument"])
def test_offline_never_downloads(online, tmp_path, monkeypatch, no_network, how):
    url = _serve(tmp_path / "server", "tiny", {"w": torch.ones(3)})
    if how == "env":
        monkeypatch.setenv(hub.OFFLINE_ENV, "1")
    with pytest.raises(hub.WeightsNotFoundError) as info:
        hub.find_or_download([hub.file_name(url)], url, "tiny weights file", [tmp_path / "snap"],
                             "--imagenet", offline=how == "argument")
    message = str(info.value)
    for fragment in ("downloads are off", str(tmp_path / "snap" / hub.file_name(url)), url,
                     "--imagenet PATH", str(hub.SNAPSHOT_WEIGHTS_DIR)):
        assert fragment in message
    assert no_network == []


def test_local_files_come_first(online, tmp_path, monkeypatch, no_network):
    url = _serve(tmp_path / "server", "resnet50", {"w": torch.ones(3)})
    name = hub.file_name(url)
    monkeypatch.setattr(resnet, "IMAGENET_URL", url)
    monkeypatch.setattr(resnet, "IMAGENET_FILES", (name,))
    snap, cache = tmp_path / "snap", online
    monkeypatch.setattr(imagenet, "default_dirs", lambda: [snap, cache])
    for folder in (cache, snap):  # the hub cache is used, then snapshot/backbone/ wins over it
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes((tmp_path / "server" / name).read_bytes())
        assert imagenet.find_imagenet_file("resnet50") == folder / name
    explicit = tmp_path / "mine.pth"
    explicit.write_bytes(b"x")
    assert imagenet.find_imagenet_file("resnet50", explicit) == explicit
    assert no_network == []


def test_imagenet_downloads_on_first_use(online, tmp_path, monkeypatch):
    url = _serve(tmp_path / "server", "resnet50", {"w": torch.ones(3)})
    monkeypatch.setattr(resnet, "IMAGENET_URL", url)
    monkeypatch.setattr(resnet, "IMAGENET_FILES", (hub.file_name(url),))
    monkeypatch.setattr(imagenet, "default_dirs", lambda: [tmp_path / "snap", online])
    assert imagenet.find_imagenet_file("resnet50") == online / hub.file_name(url)


def test_imagenet_errors_become_one_line_user_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(imagenet, "default_dirs", lambda: [tmp_path / "snap"])
    model = nn.Module()
    model.backbone_name = "resnet50"
    with pytest.raises(MissingInputError, match="--no_imagenet"):
        weights.imagenet_init(model, offline=True)
    bad = tmp_path / "resnet50-00000000.pth"
    bad.write_bytes(b"not weights")
    with pytest.raises(BadInputError, match="SHA-256"):
        weights.imagenet_init(model, bad)


def test_raft_downloads_on_first_use_then_loads(online, tmp_path, monkeypatch):
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    state = raft_small(weights=None).state_dict()
    url = _serve(tmp_path / "server", "raft_small_test", state)
    monkeypatch.setattr(weights, "raft_url", lambda model: url)
    load_raft.cache_clear()
    try:
        net = load_raft(None, "raft_small")
        assert (online / hub.file_name(url)).is_file()
        key = next(iter(state))
        assert torch.equal(net.state_dict()[key], state[key])
        load_raft.cache_clear()
        monkeypatch.setenv(hub.OFFLINE_ENV, "1")  # the cached file needs no network
        load_raft(None, "raft_small")
    finally:
        load_raft.cache_clear()


def test_raft_offline_without_file_is_a_user_error(online, monkeypatch, no_network):
    load_raft.cache_clear()
    with pytest.raises(MissingInputError, match="downloads are off.*--raft_weights PATH"):
        load_raft(None, "raft_small", "cpu", True)
    assert no_network == []


def test_offline_flag_reaches_worker_processes(monkeypatch):
    parser = argparse.ArgumentParser()
    weights.add_offline_argument(parser)
    monkeypatch.delenv(hub.OFFLINE_ENV, raising=False)
    weights.set_offline(parser.parse_args([]).offline)
    assert not hub.is_offline()
    weights.set_offline(parser.parse_args(["--offline"]).offline)
    assert os.environ[hub.OFFLINE_ENV] == "1" and hub.is_offline()  # inherited by workers


def test_cli_offline_errors_say_what_to_place_where(tmp_path):
    env = {"TORCH_HOME": str(tmp_path / "torch"), "FSNET_OFFLINE": "1"}
    for argv, url_part in ((["imagenet", "--backbone", "resnet50"], "resnet50-0676ba61.pth"),
                           (["raft", "--raft_model", "raft_small", "--offline"], "raft_small")):
        result = run_module("utils.weights", argv, env=env)
        assert_user_error(result.returncode, result.stderr, "downloads are off", url_part,
                          str(hub.SNAPSHOT_WEIGHTS_DIR))
    assert not (tmp_path / "torch").exists() or not any((tmp_path / "torch").rglob("*.pth"))


def test_cli_raft_checks_a_local_file(tmp_path):
    from torchvision.models.optical_flow import raft_small

    path = tmp_path / "raft.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    result = run_module("utils.weights", ["raft", "--raft_model", "raft_small", "--raft_weights",
                                          str(path)])
    assert result.returncode == 0, result.stderr
    assert hashlib.sha256(path.read_bytes()).hexdigest() in result.stdout


# --------------------------------------------------------------------------- the released model

def test_release_constants_match_the_fixture():
    rows = [line.split("\t") for line in FIXTURE_TSV.read_text().splitlines()[1:]]
    sizes = [torch.Size(() if shape == "scalar" else map(int, shape.split("x"))).numel()
             for _, shape, _, kind in rows if kind == "param"]
    assert (len(rows), sum(sizes)) == (weights.RELEASE_KEYS, weights.RELEASE_PARAMETERS)


def test_fsnet_info_names_links_and_place():
    result = run_module("utils.weights", ["fsnet"])
    assert result.returncode == 0, result.stderr
    for fragment in ("drive.google.com", "pan.baidu.com", "36lm",
                     "snapshot/FSNet/2021-ICCV-FSNet-20epoch-new.pth", "--check"):
        assert fragment in result.stdout


@pytest.fixture(scope="module")
def release_like(tmp_path_factory) -> Path:
    """A randomly initialised ResNet-50 FSNet saved as the release is: bare, ``module.`` keys."""
    torch.manual_seed(0)
    state = {f"module.{k}": v for k, v in FSNet(backbone="resnet50").state_dict().items()}
    path = tmp_path_factory.mktemp("release") / "2021-ICCV-FSNet-20epoch-new.pth"
    torch.save(state, path)
    return path


def test_check_accepts_the_release_layout(release_like):
    before = checksums(release_like)
    result = run_module("utils.weights", ["fsnet", "--check", str(release_like)])
    assert result.returncode == 0, result.stderr
    digest = hashlib.sha256(release_like.read_bytes()).hexdigest()
    for fragment in (digest, "resnet50", "2160", "102,301,698", "OK"):
        assert fragment in result.stdout
    assert checksums(release_like) == before


def test_check_rejects_wrong_files(tmp_path):
    text = tmp_path / "page.pth"  # what a browser saves from a share link
    text.write_text("<html>Google Drive - virus scan warning</html>")
    tiny = tmp_path / "other.pth"
    torch.save({f"module.{k}": v for k, v in nn.Linear(2, 2).state_dict().items()}, tiny)
    missing = tmp_path / "absent.pth"
    for path, fragment in ((text, "cannot read"), (tiny, "not those of the released FSNet"),
                           (missing, "does not exist")):
        result = run_module("utils.weights", ["fsnet", "--check", str(path)])
        assert_user_error(result.returncode, result.stderr, str(path), fragment)


def test_check_rejects_a_non_release_fsnet(tmp_path, monkeypatch):
    model = FSNet(backbone="resnet50", channel=16)
    monkeypatch.setattr(weights, "build_fsnet", lambda path: model)
    (tmp_path / "x.pth").write_bytes(b"")
    with pytest.raises(BadInputError, match="not the released model"):
        weights.check_fsnet_file(tmp_path / "x.pth")
