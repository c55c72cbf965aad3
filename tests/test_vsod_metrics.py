"""Per-frame V-SOD metrics, decoding and resizing with MATLAB semantics (eval.sod)."""
from __future__ import annotations

import numpy as np
import py_sod_metrics
import pytest
from PIL import Image

from eval.sod.images import Prediction, read_gt, read_prediction
from eval.sod.metrics import THRESHOLDS, MatlabSmeasure, frame_scores, weighted_fmeasure
from eval.sod.resize import imresize_bicubic

H, W = 24, 32
N = H * W
PERFECT_E = N / (N - 1 + np.spacing(1.0))


def _pred(array: np.ndarray) -> Prediction:
    """A Prediction straight from a uint8 array (the same mapminmax rules as read_prediction)."""
    x = np.arange(256) / 255.0
    lo, hi = x[array.min()], x[array.max()]
    values = x if hi == lo else (x - lo) * (1.0 / (hi - lo))
    return Prediction(array, values)


def _rect_gt() -> np.ndarray:
    gt = np.zeros((H, W), bool)
    gt[5:15, 8:20] = True
    return gt


def test_thresholds_are_matlab_colon_values():
    assert THRESHOLDS.shape == (256,) and THRESHOLDS[0] == 1.0 and THRESHOLDS[-1] == 0.0
    levels = (255 - np.arange(256)) / 255
    assert (THRESHOLDS > levels).sum() == 14 and (THRESHOLDS < levels).sum() == 22


def test_empty_gt_constant_prediction():
    scores = frame_scores(_pred(np.full((H, W), 77, np.uint8)), np.zeros((H, W), bool))
    v = 77 / 255  # a constant map is left unchanged by mapminmax
    assert scores.S == pytest.approx(1 - v, abs=1e-15) and scores.MAE == pytest.approx(v, abs=1e-15)
    assert scores.wF == 0 and scores.adpF == 0 and not scores.F.any()
    # E of an empty GT is sum(1 - map)/(N-1): map = sal > t is full below v, empty from v on
    np.testing.assert_allclose(scores.E, np.where(THRESHOLDS >= v, PERFECT_E, 0.0), rtol=0, atol=1e-15)
    assert scores.adpE == pytest.approx(PERFECT_E)  # 2*mean > v: empty map


def test_full_gt():
    pred = np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1))
    scores = frame_scores(_pred(pred), np.ones((H, W), bool))
    sal = _pred(pred).saliency()
    assert scores.S == pytest.approx(sal.mean(), abs=1e-15) and scores.MAE == pytest.approx(1 - sal.mean())
    n_above = np.array([(sal > t).sum() for t in THRESHOLDS])
    np.testing.assert_allclose(scores.E, n_above / (N - 1), rtol=1e-12)


def test_perfect_binary_prediction_and_the_two_comparisons():
    gt = _rect_gt()
    scores = frame_scores(_pred(gt.astype(np.uint8) * 255), gt)
    assert scores.S == pytest.approx(1.0, abs=1e-12) and scores.MAE == 0 and scores.wF == pytest.approx(1.0)
    assert scores.adpE == pytest.approx(PERFECT_E) and scores.adpF == pytest.approx(1.0)
    # t = 1: F binarises with sal >= t (the GT itself), E with sal > t (an empty map)
    assert scores.F[0] == pytest.approx(1.0) and scores.E[0] == pytest.approx(0.25 * N / (N - 1))
    np.testing.assert_allclose(scores.F[1:-1], 1.0, rtol=1e-12)
    np.testing.assert_allclose(scores.E[1:], PERFECT_E, rtol=1e-12)
    p = gt.mean()  # t = 0: every pixel predicted
    assert scores.F[-1] == pytest.approx(1.3 * p / (0.3 * p + 1))


def test_all_zero_prediction():
    gt = _rect_gt()
    scores = frame_scores(_pred(np.zeros((H, W), np.uint8)), gt)
    assert not scores.F[:-1].any() and scores.F[-1] > 0  # only t = 0 selects pixels (sal >= 0)
    np.testing.assert_allclose(scores.E, 0.25 * N / (N - 1), rtol=1e-12)  # sal > t never holds
    assert scores.MAE == pytest.approx(gt.mean()) and scores.wF == pytest.approx(0.0, abs=1e-12)


def test_curves_match_full_image_thresholding():
    rng = np.random.default_rng(1)
    gt = _rect_gt()
    raw = rng.integers(30, 220, (H, W)).astype(np.uint8)
    pred = _pred(raw)
    scores, sal = frame_scores(pred, gt), pred.saliency()
    for i in (0, 5, 77, 128, 200, 255):
        t = THRESHOLDS[i]
        tp, n_sel = (gt & (sal >= t)).sum(), (sal >= t).sum()
        want_f = 0.0 if tp == 0 else 1.3 * (tp / n_sel) * (tp / gt.sum()) / (0.3 * tp / n_sel + tp / gt.sum())
        assert scores.F[i] == pytest.approx(want_f, abs=1e-15)
        b = (sal > t).astype(float)
        a, g = b - b.mean(), gt - gt.mean()
        align = 2 * (g * a) / (g * g + a * a + np.spacing(1.0))
        assert scores.E[i] == pytest.approx(((align + 1) ** 2 / 4).sum() / (N - 1), abs=1e-12)


