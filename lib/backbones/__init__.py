"""Backbones of FSNet: ResNet-50 and Res2Net-50 v1b 26w4s, three streams each."""
from lib.backbones.imagenet import find_imagenet_file, load_imagenet_weights
from lib.backbones.streams import SPECS, ThreeStreamBackbone

#: Valid ``FSNet(backbone=...)`` names.
BACKBONES = tuple(SPECS)

__all__ = ["BACKBONES", "ThreeStreamBackbone", "find_imagenet_file", "load_imagenet_weights"]
