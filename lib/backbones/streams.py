"""Three backbone streams in one module, named as in the released FSNet checkpoint.

Stream ``_rgb`` (appearance), ``_flow`` (motion) and ``""`` (merge) each own ``conv1<s>``,
``bn1<s>``, ``relu<s>``, ``maxpool<s>`` and ``layer1<s>..layer4<s>``, registered stream by stream
in that order so ``state_dict()`` matches the release key for key.
"""
from __future__ import annotations

from types import ModuleType

from torch import Tensor, nn

from lib.backbones import res2net, resnet

STREAMS = ("_rgb", "_flow", "")
#: Backbone name -> module providing ``make_stem``, ``BLOCK``, ``make_downsample``,
#: ``STEM_FOLD_PAIRS``, ``IMAGENET_FILES`` and ``IMAGENET_URL``.
SPECS: dict[str, ModuleType] = {"res2net50": res2net, "resnet50": resnet}
#: Bottleneck width and number of blocks of layer1..layer4 (the 50-layer depth of both backbones).
LAYER_PLANES = (64, 128, 256, 512)
LAYER_BLOCKS = (3, 4, 6, 3)


def backbone_spec(name: str) -> ModuleType:
    """Return the spec module of backbone ``name`` (``ValueError`` listing the valid names)."""
    if name not in SPECS:
        raise ValueError(f"Unknown backbone {name!r}; choose one of {sorted(SPECS)}")
    return SPECS[name]


def make_layers(spec: ModuleType) -> list[nn.Sequential]:
    """``layer1..layer4`` of one stream (output channels 256/512/1024/2048, strides 1/2/2/2).

    The first block of each layer is strided and gets the spec's ``make_downsample`` shortcut;
    the others are plain ``spec.BLOCK`` units.
    """
    layers = []
    inplanes = 64
    for index, (planes, blocks) in enumerate(zip(LAYER_PLANES, LAYER_BLOCKS)):
        stride = 1 if index == 0 else 2
        outplanes = planes * spec.BLOCK.expansion
        downsample = spec.make_downsample(inplanes, outplanes, stride)
        block_list = [spec.BLOCK(inplanes, planes, stride, downsample)]
        block_list += [spec.BLOCK(outplanes, planes) for _ in range(1, blocks)]
        layers.append(nn.Sequential(*block_list))
        inplanes = outplanes
    return layers


class ThreeStreamBackbone(nn.Module):
    """Appearance, motion and merge streams of one backbone type (no ``fc``).

    Methods are named ``run_*`` because the merge stream's submodules take the plain names
    (``maxpool``, ``relu``, ...). ``streams`` picks a subset of :data:`STREAMS` (single-stream
    FSNet variants); ``merge_stem=False`` leaves out the merge stream's stem, which FSNet never
    runs (only the released network keeps it, for its checkpoint format).
    """

    def __init__(self, name: str, streams: tuple[str, ...] = STREAMS,
                 merge_stem: bool = True) -> None:
        super().__init__()
        spec = backbone_spec(name)
        self._stem_fold_pairs = spec.STEM_FOLD_PAIRS
        self.streams = tuple(stream for stream in STREAMS if stream in streams)
        self._stems = tuple(s for s in self.streams if s or merge_stem)
        for stream in self.streams:
            if stream in self._stems:
                conv1, bn1 = spec.make_stem()
                setattr(self, f"conv1{stream}", conv1)
                setattr(self, f"bn1{stream}", bn1)
            setattr(self, f"relu{stream}", nn.ReLU(inplace=True))
            setattr(self, f"maxpool{stream}", nn.MaxPool2d(3, stride=2, padding=1))
            for index, layer in enumerate(make_layers(spec), start=1):
                setattr(self, f"layer{index}{stream}", layer)

    def fold_pairs(self) -> list[tuple[str, str]]:
        """(conv, BatchNorm) pairs of the stems (the blocks list their own)."""
        return [
            (conv.format(s=stream), bn.format(s=stream))
            for stream in self._stems
            for conv, bn in self._stem_fold_pairs
        ]

    def run_stem(self, x: Tensor, stream: str) -> Tensor:
        """Stem output after the ReLU and before the max-pool (1/2 resolution, 64 channels)."""
        x = getattr(self, f"conv1{stream}")(x)
        return getattr(self, f"relu{stream}")(getattr(self, f"bn1{stream}")(x))

    def run_maxpool(self, x: Tensor, stream: str) -> Tensor:
        """The stream's 3x3 stride-2 max-pool."""
        return getattr(self, f"maxpool{stream}")(x)

    def run_layer(self, x: Tensor, index: int, stream: str) -> Tensor:
        """Run ``layer<index><stream>`` (index 1..4)."""
        return getattr(self, f"layer{index}{stream}")(x)

    def unused_stem(self) -> list[nn.Module]:
        """The merge stream's own stem, which FSNet never runs (it starts from fused features);
        empty when it was left out."""
        return [self.get_submodule("conv1"), self.get_submodule("bn1")] if "" in self._stems else []
