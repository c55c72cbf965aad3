"""Res2Net-50 v1b 26w x 4s stream parts (deep stem, average-pool shortcut).

Key layout equals the Res2Net authors' ``res2net50_v1b_26w_4s`` and timm's ``res2net50d``
(``conv1.0/1/3/4/6``, ``bn1``, ``layerN.i.{conv1,bn1,convs.k,bns.k,conv3,bn3,downsample.1/2}``),
so their ImageNet state_dicts load into each stream without renaming.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

IMAGENET_FILES = ("res2net50_v1b_26w_4s-3cf99910.pth",)
IMAGENET_URL = (
    "https://shanghuagao.oss-cn-beijing.aliyuncs.com/res2net/res2net50_v1b_26w_4s-3cf99910.pth"
)

#: (conv, BatchNorm) pairs of one stream's deep stem; ``{s}`` is the stream suffix.
STEM_FOLD_PAIRS = (
    ("conv1{s}.0", "conv1{s}.1"),
    ("conv1{s}.3", "conv1{s}.4"),
    ("conv1{s}.6", "bn1{s}"),
)

BASE_WIDTH = 26
SCALE = 4


class Bottle2neck(nn.Module):
    """Res2Net block: the 3x3 stage works on ``SCALE`` channel groups of ``width`` channels.

    The first block of each layer, the one with a ``downsample`` shortcut, is a ``stage`` block
    (the authors' ``stype='stage'``): it convolves each group independently and average-pools the
    last group (3x3, block stride). Normal blocks add the previous group's output before each
    3x3 conv and pass the last group through.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        width = planes * BASE_WIDTH // 64
        self.width = width
        self.stage = downsample is not None
        self.conv1 = nn.Conv2d(inplanes, width * SCALE, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width * SCALE)
        if self.stage:
            self.pool = nn.AvgPool2d(3, stride=stride, padding=1)
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
            for _ in range(SCALE - 1)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(SCALE - 1))
        self.conv3 = nn.Conv2d(width * SCALE, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def fold_pairs(self) -> list[tuple[str, str]]:
        """(conv, BatchNorm) submodule pairs where the BN directly follows the conv."""
        pairs = [("conv1", "bn1")]
        pairs += [(f"convs.{index}", f"bns.{index}") for index in range(len(self.convs))]
        pairs.append(("conv3", "bn3"))
        if self.downsample is not None:
            pairs.append(("downsample.1", "downsample.2"))
        return pairs

    def forward(self, x: Tensor) -> Tensor:
        groups = torch.split(self.relu(self.bn1(self.conv1(x))), self.width, 1)
        outs = []
        for index, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            group = groups[index]
            if index > 0 and not self.stage:
                group = outs[-1] + group
            outs.append(self.relu(bn(conv(group))))
        outs.append(self.pool(groups[-1]) if self.stage else groups[-1])
        out = self.bn3(self.conv3(torch.cat(outs, 1)))
        shortcut = x if self.downsample is None else self.downsample(x)
        out += shortcut
        return self.relu(out)


def make_stem() -> tuple[nn.Module, nn.BatchNorm2d]:
    """Deep stem: three 3x3 convs (32, 32, 64 channels; the first strided) and ``bn1``."""
    conv1 = nn.Sequential(
        nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(inplace=True),
        nn.Conv2d(32, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(inplace=True),
        nn.Conv2d(32, 64, 3, padding=1, bias=False),
    )
    return conv1, nn.BatchNorm2d(64)


def make_downsample(inplanes: int, outplanes: int, stride: int) -> nn.Sequential:
    """Shortcut projection of a layer's first block: ``stride`` average pool (ceil mode), then
    1x1 conv + BN (``downsample.1/2``)."""
    return nn.Sequential(
        nn.AvgPool2d(stride, stride=stride, ceil_mode=True, count_include_pad=False),
        nn.Conv2d(inplanes, outplanes, 1, bias=False),
        nn.BatchNorm2d(outplanes),
    )


#: Block type of ``layer1..layer4`` (built by :func:`lib.backbones.streams.make_layers`).
BLOCK = Bottle2neck
