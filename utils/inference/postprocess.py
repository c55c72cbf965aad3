"""Turn FSNet logits into the 8-bit PNG maps that the evaluation toolboxes read.

Two output modes (``inference.py --mode``):

* ``saliency`` (official, V-SOD): the appearance logits ``pred_s`` are upsampled to the
  original frame size (bilinear, ``align_corners=True``), passed through a sigmoid, min-max
  normalised per frame as ``(s - min) / (max - min + 1e-8)`` and then written the way
  ``scipy.misc.imsave`` wrote a float array: scipy's ``bytescale`` stretches the array again
  to 0..255 (a zero range counts as 1, so a constant map becomes all zeros), clips, adds 0.5
  and truncates, i.e. rounds halves *up* (``np.round`` would round them to even). All of it
  in float32, as the official script did.
* ``binary`` (U-VOS): the same upsampled sigmoid is thresholded **before** any
  normalisation, ``255 * (p > threshold)``. Min-max normalisation would make the threshold
  relative to each frame's own range: a frame whose object the model missed entirely
  (every ``p`` near 0) would still get a "foreground" wherever its probability is highest,
  and a frame that is all foreground would lose its weakest pixels. Thresholding the
  calibrated probability keeps 0.5 meaning "more likely object than not".
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from utils.cli import BadInputError

MODES = ("saliency", "binary")


def logits_to_probability(logits: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Upsample one ``(1, h, w)`` or ``(h, w)`` logit map to ``size`` (H, W); return its float32 sigmoid."""
    logits = logits.float().reshape(1, 1, *logits.shape[-2:])
    upsampled = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=True)
    return upsampled.sigmoid_()[0, 0]


def saliency_to_uint8(prob: torch.Tensor) -> torch.Tensor:
    """Official saliency map: per-frame min-max normalisation, then scipy-``bytescale`` rounding.

    The same float32 operations as the official chain, in place: ``bytescale``'s own minimum
    and maximum are those of the normalised map, i.e. the normalised values of the map's minimum
    (0 exactly: rounding keeps ``x -> (x - lo) / d`` monotone) and maximum, so they are computed
    from the two scalars instead of two more passes (bit-identical: a property test checks it).
    """
    prob = prob.float()
    lowest, highest = torch.aminmax(prob)
    divisor = highest - lowest + 1e-8
    spread = (highest - lowest) / divisor  # bytescale's max - min; its min is 0
    spread = torch.where(spread == 0, torch.ones_like(spread), spread)
    scaled = prob.sub(lowest).div_(divisor).mul_(255.0 / spread)
    return scaled.clamp_(0.0, 255.0).add_(0.5).floor_().to(torch.uint8)


def binary_to_uint8(prob: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """U-VOS mask: 255 where the (un-normalised) probability is strictly above ``threshold``, else 0."""
    if not 0.0 <= threshold <= 1.0:
        raise BadInputError(f"--threshold must lie in [0, 1], got {threshold}")
    return (prob > threshold).to(torch.uint8) * 255


def probability_to_uint8(prob: torch.Tensor, mode: str, threshold: float = 0.5) -> torch.Tensor:
    """Dispatch to :func:`saliency_to_uint8` or :func:`binary_to_uint8` by ``mode``."""
    if mode == "saliency":
        return saliency_to_uint8(prob)
    if mode == "binary":
        return binary_to_uint8(prob, threshold)
    raise BadInputError(f"Unknown output mode {mode!r}: use one of {MODES}")


def crf_output(image: np.ndarray, prob: np.ndarray, mode: str, threshold: float = 0.5) -> np.ndarray:
    """Final uint8 map with DenseCRF refinement (:mod:`utils.inference.crf`) of the upsampled probability.

    ``saliency``: the official 8-bit map is refined (as saliency works apply the CRF to their
    saved maps) and the foreground marginal written as ``floor(255 * q + 0.5)``.
    ``binary``: the un-normalised probability is refined and the marginal thresholded.
    """
    from utils.inference.crf import crf_refine
    if mode == "saliency":
        saliency = saliency_to_uint8(torch.from_numpy(prob)).numpy()
        refined = crf_refine(image, saliency.astype(np.float32) / 255.0)
        return np.floor(np.clip(refined, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if mode == "binary":
        return binary_to_uint8(torch.from_numpy(crf_refine(image, prob)), threshold).numpy()
    raise BadInputError(f"Unknown output mode {mode!r}: use one of {MODES}")


def finish_map(prob: torch.Tensor, mode: str, threshold: float = 0.5,
               frame: Optional[np.ndarray] = None) -> np.ndarray:
    """The uint8 map written for one frame: the one post-processing path of every output.

    ``prob`` is the frame-size probability (:func:`logits_to_probability`); with ``frame`` (the
    RGB frame, uint8 ``(H, W, 3)``) the map is DenseCRF-refined (:func:`crf_output`), otherwise
    :func:`probability_to_uint8`.
    """
    if frame is not None:
        return crf_output(frame, prob.cpu().numpy(), mode, threshold)
    return probability_to_uint8(prob, mode, threshold).cpu().numpy()
