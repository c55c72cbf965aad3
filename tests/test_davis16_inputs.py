"""eval.davis16 inputs: the three GT layouts, binarisation, bad-input errors, --allow_missing."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eval.davis.io import DavisInputError, pred_sequences, read_prediction
from eval.davis16 import evaluate, main

H, W, N = 36, 52, 6


def _mask(t: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=np.uint8)
    m[8 + t:24 + t, 10 + 2 * t:30 + 2 * t] = 255
    return m


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture()
def tiny(tmp_path) -> dict[str, Path]:
    """Two sequences in all three GT layouts plus predictions (GT shifted by one pixel)."""
    roots = {"davis": tmp_path / "davis", "fsnet": tmp_path / "fsnet", "plain": tmp_path / "plain",
             "pred": tmp_path / "pred"}
    for seq in ("aa", "bb"):
        for t in range(N):
            name = f"{t:05d}.png"
            _save(_mask(t), roots["davis"] / "Annotations" / "480p" / seq / name)
            _save(_mask(t), roots["fsnet"] / seq / "GT" / name)
            _save(_mask(t), roots["plain"] / seq / name)
            _save(np.roll(_mask(t), 1, axis=1), roots["pred"] / seq / name)
        (roots["fsnet"] / seq / "Frame").mkdir()
    return roots


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_three_gt_layouts_agree(tiny):
    before = _snapshot(tiny["pred"])
    reports = [evaluate(tiny["pred"], tiny[layout]) for layout in ("davis", "fsnet", "plain")]
    assert reports[0]["overall"] == reports[1]["overall"] == reports[2]["overall"]
    assert reports[0]["sequences"] == reports[1]["sequences"] == reports[2]["sequences"]
    assert 0 < reports[0]["overall"]["J"]["mean"] < 1
    assert len(reports[0]["sequences"]["aa"]["per_frame"]["J"]) == N - 2
    assert len(reports[0]["sequences"]["aa"]["per_frame"]["T"]) == N - 3
    assert _snapshot(tiny["pred"]) == before  # inputs untouched


def test_missing_prediction_frame(tiny):
    (tiny["pred"] / "aa" / "00002.png").unlink()
    with pytest.raises(DavisInputError, match=r"missing predictions[\s\S]*00002\.png"):
        evaluate(tiny["pred"], tiny["plain"])
    report = evaluate(tiny["pred"], tiny["plain"], allow_missing=True)
    assert report["meta"]["missing_predictions"] == {"aa": ["00002"]}
    assert report["sequences"]["aa"]["per_frame"]["J"][1] == 0.0  # scored as an empty mask
    assert report["sequences"]["aa"]["per_frame"]["T"][0] is None  # pair (1, 2) touches it


def test_first_and_last_prediction_are_not_needed(tiny):
    (tiny["pred"] / "aa" / "00000.png").unlink()
    (tiny["pred"] / f"aa/{N - 1:05d}.png").unlink()
    assert evaluate(tiny["pred"], tiny["plain"])["sequences"]["aa"]["n_frames"] == N


def test_size_mismatch(tiny):
    _save(np.zeros((H, W + 2), np.uint8), tiny["pred"] / "bb" / "00003.png")
    with pytest.raises(DavisInputError, match=r"size mismatch[\s\S]*bb[/\\]00003\.png"):
        evaluate(tiny["pred"], tiny["plain"])


def test_empty_and_short_sequences(tiny):
    for f in (tiny["plain"] / "bb").iterdir():
        f.unlink()
    with pytest.raises(DavisInputError, match="holds 0 GT PNG"):
        evaluate(tiny["pred"], tiny["plain"])
    for t in range(2):
        _save(_mask(t), tiny["plain"] / "bb" / f"{t:05d}.png")
    with pytest.raises(DavisInputError, match="at least 3"):
        evaluate(tiny["pred"], tiny["plain"])


def test_unknown_sequence(tiny):
    with pytest.raises(DavisInputError, match="Unknown sequence.*'zz'"):
        evaluate(tiny["pred"], tiny["plain"], seqs=["aa", "zz"])
    shutil.copytree(tiny["pred"] / "aa", tiny["pred"] / "cc")
    with pytest.raises(DavisInputError, match="Unknown sequence.*'cc'"):
        evaluate(tiny["pred"], tiny["plain"])
    assert set(evaluate(tiny["pred"], tiny["plain"], seqs=["aa"])["sequences"]) == {"aa"}


def test_missing_sequence_folder(tiny):
    shutil.rmtree(tiny["pred"] / "bb")
    with pytest.raises(DavisInputError, match="No prediction folder"):
        evaluate(tiny["pred"], tiny["plain"], seqs=["aa", "bb"])
    report = evaluate(tiny["pred"], tiny["plain"], seqs=["aa", "bb"], allow_missing=True)
    assert report["meta"]["missing_predictions"]["bb"] == [f"{t:05d}" for t in range(1, N - 1)]


def test_unstable_sequences_get_no_t_unless_t_all(tiny):
    for root in (tiny["plain"], tiny["pred"]):
        (root / "aa").rename(root / "goat")  # "goat" is on the toolbox's unstable list
    report = evaluate(tiny["pred"], tiny["plain"])
    assert report["meta"]["t_sequences"] == ["bb"]
    assert report["sequences"]["goat"]["T"] == {"mean": None, "evaluated": False}
    assert report["sequences"]["goat"]["per_frame"]["T"] == []
    assert report["overall"]["T"]["mean"] == report["sequences"]["bb"]["T"]["mean"]
    every = evaluate(tiny["pred"], tiny["plain"], t_all=True)
    assert every["sequences"]["goat"]["T"]["evaluated"]
    assert every["meta"]["t_sequences"] == ["bb", "goat"]


def test_non_png_files(tiny):
    (tiny["pred"] / "aa" / "00001.jpg").write_bytes(b"x")
    with pytest.raises(DavisInputError, match=r"only PNG[\s\S]*00001\.jpg"):
        evaluate(tiny["pred"], tiny["plain"])
    (tiny["pred"] / "aa" / "00001.jpg").unlink()
    (tiny["plain"] / "bb" / "notes.txt").write_text("x")
    with pytest.raises(DavisInputError, match=r"notes\.txt"):
        evaluate(tiny["pred"], tiny["plain"])


def test_bad_masks(tiny):
    _save(np.zeros((H, W, 3), np.uint8), tiny["pred"] / "aa" / "00002.png")
    with pytest.raises(DavisInputError, match="3 channels"):
        evaluate(tiny["pred"], tiny["plain"])
    _save(np.full((H, W), 7, np.uint8), tiny["plain"] / "bb" / "00002.png")
    with pytest.raises(DavisInputError, match="not binary"):
        evaluate(tiny["pred"], tiny["plain"], seqs=["bb"])


def test_cli_reports_errors(tiny, capsys):
    assert main(["--pred", str(tiny["pred"]), "--gt", str(tiny["plain"]), "--seqs", "zz",
                 "--no_progress"]) == 2
    assert "Unknown sequence" in capsys.readouterr().err


def test_binarisation_rules(tmp_path):
    grey = np.array([[0, 100, 128, 129, 255]], dtype=np.uint8)
    _save(grey, tmp_path / "g.png")
    assert read_prediction(tmp_path / "g.png", (1, 5), None).tolist() == [[0, 0, 0, 1, 1]]
    assert read_prediction(tmp_path / "g.png", (1, 5), 0.5).tolist() == [[0, 0, 1, 1, 1]]
    low = np.array([[0, 100, 101, 201]], dtype=np.uint8)  # max 201 -> > round(100.5) = 101
    _save(low, tmp_path / "l.png")
    assert read_prediction(tmp_path / "l.png", (1, 4), None).tolist() == [[0, 0, 0, 1]]
    ones = np.array([[0, 1, 1, 0]], dtype=np.uint8)
    _save(ones, tmp_path / "o.png")
    assert read_prediction(tmp_path / "o.png", (1, 4), 0.5).tolist() == [[0, 1, 1, 0]]
    assert not read_prediction(None, (2, 3), None).any()


def test_stray_files_beside_sequences_are_named_in_a_warning(tmp_path: Path) -> None:
    (tmp_path / "seq").mkdir()
    (tmp_path / "notes.txt").write_text("not a sequence")
    with pytest.warns(UserWarning, match="notes.txt"):
        assert pred_sequences(tmp_path) == ["seq"]
