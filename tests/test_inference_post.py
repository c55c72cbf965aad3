"""Unit tests of inference post-processing (utils.inference.postprocess), DenseCRF (utils.inference.crf) and the
overlay GIF (utils.inference.overlay). No model involved."""
from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import torch
import torch.nn.functional as F
from PIL import Image

from utils.inference.crf import CRF_PARAMS, crf_refine, require_densecrf
from utils.inference.overlay import tint, write_overlay_gif
from utils.inference.postprocess import (binary_to_uint8, crf_output, logits_to_probability,
                               probability_to_uint8, saliency_to_uint8)

HAS_CRF = importlib.util.find_spec("pydensecrf") is not None


def official_saliency(prob: np.ndarray) -> np.ndarray:
    """The official chain written out with NumPy: min-max with 1e-8, then scipy 1.2 ``bytescale``."""
    s = prob.astype(np.float32)
    s = (s - s.min()) / (s.max() - s.min() + np.float32(1e-8))
    cmin, cmax = s.min(), s.max()
    cscale = cmax - cmin
    if cscale == 0:
        cscale = 1
    scale = np.float32(255.0 / cscale)
    byte = (s - cmin) * scale
    return (byte.clip(0, 255) + np.float32(0.5)).astype(np.uint8)


def test_saliency_matches_official_bytescale():
    rng = np.random.default_rng(0)
    prob = torch.sigmoid(torch.from_numpy(rng.normal(0, 2, (37, 53)).astype(np.float32)))
    ours = saliency_to_uint8(prob).numpy()
    assert ours.dtype == np.uint8 and ours.min() == 0 and ours.max() == 255
    np.testing.assert_array_equal(ours, official_saliency(prob.numpy()))


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=12),
                  elements=st.floats(0.0, 1.0, width=32)))
def test_saliency_is_the_official_chain_for_every_map(prob):
    """Bit for bit on every probability map: constant ones, two values, tiny ranges."""
    np.testing.assert_array_equal(saliency_to_uint8(torch.from_numpy(prob)).numpy(),
                                  official_saliency(prob))


def test_saliency_rounds_half_up_and_constant_map_is_zero():
    half = float(np.float32(2.5 / 255))  # float32 255 * half == 2.5 exactly
    assert np.float32(half) * np.float32(255) == np.float32(2.5)
    out = saliency_to_uint8(torch.tensor([[0.0, half, 1.0]])).numpy()[0]
    np.testing.assert_array_equal(out, [0, 3, 255])  # bytescale: half up (np.round would give 2)
    assert saliency_to_uint8(torch.full((4, 5), 0.3)).max() == 0


def test_binary_thresholds_probability_before_normalisation():
    low = torch.full((6, 7), 0.2)
    low[2, 3] = 0.45  # a min-max normalisation would turn this into 255
    assert binary_to_uint8(low, 0.5).max() == 0
    prob = torch.tensor([[0.2, 0.5, 0.51, 0.9]])
    np.testing.assert_array_equal(binary_to_uint8(prob, 0.5).numpy(), [[0, 0, 255, 255]])
    np.testing.assert_array_equal(probability_to_uint8(prob, "binary", 0.3).numpy(), [[0, 255, 255, 255]])
    with pytest.raises(ValueError, match="threshold"):
        binary_to_uint8(prob, 1.5)
    with pytest.raises(ValueError, match="mode"):
        probability_to_uint8(prob, "soft")


def test_logits_upsampled_to_frame_size_align_corners():
    logits = torch.randn(1, 8, 8)
    prob = logits_to_probability(logits, (30, 45))
    expected = torch.sigmoid(F.interpolate(logits[None], size=(30, 45), mode="bilinear", align_corners=True))
    assert prob.shape == (30, 45)
    torch.testing.assert_close(prob, expected[0, 0], rtol=0, atol=0)
    # align_corners=True keeps the corner logits exactly
    assert torch.equal(prob[0, 0], torch.sigmoid(logits[0, 0, 0]))


def test_tint_blends_colour_by_mask():
    frame = np.full((2, 2, 3), 100, np.uint8)
    mask = np.array([[0, 255], [255, 0]], np.uint8)
    out = tint(frame, mask, color=(255, 0, 0), alpha=0.5)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])
    np.testing.assert_array_equal(out[0, 1], [178, 50, 50])


def test_write_overlay_gif(tmp_path):
    frames, masks = [], []
    for t in range(3):
        frame = tmp_path / f"{t:05d}.jpg"
        Image.fromarray(np.full((40, 60, 3), 60 * t, np.uint8)).save(frame)
        frames.append(frame)
        mask = tmp_path / f"{t:05d}.png"
        Image.fromarray(np.full((40, 60), 255, np.uint8)).save(mask)
        masks.append(mask)
    out = tmp_path / "gif" / "clip.gif"
    write_overlay_gif(frames, masks[:2] + [None], out)
    with Image.open(out) as gif:
        assert gif.n_frames == 3 and gif.size == (60, 40)
        first = np.asarray(gif.convert("RGB"))
        assert first[..., 0].mean() > first[..., 1].mean() + 50  # tinted red
        gif.seek(2)
        last = np.asarray(gif.convert("RGB")).astype(int)
        assert abs(last[..., 0] - last[..., 1]).max() < 10  # no mask: untinted grey
    assert not list(out.parent.glob("*.tmp"))
    with pytest.raises(ValueError, match="2 masks"):
        write_overlay_gif(frames, masks[:2], out)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks[0])
    with pytest.raises(ValueError, match="original frame size"):
        write_overlay_gif(frames, masks, out)


def test_crf_missing_package_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(ImportError, match="pip install pydensecrf2"):
        require_densecrf()


@pytest.mark.skipif(not HAS_CRF, reason="pydensecrf2 not installed (optional extra: pip install pydensecrf2)")
def test_crf_refine_snaps_to_image_edges():
    rng = np.random.default_rng(0)
    image = np.full((48, 64, 3), 30, np.uint8)
    image[12:36, 16:48] = 220
    truth = np.zeros((48, 64), bool)
    truth[12:36, 16:48] = True
    # blurry, noisy probability with a 4-pixel misalignment
    prob = np.clip(np.roll(truth, 4, axis=1) * 0.4 + 0.3 + rng.normal(0, 0.1, truth.shape), 0, 1)
    image.setflags(write=False)  # like np.asarray(PIL image)
    refined = crf_refine(image, prob.astype(np.float32))
    assert refined.shape == truth.shape and refined.dtype == np.float32
    assert 0.0 <= refined.min() and refined.max() <= 1.0
    err_before = np.mean((prob > 0.5) != truth)
    err_after = np.mean((refined > 0.5) != truth)
    assert err_after < err_before
    binary = crf_output(image, prob.astype(np.float32), "binary", 0.5)
    assert set(np.unique(binary)) <= {0, 255}
    saliency = crf_output(image, prob.astype(np.float32), "saliency")
    assert saliency.dtype == np.uint8 and saliency.shape == truth.shape
    assert CRF_PARAMS["iterations"] == 1
