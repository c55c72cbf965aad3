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
#: Backbone name -> module providing ``make_stem``, ``make_layers``, ``IMAGENET_FILES``.
SPECS: dict[str, ModuleType] = {"res2net50": res2net, "resnet50": resnet}


def backbone_spec(name: str) -> ModuleType:
    """Return the spec module of backbone ``name`` (``ValueError`` listing the valid names)."""
    if name not in SPECS:
        raise ValueError(f"Unknown backbone {name!r}; choose one of {sorted(SPECS)}")
    return SPECS[name]


class ThreeStreamBackbone(nn.Module):
    """Appearance, motion and merge streams of one backbone type (no ``fc``).

    Methods are named ``run_*`` because the merge stream's submodules take the plain names
    (``maxpool``, ``relu``, ...).
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        spec = backbone_spec(name)
        self._stem_fold_pairs = spec.STEM_FOLD_PAIRS
        for stream in STREAMS:
            conv1, bn1 = spec.make_stem()
            setattr(self, f"conv1{stream}", conv1)
            setattr(self, f"bn1{stream}", bn1)
            setattr(self, f"relu{stream}", nn.ReLU(inplace=True))
            setattr(self, f"maxpool{stream}", nn.MaxPool2d(3, stride=2, padding=1))
            for index, layer in enumerate(spec.make_layers(), start=1):
                setattr(self, f"layer{index}{stream}", layer)

    def fold_pairs(self) -> list[tuple[str, str]]:
        """(conv, BatchNorm) pairs of the three stems (the blocks list their own)."""
        return [
            (conv.format(s=stream), bn.format(s=stream))
            for stream in STREAMS
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
        """The merge stream's own stem, which FSNet never runs (it starts from fused features)."""
        return [self.get_submodule("conv1"), self.get_submodule("bn1")]
