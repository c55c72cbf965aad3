"""Decode GT masks and predictions as ``main_VSOD.m`` sees them after MATLAB's ``imread``.

GT (``main_VSOD.m`` lines 63-68): a 1-bit image is used as is; an RGB image goes through
``rgb2gray`` (rounded back to its integer class); then channel 1 is binarised with ``> 128``.
Palette and transparent GT masks (``P``/``PA``/``LA``/``RGBA``) are instead read with the shared
mask reader of the training loader and ``eval.davis16`` (:func:`utils.io.mask_to_gray`: palette
index > 0; transparent pixels composited over black, then luminance), then ``> 128``; MATLAB
would score palette *indices* (index > 128: the object vanishes) and ignore the alpha mask
(docs/deviations.md D52).
Prediction (lines 72-83): resized to the GT size with ``imresize`` if needed (here in memory only,
never written back), channel 1 only, ``im2double`` (uint8 / 255, uint16 / 65535, logical 0/1),
then ``mapminmax(x, 0, 1)`` over all pixels.

A prediction is kept as integer *levels* plus the value of every possible level, so the per-frame
metrics can count pixels per level instead of thresholding the full image 256 times.

Inputs that MATLAB accepts but that point at a pipeline problem (RGB, 16-bit, palette, resized)
are decoded the MATLAB way and reported as :class:`Note` entries naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from eval.sod.resize import imresize_bicubic
from utils.cli import BadInputError, UserError
from utils.io import mask_to_gray, open_image

# MATLAB rgb2gray: first row of inv([1 0.956 0.621; 1 -0.272 -0.647; 1 -1.106 1.703]).
RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)

NOTE_TEXT = {
    "rgb_gt": "RGB GT mask: converted with MATLAB rgb2gray, then > 128",
    "high_bit_gt": "16-bit GT mask: binarised with > 128 on the 16-bit scale, as MATLAB does",
    "palette_gt": "palette GT mask: foreground = palette index > 0 (the shared mask reader; "
                  "MATLAB would use index > 128)",
    "alpha_gt": "GT mask with transparency: composited over black (transparent = background), "
                "then > 128 (the shared mask reader; MATLAB would ignore the alpha channel)",
    "rgb_pred": "RGB prediction: only channel 1 (red) is scored, as main_VSOD.m does",
    "high_bit_pred": "16-bit prediction: scaled by 1/65535 (im2double)",
    "palette_pred": "palette prediction: palette indices are scored as grey levels",
    "resized_pred": "prediction size differs from the GT: resized in memory with MATLAB-style "
                    "bicubic imresize (FSNet's inference writes frame-size maps: check the pipeline)",
    "nan_score": "a frame score is NaN (S-measure: the foreground centroid lies on the last row or "
                 "column, so S_region.m has an empty block); main_VSOD.m carries it into the "
                 "sequence and dataset numbers",
}


SHARED_READER_GT_MODES = ("P", "PA", "LA", "RGBA")  # GT modes read with utils.io.mask_to_gray
MATLAB_MODES = ("1", "P", "L", "LA", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L", "I;16N")


def supported_mode(mode: str, role: str) -> bool:
    """Whether a GT (``role`` "gt") or prediction ("pred") of this PIL mode can be decoded."""
    return mode in MATLAB_MODES or (role == "gt" and mode in SHARED_READER_GT_MODES)


class VSODInputError(UserError, ValueError):
    """An input tree or file that cannot be evaluated; the message names the file and the fix."""


@dataclass(frozen=True)
class Note:
    """A decoded input that needed MATLAB-specific handling (``kind`` is a key of NOTE_TEXT)."""

    kind: str
    path: str


@dataclass(frozen=True)
class Prediction:
    """A prediction as integer levels (H, W) and the mapminmax-ed value of every level."""

    levels: np.ndarray
    values: np.ndarray

    def saliency(self) -> np.ndarray:
        """The float64 map MATLAB scores (values in [0, 1])."""
        return self.values[self.levels]


def _load(path: Path) -> Image.Image:
    """Open and decode ``path`` fully (``utils.io.open_image``); VSODInputError naming it if unreadable."""
    try:
        return open_image(path)
    except BadInputError as exc:
        raise VSODInputError(exc.what, exc.fix) from exc


def _matlab_array(path: Path, role: str, image: Image.Image | None = None) -> tuple[np.ndarray, list[str]]:
    """The array MATLAB's imread returns (bool, uint8 or uint16; 2-D or H x W x 3) and note kinds."""
    image = _load(path) if image is None else image
    mode = image.mode
    notes: list[str] = []
    if mode == "1":
        return np.asarray(image, dtype=bool), notes
    if mode == "P":
        notes.append(f"palette_{role}")
        return np.asarray(image, dtype=np.uint8), notes
    if mode in ("L", "LA"):
        return np.asarray(image.getchannel(0), dtype=np.uint8), notes
    if mode in ("RGB", "RGBA"):
        notes.append(f"rgb_{role}")
        return np.asarray(image.convert("RGB"), dtype=np.uint8), notes
    if mode.startswith("I;16") or mode == "I":
        array = np.asarray(image).astype(np.int64)
        if array.min() < 0 or array.max() > 65535:
            raise VSODInputError(f"{path}: {mode} image with values outside 0..65535; "
                                 "save masks as 8-bit grey PNG")
        notes.append(f"high_bit_{role}")
        return array.astype(np.uint16), notes
    raise VSODInputError(f"{path}: unsupported image mode {mode!r}; save masks as 8-bit grey PNG")


