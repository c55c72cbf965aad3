"""hubconf.py through ``torch.hub`` with ``source="local"``, offline: random networks, a checkpoint
downloaded once through a ``file://`` URL into a temporary hub cache, the offline refusal and the
released model's place."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from lib.checkpoint import checkpoint_dict
from lib.fsnet import FSNet, FSNetConfig
from tests.cli_checks import REPO
from utils.cli import MissingInputError
from utils.weights import RELEASE_LINKS, RELEASE_NAME

ENTRY_POINTS = ("fsnet", "fsnet_res2net50", "fsnet_resnet50")


def load(entry: str, **kwargs) -> FSNet:
    """``torch.hub.load`` of this checkout."""
    return torch.hub.load(str(REPO), entry, source="local", **kwargs)


@pytest.fixture(scope="module")
def release_like(tmp_path_factory) -> Path:
    """A random ResNet-50 FSNet saved as the release is (bare, ``module.`` keys), in half
    precision to halve the file (loading widens it to float32)."""
    torch.manual_seed(0)
    state = {f"module.{k}": v.half() if v.is_floating_point() else v
             for k, v in FSNet(backbone="resnet50").state_dict().items()}
    path = tmp_path_factory.mktemp("release") / RELEASE_NAME
    torch.save(state, path)
    return path


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch) -> Path:
    """A fresh torch hub cache, downloads allowed, the working folder elsewhere; returns the
    cache's checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("FSNET_OFFLINE", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "torch" / "hub" / "checkpoints"


def _served(release_like: Path, folder: Path) -> str:
    """The file under a hash-prefixed name (a hard link) as a ``file://`` URL."""
    folder.mkdir()
    digest = hashlib.sha256(release_like.read_bytes()).hexdigest()[:8]
    served = folder / f"fsnet_run-{digest}.pth"
    os.link(release_like, served)
    return served.as_uri()


def test_entry_points_are_listed_and_documented():
    """What ``torch.hub.list`` and ``torch.hub.help`` find on GitHub (they have no
    ``source="local"``): the public callables, each with its docstring."""
    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    assert [name for name in dir(hubconf) if callable(getattr(hubconf, name))
            and not name.startswith("_")] == list(ENTRY_POINTS)
    for entry in ENTRY_POINTS:
        assert "FSNet" in getattr(hubconf, entry).__doc__


@pytest.mark.parametrize("entry, backbone", [("fsnet", "res2net50"), ("fsnet_resnet50", "resnet50")])
def test_random_network_takes_configuration(entry, backbone):
    model = load(entry, channel=16)
    assert isinstance(model, FSNet) and model.training
    assert (model.backbone_name, model.channel) == (backbone, 16)


def test_variant_checkpoint_loads_with_its_saved_configuration(tmp_path):
    torch.manual_seed(0)
    variant = FSNet(FSNetConfig(backbone="resnet50", channel=16, streams="appearance"))
    path = tmp_path / "variant.pth"
    torch.save(checkpoint_dict(variant), path)
    model = load("fsnet", weights=str(path))
    assert model.config == variant.config and not model.training
    with pytest.raises(ValueError, match="streams='both'"):
        load("fsnet", weights=str(path), streams="both")
    with pytest.raises(TypeError, match="no field colour"):
        load("fsnet", weights=str(path), colour="red")
    random = load("fsnet", backbone="resnet50", num_bpm=2, rcam="concat")
    assert random.config == FSNetConfig(backbone="resnet50", num_bpm=2, rcam="concat")


def test_weights_url_downloads_once_then_loads_offline(release_like, hub_cache, tmp_path, monkeypatch):
    url = _served(release_like, tmp_path / "server")
    model = load("fsnet", weights=url)
    cached = hub_cache / url.rsplit("/", 1)[-1]
    assert cached.is_file() and not model.training and model.backbone_name == "resnet50"
    saved = torch.load(release_like, weights_only=True)["module.output_s.conv_upsample1.conv_bn.0.weight"]
    assert torch.equal(model.state_dict()["output_s.conv_upsample1.conv_bn.0.weight"], saved.float())

    def refuse(*args, **kwargs):
        raise AssertionError("downloaded a cached file")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setenv("FSNET_OFFLINE", "1")
    assert load("fsnet_resnet50", weights=url).channel == model.channel


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_offline_refuses_to_download(how, hub_cache, tmp_path, monkeypatch):
    url = (tmp_path / "server" / "fsnet_run-0123abcd.pth").as_uri()
    if how == "environment":
        monkeypatch.setenv("FSNET_OFFLINE", "1")
    with pytest.raises(MissingInputError, match="downloads are off") as caught:
        load("fsnet", weights=url, offline=how == "argument")
    assert str(hub_cache) in str(caught.value) and not hub_cache.exists()


def test_weights_path_with_a_clashing_configuration(release_like):
    with pytest.raises(ValueError, match="backbone='res2net50'"):
        load("fsnet_res2net50", weights=str(release_like))
    with pytest.raises(MissingInputError, match="not found"):
        load("fsnet", weights=str(release_like.with_name("absent.pth")))


def test_pretrained_says_where_to_put_the_release(hub_cache):
    if (REPO / "snapshot" / "FSNet" / RELEASE_NAME).is_file():
        pytest.skip("the released model is in this checkout")
    with pytest.raises(MissingInputError) as caught:
        load("fsnet_resnet50", pretrained=True)
    message = str(caught.value)
    assert RELEASE_NAME in message and RELEASE_LINKS[0].split(": ", 1)[1] in message
    assert str(hub_cache / RELEASE_NAME) in message


def test_pretrained_loads_the_release_from_the_hub_cache(release_like, hub_cache):
    hub_cache.mkdir(parents=True)
    os.link(release_like, hub_cache / RELEASE_NAME)
    model = load("fsnet_resnet50", pretrained=True)
    assert model.backbone_name == "resnet50" and not model.training
    with pytest.raises(ValueError, match="ResNet-50"):
        load("fsnet_res2net50", pretrained=True)


def test_another_projects_utils_is_not_mistaken_for_ours(monkeypatch, tmp_path):
    other = types.ModuleType("utils")
    other.__file__ = str(tmp_path / "utils" / "__init__.py")
    monkeypatch.setitem(sys.modules, "utils", other)
    with pytest.raises(ImportError, match="already imported"):
        load("fsnet")
