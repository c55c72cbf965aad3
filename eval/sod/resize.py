"""MATLAB ``imresize(A, [H W])`` with its defaults (bicubic, antialiasing), for integer images.

``main_VSOD.m`` resizes a prediction whose size differs from its GT with ``imresize`` before
scoring it (and writes the result back over the prediction file; this re-implementation keeps it
in memory).  MATLAB's algorithm, as documented by MathWorks and visible in ``imresize.m``:

* per dimension, scale = output length / input length; output pixel ``x`` (1-based) maps to input
  coordinate ``u = x/scale + 0.5*(1 - 1/scale)``;
* Keys cubic kernel (a = -0.5), width 4; when shrinking (scale < 1) the kernel is stretched by
  ``1/scale`` and scaled by ``scale`` (antialiasing);
* weights are normalised to sum 1 per output pixel, out-of-range input indices are mirrored
  (symmetric padding);
* the dimensions are resized one after the other, the one with the smaller scale first, and each
  pass returns the input class (uint8/uint16: rounded half away from zero and saturated), so the
  intermediate image is integer as well.
"""
from __future__ import annotations

import numpy as np

_KERNEL_WIDTH = 4.0


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def _contributions(in_len: int, out_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights (out_len, P) and 0-based input indices (out_len, P) for one dimension."""
    scale = out_len / in_len
    width = _KERNEL_WIDTH
    if scale < 1:
        def kernel(v: np.ndarray) -> np.ndarray:
            return scale * _cubic(scale * v)
        width = _KERNEL_WIDTH / scale
    else:
        kernel = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(np.ceil(width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_len)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], indices[:, keep]


def _resize_axis(image: np.ndarray, out_len: int, axis: int) -> np.ndarray:
    """One separable pass along ``axis``, returning the input's integer class."""
    weights, indices = _contributions(image.shape[axis], out_len)
    src = np.moveaxis(image, axis, 0).astype(np.float64)
    acc = np.zeros((out_len,) + src.shape[1:], dtype=np.float64)
    for tap in range(weights.shape[1]):
        acc += weights[:, tap, None] * src[indices[:, tap]]
    info = np.iinfo(image.dtype)
    rounded = np.floor(np.abs(acc) + 0.5) * np.sign(acc)
    out = np.clip(rounded, info.min, info.max).astype(image.dtype)
    return np.moveaxis(out, 0, axis)


def imresize_bicubic(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D uint8/uint16 image to ``shape`` = (H, W) like MATLAB ``imresize(image, shape)``."""
    if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"imresize_bicubic expects a 2-D uint8/uint16 array, got {image.dtype} {image.shape}")
    scales = [shape[axis] / image.shape[axis] for axis in (0, 1)]
    out = image
    for axis in sorted((0, 1), key=lambda a: scales[a]):  # stable sort, as MATLAB's sort
        if out.shape[axis] != shape[axis]:
            out = _resize_axis(out, shape[axis], axis)
    return out