def _rgb2gray(rgb: np.ndarray) -> np.ndarray:
    """MATLAB rgb2gray for an integer H x W x 3 array: luminance rounded to the input class."""
    lum = rgb[..., 0] * RGB2GRAY[0] + rgb[..., 1] * RGB2GRAY[1] + rgb[..., 2] * RGB2GRAY[2]
    return np.clip(np.floor(lum + 0.5), 0, np.iinfo(rgb.dtype).max).astype(rgb.dtype)


def read_gt(path: Path) -> tuple[np.ndarray, list[Note]]:
    """GT mask as a bool (H, W) array with main_VSOD.m's rules (palette / transparent masks:
    the shared mask reader, see the module docstring), plus notes naming the file."""
    image = _load(path)
    if image.mode in SHARED_READER_GT_MODES:
        kind = "palette_gt" if image.mode in ("P", "PA") else "alpha_gt"
        return mask_to_gray(image, path) > 128, [Note(kind, str(path))]
    array, kinds = _matlab_array(path, "gt", image)
    if array.dtype != bool:
        if array.ndim == 3:
            array = _rgb2gray(array)
        array = array > 128
    return array, [Note(kind, str(path)) for kind in kinds]


def _mapminmax_values(n_levels: int, scale: float, lowest: int, highest: int) -> np.ndarray:
    """im2double + mapminmax(x, 0, 1) of every level, given the lowest/highest level present.

    MATLAB: gain = 1/(max - min) is formed first and multiplied (not a division); a constant map
    (max == min) is left unchanged.
    """
    x = np.arange(n_levels, dtype=np.float64) / scale
    lo, hi = x[lowest], x[highest]
    if hi == lo:
        return x
    gain = 1.0 / (hi - lo)
    return (x - lo) * gain


def read_prediction(path: Path, shape: tuple[int, int]) -> tuple[Prediction, list[Note]]:
    """Prediction for a GT of size ``shape`` = (H, W), decoded like main_VSOD.m, plus notes."""
    array, kinds = _matlab_array(path, "pred")
    if array.ndim == 3:  # channel 1 only; imresize works per channel, so resizing it alone is equal
        array = array[..., 0]
    if array.shape != tuple(shape):
        kinds.append("resized_pred")
        if array.dtype == bool:  # imresize of a logical image: 0/255 uint8, resize, > 128
            array = imresize_bicubic(array.astype(np.uint8) * 255, shape) > 128
        else:
            array = imresize_bicubic(array, shape)
    if array.dtype == bool:
        levels, n_levels, scale = array.astype(np.uint8), 2, 1.0
    else:
        n_levels = int(np.iinfo(array.dtype).max) + 1
        levels, scale = array, float(n_levels - 1)
    values = _mapminmax_values(n_levels, scale, int(levels.min()), int(levels.max()))
    return Prediction(levels, values), [Note(kind, str(path)) for kind in kinds]