def test_centroid_rounds_half_away_from_zero():
    gt = np.zeros((80, 110), bool)
    gt[20:40, 10:16] = True  # 1-based columns 11..16: centroid 13.5 -> MATLAB 14, pysodmetrics 13
    pred = np.random.default_rng(0).random((80, 110))
    ours, theirs = MatlabSmeasure(), py_sod_metrics.Smeasure()
    x, y = 14, 31  # rows 21..40 -> 30.5 -> 31
    area = gt.size
    weights = [x * y / area, (110 - x) * y / area, x * (80 - y) / area]
    weights.append(1.0 - weights[0] - weights[1] - weights[2])
    blocks = [np.s_[:y, :x], np.s_[:y, x:], np.s_[y:, :x], np.s_[y:, x:]]
    want = sum(w * theirs.ssim(pred[b], gt[b]) for w, b in zip(weights, blocks))
    assert ours.region(pred, gt) == want
    assert ours.cal_sm(pred, gt) != theirs.cal_sm(pred, gt)
    gt2 = np.zeros((80, 110), bool)
    gt2[20:41, 10:17] = True  # integer centroid: both agree
    assert ours.cal_sm(pred, gt2) == theirs.cal_sm(pred, gt2)


def test_weighted_f_agrees_with_pysodmetrics():
    rng = np.random.default_rng(2)
    gt = _rect_gt()
    sal = np.clip(gt * 0.8 + rng.random((H, W)) * 0.3, 0, 1)
    ours = weighted_fmeasure(sal, gt)
    assert ours == pytest.approx(py_sod_metrics.WeightedFmeasure().cal_wfm(sal, gt), abs=1e-8)
    assert weighted_fmeasure(sal, np.zeros((H, W), bool)) == 0.0


def test_decoding_rules(tmp_path):
    rgb_gt = np.zeros((4, 4, 3), np.uint8)
    rgb_gt[0, 0] = (200, 100, 50)  # red > 128 but luminance 124: background
    rgb_gt[1, 1] = (100, 200, 100)  # luminance 159: foreground
    Image.fromarray(rgb_gt).save(tmp_path / "gt_rgb.png")
    gt, notes = read_gt(tmp_path / "gt_rgb.png")
    assert not gt[0, 0] and gt[1, 1] and gt.sum() == 1 and [n.kind for n in notes] == ["rgb_gt"]

    rgb_pred = np.zeros((4, 4, 3), np.uint8)
    rgb_pred[..., 0] = np.arange(16).reshape(4, 4) * 10
    rgb_pred[..., 1] = 255 - rgb_pred[..., 0]
    Image.fromarray(rgb_pred).save(tmp_path / "pred_rgb.png")
    pred, notes = read_prediction(tmp_path / "pred_rgb.png", (4, 4))
    x = rgb_pred[..., 0] / 255.0  # channel 1 only; mapminmax multiplies by 1/(max - min)
    np.testing.assert_array_equal(pred.saliency(), (x - x.min()) * (1.0 / (x.max() - x.min())))
    assert [n.kind for n in notes] == ["rgb_pred"]

    deep = (np.arange(16).reshape(4, 4) * 4000 + 100).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "pred16.png")
    pred, notes = read_prediction(tmp_path / "pred16.png", (4, 4))
    x = deep / 65535.0
    np.testing.assert_array_equal(pred.saliency(), (x - x.min()) * (1.0 / (x.max() - x.min())))
    assert [n.kind for n in notes] == ["high_bit_pred"]

    Image.fromarray(np.full((4, 4), 77, np.uint8)).save(tmp_path / "const.png")
    pred, notes = read_prediction(tmp_path / "const.png", (4, 4))
    assert (pred.saliency() == 77 / 255).all() and notes == []

    Image.fromarray(np.eye(4, dtype=bool)).save(tmp_path / "gt1.png")  # 1-bit PNG: logical as is
    gt, notes = read_gt(tmp_path / "gt1.png")
    assert gt.dtype == bool and (gt == np.eye(4, dtype=bool)).all() and notes == []


def test_resize_interior_reproduces_a_linear_ramp():
    """MATLAB's coordinate map u = x/s + 0.5(1 - 1/s): the cubic kernel reproduces a ramp exactly."""
    ramp = np.tile((np.arange(40) * 5 + 20).astype(np.uint8), (3, 1))
    out = imresize_bicubic(ramp, (3, 60)).astype(float)
    x = np.arange(1, 61)
    u = x / 1.5 + 0.5 * (1 - 1 / 1.5)  # 1-based input coordinate
    want = np.floor((u - 1) * 5 + 20 + 0.5)
    interior = (u > 3) & (u < 38)
    np.testing.assert_array_equal(out[:, interior], np.broadcast_to(want[interior], (3, interior.sum())))


def test_resize_agrees_with_pil_bicubic_and_antialiases():
    yy, xx = np.indices((40, 60))
    image = (120 + 80 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.uint8)  # no clipping overshoot
    ours = imresize_bicubic(image, (60, 90)).astype(int)
    pil = np.asarray(Image.fromarray(image).resize((90, 60), Image.BICUBIC)).astype(int)  # also a = -0.5
    assert np.abs(ours - pil)[3:-3, 3:-3].max() <= 1  # rounding of the intermediate pass only
    checker = ((np.indices((40, 60)).sum(axis=0) % 2) * 255).astype(np.uint8)
    small = imresize_bicubic(checker, (20, 30))
    assert np.abs(small[2:-2, 2:-2].astype(int) - 128).max() <= 2  # antialiasing: a flat grey
    assert imresize_bicubic(np.full((7, 9), 99, np.uint8), (14, 5)).tolist() == [[99] * 5] * 14
