"""The one definition of FSNet's input transforms, shared by training and inference.

Official behaviour (default): PIL bilinear resize to a square ``size x size`` (aspect ratio not
kept; identical to torchvision ``Resize((size, size))`` on a PIL image), ``ToTensor`` and ImageNet
normalisation for **both** the RGB frame and the colour-coded flow; the GT is resized bilinearly
too, so its edges become soft values in [0, 1].

``ToTensor`` and ``Normalize`` are written out here with torchvision's arithmetic (bytes to
float32, divided by 255; minus the mean, divided by the standard deviation, both float32), so the
tensors are bit-identical to torchvision's (``tests/test_data.py`` checks it for any image) while
a run does not import torchvision, which costs about a second at start-up.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from utils.flow.color import mirror_flow_color

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Resize a PIL image to ``size x size`` with bilinear interpolation (official ``Resize``)."""
    return image.resize((size, size), Image.BILINEAR)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """An 8-bit ``L`` or ``RGB`` image -> float32 tensor (C, H, W) in [0, 1] (``ToTensor``)."""
    array = np.array(image, dtype=np.uint8, copy=True)
    tensor = torch.from_numpy(array).view(image.height, image.width, -1)
    return tensor.permute(2, 0, 1).contiguous().to(torch.float32).div(255)


def input_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """RGB or flow image -> normalised float tensor (3, size, size)."""
    return to_tensor(resize_square(image.convert("RGB"), size)).sub_(_MEAN).div_(_STD)


def gt_tensor(mask: Image.Image, size: int) -> torch.Tensor:
    """8-bit grey mask -> float tensor (1, size, size) in [0, 1], bilinearly resized (soft edges)."""
    return to_tensor(resize_square(mask.convert("L"), size))


def hflip_image(image: Image.Image) -> Image.Image:
    """Mirror an RGB image or mask left-right."""
    return image.transpose(Image.FLIP_LEFT_RIGHT)


def hflip_flow_image(flow_image: Image.Image) -> Image.Image:
    """Mirror a colour-coded flow image left-right **and** negate its horizontal component."""
    return Image.fromarray(mirror_flow_color(np.asarray(flow_image.convert("RGB"))))
