"""Optional fully connected CRF (DenseCRF, Krähenbühl & Koltun 2011) refinement of one map.

The FSNet paper reports a "w/ CRF" row but the release has no CRF code. We use the settings
that the saliency line of work shares (the ``crf_refine`` used with DSS/R3Net-style models):

* two labels (background, foreground); unary energies from the foreground probability ``p``:
  ``-log(p + eps) / (tau * sigmoid(p))`` for foreground and
  ``-log(1 - p + eps) / (tau * sigmoid(1 - p))`` for background, ``tau = 1.05``, ``eps = 1e-8``;
* a smoothness kernel ``addPairwiseGaussian(sxy=3, compat=3)``;
* an appearance kernel ``addPairwiseBilateral(sxy=60, srgb=5, compat=5)`` on the RGB frame;
* one mean-field iteration; the result is the foreground marginal in [0, 1].

Needs the optional package ``pydensecrf2`` (``pip install pydensecrf2`` or
``pip install -r requirements-extra.txt``); it installs the module ``pydensecrf``.
"""
from __future__ import annotations

from types import ModuleType

import numpy as np

from utils.cli import BadInputError

CRF_PARAMS = {
    "tau": 1.05,
    "eps": 1e-8,
    "gaussian_sxy": 3,
    "gaussian_compat": 3,
    "bilateral_sxy": 60,
    "bilateral_srgb": 5,
    "bilateral_compat": 5,
    "iterations": 1,
}


def require_densecrf() -> ModuleType:
    """Import ``pydensecrf.densecrf`` or raise ``ImportError`` saying how to install it."""
    try:
        import pydensecrf.densecrf as densecrf
    except ImportError as error:
        raise ImportError(
            "--crf needs the optional package pydensecrf2, which is not installed. "
            "Install it with `pip install pydensecrf2` (or `pip install -r requirements-extra.txt`), "
            "or run without --crf."
        ) from error
    return densecrf


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def crf_refine(image: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """Refine a foreground probability map ``prob`` (H, W) in [0, 1] with the RGB ``image`` (H, W, 3) uint8.

    Returns the CRF foreground marginal as float32 (H, W) in [0, 1] (parameters: ``CRF_PARAMS``).
    """
    densecrf = require_densecrf()
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise BadInputError(f"crf_refine needs an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    if prob.shape != image.shape[:2]:
        raise BadInputError(f"crf_refine: map size {prob.shape} differs from image size {image.shape[:2]}")
    height, width = prob.shape
    p = np.clip(prob.astype(np.float64), 0.0, 1.0)
    tau, eps = CRF_PARAMS["tau"], CRF_PARAMS["eps"]
    unary = np.stack([
        -np.log(1.0 - p + eps) / (tau * _sigmoid(1.0 - p)),
        -np.log(p + eps) / (tau * _sigmoid(p)),
    ]).reshape(2, -1).astype(np.float32)

    crf = densecrf.DenseCRF2D(width, height, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary))
    crf.addPairwiseGaussian(sxy=CRF_PARAMS["gaussian_sxy"], compat=CRF_PARAMS["gaussian_compat"])
    # np.array copies: pydensecrf rejects read-only buffers such as np.asarray(PIL image).
    crf.addPairwiseBilateral(
        sxy=CRF_PARAMS["bilateral_sxy"], srgb=CRF_PARAMS["bilateral_srgb"],
        rgbim=np.array(image, order="C"), compat=CRF_PARAMS["bilateral_compat"],
    )
    marginals = np.asarray(crf.inference(CRF_PARAMS["iterations"]), dtype=np.float32)
    return marginals[1].reshape(height, width)
