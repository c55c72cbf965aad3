"""Colour coding of optical flow: ``torchvision.utils.flow_to_image`` (Middlebury wheel, normalised
per frame by the largest motion), its inverse, and the horizontal mirror of a colour-coded image."""
from __future__ import annotations

import functools

import numpy as np
import torch


def flow_to_color(flow: np.ndarray) -> np.ndarray:
    """``(H, W, 2)`` flow -> ``(H, W, 3)`` uint8 RGB via ``torchvision.utils.flow_to_image``."""
    from torchvision.utils import flow_to_image  # here: importing torchvision takes about a second
    tensor = torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32)).permute(2, 0, 1)
    return flow_to_image(tensor).permute(1, 2, 0).numpy()


_LUT_BITS = 6  # colour bins per channel = 2**_LUT_BITS


@functools.lru_cache(maxsize=1)
def _color_decode_table() -> np.ndarray:
    """Table colour-bin -> mean normalised (u, v), built by encoding a dense polar grid with
    ``flow_to_color`` itself (so it inverts exactly the wheel torchvision uses)."""
    from scipy import ndimage

    angles = np.linspace(-np.pi, np.pi, 2880, endpoint=False, dtype=np.float32)
    radii = np.linspace(0.0, 1.0, 257, dtype=np.float32)
    uv = np.stack([np.outer(radii, np.cos(angles)), np.outer(radii, np.sin(angles))], axis=-1)
    colors = flow_to_color(uv).reshape(-1, 3)
    shift = 8 - _LUT_BITS
    bins = 1 << _LUT_BITS
    index = ((colors[:, 0].astype(np.int64) >> shift) * bins + (colors[:, 1] >> shift)) * bins \
        + (colors[:, 2] >> shift)
    count = np.bincount(index, minlength=bins ** 3)
    table = np.stack([np.bincount(index, weights=uv.reshape(-1, 2)[:, k], minlength=bins ** 3)
                      for k in range(2)], axis=-1) / np.maximum(count, 1)[:, None]
    empty = (count == 0).reshape(bins, bins, bins)
    nearest = ndimage.distance_transform_edt(empty, return_distances=False, return_indices=True)
    table = table.reshape(bins, bins, bins, 2)[tuple(nearest)]
    return table.reshape(-1, 2).astype(np.float32)


def flow_from_color(color: np.ndarray) -> np.ndarray:
    """Invert the colour coding: RGB uint8 ``(H, W, 3)`` -> normalised flow ``(H, W, 2)``.

    The result is the flow divided by the frame's largest motion (magnitude <= 1); the absolute
    scale is not recoverable from a colour-coded image.
    """
    shift = 8 - _LUT_BITS
    c = color.astype(np.int64) >> shift
    index = (c[..., 0] << (2 * _LUT_BITS)) + (c[..., 1] << _LUT_BITS) + c[..., 2]
    return _color_decode_table()[index]


def mirror_flow_color(color: np.ndarray) -> np.ndarray:
    """Horizontally flip a colour-coded flow image, negating u so the colours stay consistent.

    Decodes the wheel, flips, negates u and re-encodes with the same wheel. One extra column of
    unit flow is appended during encoding so that the per-frame normalisation stays exactly 1.
    """
    uv = flow_from_color(color)[:, ::-1].copy()
    uv[..., 0] *= -1.0
    padded = np.concatenate([uv, np.tile(np.float32([1.0, 0.0]), (uv.shape[0], 1, 1))], axis=1)
    return np.ascontiguousarray(flow_to_color(padded)[:, :-1])
