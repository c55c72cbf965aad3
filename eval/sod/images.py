"""Decode GT masks and predictions as ``main_VSOD.m`` sees them after MATLAB's ``imread``.

GT masks are read with the shared mask reader of the training loader and ``eval.davis16``
(:func:`utils.io.mask_to_gray`: the encoding decided from the mode and the value range, so a 0/1
mask, a 16-bit, palette or RGBA mask means what a 0/255 grey mask means), then ``> 128`` as in
``main_VSOD.m`` lines 63-68. For 0/255 grey, 1-bit and soft 8-bit grey GT this is MATLAB's
``imread`` + ``> 128``; where MATLAB would differ (palette *indices* > 128, the alpha channel
ignored, 0/1 masks read as background, 16-bit values > 128/65535) the file is named in a note
(docs/deviations.md D52, D80).
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
from utils.io import FOREGROUND_ABOVE, MASK_MODES, mask_to_gray, open_image

NOTE_TEXT = {
    "rgb_gt": "RGB GT mask: luminance, then the shared mask reader's rules (> 128)",
    "high_bit_gt": "16-bit GT mask: the shared mask reader (two-level: the non-zero value is "
                   "foreground; else scaled to 8 bits, then > 128; MATLAB would binarise > 128 on "
                   "the 16-bit scale)",
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


MATLAB_MODES = ("1", "P", "L", "LA", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L", "I;16N")
GT_NOTES = {"P": "palette_gt", "PA": "palette_gt", "LA": "alpha_gt", "RGBA": "alpha_gt",
            "RGB": "rgb_gt", "I": "high_bit_gt", "I;16": "high_bit_gt"}


def supported_mode(mode: str, role: str) -> bool:
    """Whether a GT (``role`` "gt") or prediction ("pred") of this PIL mode can be decoded."""
    return mode in (MASK_MODES if role == "gt" else MATLAB_MODES)


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


def read_gt(path: Path) -> tuple[np.ndarray, list[Note]]:
    """GT mask as a bool (H, W) array read by the shared mask reader (see the module docstring),
    plus notes naming the file where that differs from MATLAB's ``imread``."""
    image = _load(path)
    if not supported_mode(image.mode, "gt"):
        raise VSODInputError(f"{path}: unsupported image mode {image.mode!r}",
                             "save masks as 8-bit grey PNG")
    try:
        gray = mask_to_gray(image, path)
    except BadInputError as error:
        raise VSODInputError(error.what, error.fix) from error
    kind = GT_NOTES.get(image.mode[:4] if image.mode.startswith("I") else image.mode)
    return gray > FOREGROUND_ABOVE, [Note(kind, str(path))] if kind else []


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
