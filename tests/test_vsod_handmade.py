"""main_VSOD.m aggregation on a hand-made 3-sequence set with known answers, and bad input."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eval.sod.images import VSODInputError
from eval.sod.metrics import THRESHOLDS
from eval.vsod import evaluate, evaluate_datasets, main

H, W = 12, 16
N = H * W
E0 = N / (N - 1 + np.spacing(1.0))  # E-measure of a perfect map
EMPTY = np.zeros((H, W), np.uint8)
RECT = EMPTY.copy()
RECT[3:8, 4:11] = 255


def const(level: int) -> np.ndarray:
    return np.full((H, W), level, np.uint8)


def write_sequence(root: Path, seq: str, gts: list[np.ndarray], preds: list[np.ndarray | None]) -> None:
    """GT under root/gt/Set/<seq>/GT/, predictions under root/pred/Set/<seq>/ (None: no file)."""
    for i, (gt, pred) in enumerate(zip(gts, preds)):
        name = f"{i:05d}.png"
        (root / "gt" / "Set" / seq / "GT").mkdir(parents=True, exist_ok=True)
        (root / "pred" / "Set" / seq).mkdir(parents=True, exist_ok=True)
        Image.fromarray(gt).save(root / "gt" / "Set" / seq / "GT" / name)
        if pred is not None:
            Image.fromarray(pred).save(root / "pred" / "Set" / seq / name)


@pytest.fixture()
def handmade(tmp_path) -> Path:
    """seqA: 3 GT frames (1 evaluated), seqB: 4 (2), seqC: 6 (4); first/last frames are decoys."""
    decoy = const(255)  # S = 0, MAE = 1 on an empty GT: moves every number if it were evaluated
    write_sequence(tmp_path, "seqA", [EMPTY] * 3, [decoy, const(51), decoy])
    write_sequence(tmp_path, "seqB", [EMPTY] * 4, [decoy, const(102), const(153), decoy])
    write_sequence(tmp_path, "seqC", [RECT] * 6, [255 - RECT] + [RECT] * 4 + [255 - RECT])
    return tmp_path


def run(root: Path, **kwargs) -> dict:
    return evaluate(root / "pred", root / "gt", **kwargs)["datasets"]["Set"]


def test_aggregation_known_answers(handmade):
    got = evaluate_datasets(handmade / "pred", handmade / "gt")["Set"]
    # per-frame: empty GT + constant v: S = 1 - v, MAE = v, wF = adpF = F = 0, adpE = E0;
    # perfect map: S = 1, MAE = 0, wF = adpF = 1, adpE = E0.  Sequences first, then unweighted.
    assert got.S == pytest.approx(np.mean([1 - 0.2, np.mean([1 - 0.4, 1 - 0.6]), 1.0]), abs=1e-12)
    assert got.S != pytest.approx((0.8 + 0.6 + 0.4 + 4) / 7, abs=1e-3)  # not pooled over frames
    assert got.MAE == pytest.approx(np.mean([0.2, 0.5, 0.0]), abs=1e-12)
    assert got.wF == pytest.approx(1 / 3, abs=1e-12) and got.adpF == pytest.approx(1 / 3, abs=1e-12)
    assert got.adpE == pytest.approx(E0 * np.mean([1 / 2, 2 / 3, 4 / 5]), abs=1e-12)  # sum/(n+1)
    assert (got.n_sequences, got.n_frames) == (3, 7)
    assert [s.n_frames for s in got.sequences.values()] == [1, 2, 4]
    # F: only seqC scores (1 for t > 0; every pixel selected at t = 0)
    p = (RECT > 0).mean()
    f_curve = np.full(256, 1 / 3)
    f_curve[-1] = (1.3 * p / (0.3 * p + 1)) / 3
    np.testing.assert_allclose(got.F, f_curve, rtol=0, atol=1e-12)
    assert got.maxF == pytest.approx(1 / 3) and got.meanF == pytest.approx(f_curve.mean(), abs=1e-12)
    # E: empty GT and constant v -> E0 where v is not > t; perfect map -> E0 except t = 1 (empty map)
    e_a = E0 * (THRESHOLDS >= 51 / 255)
    e_b = E0 * ((THRESHOLDS >= 102 / 255) * 1.0 + (THRESHOLDS >= 153 / 255)) / 2
    e_c = np.full(256, E0)
    e_c[0] = 0.25 * N / (N - 1)
    e_curve = (e_a + e_b + e_c) / 3
    np.testing.assert_allclose(got.E, e_curve, rtol=0, atol=1e-12)
    assert got.maxE == pytest.approx(e_curve.max(), abs=1e-12)
    assert got.meanE == pytest.approx(e_curve.mean(), abs=1e-12)


def test_fix_adaptive_e(handmade):
    assert run(handmade, fix_adaptive_e=True)["adpE"] == pytest.approx(E0, abs=1e-12)


def test_first_and_last_predictions_are_not_needed(handmade):
    want = run(handmade)
    for name in ("00000.png", "00005.png"):
        (handmade / "pred" / "Set" / "seqC" / name).unlink()
    assert run(handmade) == want


def test_missing_prediction_names_the_file(handmade, capsys):
    missing = handmade / "pred" / "Set" / "seqB" / "00002.png"
    missing.rename(missing.with_suffix(".jpg"))
    with pytest.raises(VSODInputError, match="seqB/00002.png.*names must match"):
        run(handmade)
    assert main(["--pred", str(handmade / "pred"), "--gt", str(handmade / "gt")]) == 2
    assert str(missing) in capsys.readouterr().err


def test_short_sequence_fails_or_is_excluded(handmade, caplog):
    want = run(handmade)
    write_sequence(handmade, "seqD", [RECT] * 2, [RECT] * 2)
    with pytest.raises(VSODInputError, match=r"seqD/GT: 2 GT frame\(s\)(.|\n)*--short_sequences exclude"):
        run(handmade)
    with caplog.at_level(logging.WARNING):
        assert run(handmade, short_sequences="exclude") == want
    assert any("seqD" in r.getMessage() and "excluded" in r.getMessage() for r in caplog.records)


def test_stray_files_are_reported_and_ignored(handmade, caplog):
    want = run(handmade)
    (handmade / "gt" / "Set" / "list.txt").write_text("seqA\n")
    (handmade / "gt" / "Set" / "seqA" / "GT" / "Thumbs.db").write_bytes(b"\0")
    with caplog.at_level(logging.WARNING):
        assert run(handmade) == want
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "list.txt" in messages and "Thumbs.db" in messages


def test_rgb_and_16bit_inputs_warn_or_fail_with_strict(handmade, caplog):
    rgb = handmade / "pred" / "Set" / "seqC" / "00002.png"
    Image.fromarray(np.stack([RECT, EMPTY, EMPTY], axis=-1)).save(rgb)  # channel 1 = the same map
    deep = handmade / "gt" / "Set" / "seqB" / "GT" / "00001.png"
    Image.fromarray(EMPTY.astype(np.uint16)).save(deep)
    with caplog.at_level(logging.WARNING):
        decoded_like_matlab = run(handmade)
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert str(rgb) in messages and str(deep) in messages
    with pytest.raises(VSODInputError, match="--strict(.|\n)*seqC/00002.png"):
        run(handmade, strict=True)
    assert "16-bit GT" in messages and "channel 1" in messages
    assert decoded_like_matlab["S"] == pytest.approx(np.mean([0.8, 0.5, 1.0]), abs=1e-12)


def test_unreadable_image_names_the_file(handmade):
    bad = handmade / "pred" / "Set" / "seqA" / "00001.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(VSODInputError, match="seqA/00001.png"):
        run(handmade)


def test_unknown_dataset_is_an_error(handmade):
    with pytest.raises(VSODInputError, match="Nope"):
        evaluate(handmade / "pred", handmade / "gt", ["Nope"])


def test_nan_s_measure_propagates_like_matlab(tmp_path, caplog):
    edge = EMPTY.copy()
    edge[:, -1] = 255  # foreground only in the last column: S_region has an empty block
    write_sequence(tmp_path, "seqE", [edge] * 3, [edge] * 3)
    with caplog.at_level(logging.WARNING):
        got = run(tmp_path)
    assert got["S"] is None and got["MAE"] == 0.0
    assert any("NaN" in r.getMessage() and "seqE/00001.png" in r.getMessage() for r in caplog.records)
    out = tmp_path / "o.json"
    assert main(["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["datasets"]["Set"]["S"] is None


def test_plot_without_matplotlib_says_how_to_install(handmade, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    rc = main(["--pred", str(handmade / "pred"), "--gt", str(handmade / "gt"), "--plot", str(handmade / "plots")])
    assert rc == 2 and "pip install matplotlib" in capsys.readouterr().err
    assert not (handmade / "plots").exists()


def test_plot_writes_curves(handmade):
    pytest.importorskip("matplotlib", reason="matplotlib is an optional extra (requirements-extra.txt)")
    args = ["--pred", str(handmade / "pred"), "--gt", str(handmade / "gt"), "--plot", str(handmade / "plots")]
    assert main(args) == 0
    for name in ("Set_PR.png", "Set_F_threshold.png"):
        with Image.open(handmade / "plots" / name) as image:
            assert image.size[0] > 100
