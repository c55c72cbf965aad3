"""ResNet-50 stream parts in torchvision's layout (stride on the 3x3 conv, ``downsample.0/1``)."""
from __future__ import annotations

from torch import Tensor, nn

#: ImageNet files accepted for this backbone (torchvision V1 and V2 weights).
IMAGENET_FILES = ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth")
#: Where the files come from (downloaded on first use unless offline: lib/hub.py).
IMAGENET_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"

#: (conv, BatchNorm) pairs of one stream's stem; ``{s}`` is the stream suffix.
STEM_FOLD_PAIRS = (("conv1{s}", "bn1{s}"),)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 bottleneck with expansion 4."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def fold_pairs(self) -> list[tuple[str, str]]:
        """(conv, BatchNorm) submodule pairs where the BN directly follows the conv."""
        pairs = [("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")]
        if self.downsample is not None:
            pairs.append(("downsample.0", "downsample.1"))
        return pairs

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        out += shortcut
        return self.relu(out)


def make_stem() -> tuple[nn.Module, nn.BatchNorm2d]:
    """7x7 stride-2 convolution and its BatchNorm (``conv1``, ``bn1``)."""
    return nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64)


def make_downsample(inplanes: int, outplanes: int, stride: int) -> nn.Sequential:
    """Shortcut projection of a layer's first block: strided 1x1 conv + BN (``downsample.0/1``)."""
    return nn.Sequential(
        nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False),
        nn.BatchNorm2d(outplanes),
    )


#: Block type of ``layer1..layer4`` (built by :func:`lib.backbones.streams.make_layers`).
BLOCK = Bottleneck
