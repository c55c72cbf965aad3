"""The one definition of FSNet's input transforms, shared by training and inference.

Official behaviour (default): PIL bilinear resize to a square ``size x size`` (aspect ratio not
kept; identical to torchvision ``Resize((size, size))`` on a PIL image), ``ToTensor`` and ImageNet
normalisation for **both** the RGB frame and the colour-coded flow; the GT is resized bilinearly
too, so its edges become soft values in [0, 1].
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from utils.flow.color import mirror_flow_color

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Resize a PIL image to ``size x size`` with bilinear interpolation (official ``Resize``)."""
    return image.resize((size, size), Image.BILINEAR)


def input_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """RGB or flow image -> normalised float tensor (3, size, size)."""
    tensor = TF.to_tensor(resize_square(image.convert("RGB"), size))
    return TF.normalize(tensor, IMAGENET_MEAN, IMAGENET_STD)


def gt_tensor(mask: Image.Image, size: int) -> torch.Tensor:
    """8-bit grey mask -> float tensor (1, size, size) in [0, 1], bilinearly resized (soft edges)."""
    return TF.to_tensor(resize_square(mask.convert("L"), size))


def hflip_image(image: Image.Image) -> Image.Image:
    """Mirror an RGB image or mask left-right."""
    return image.transpose(Image.FLIP_LEFT_RIGHT)


def hflip_flow_image(flow_image: Image.Image) -> Image.Image:
    """Mirror a colour-coded flow image left-right **and** negate its horizontal component."""
    return Image.fromarray(mirror_flow_color(np.asarray(flow_image.convert("RGB"))))
