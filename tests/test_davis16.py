"""eval.davis16 against the MATLAB toolbox's values on the synthetic DAVIS-2016 fixture."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from eval.davis16 import evaluate, main

FIXTURE = Path(__file__).parent / "fixtures" / "davis_synth"
TOL = 1e-9  # the implementation reproduces ML16 to ~1e-17


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """The seed-0 synthetic set (all 8 sequences), generated once per session."""
    out = tmp_path_factory.mktemp("davis_synth")
    subprocess.run([sys.executable, str(FIXTURE / "make_synthetic_davis.py"), "--out", str(out)],
                   check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def expected() -> dict:
    return json.loads((FIXTURE / "expected_synth_ml16.json").read_text())


def _pred(root: Path, method: str = "synth") -> Path:
    return root / "Results" / "Segmentations" / "480p" / method


@pytest.fixture(scope="session")
def synth_report(synth_root) -> dict:
    return evaluate(_pred(synth_root), synth_root, workers=2)


def _close(actual, wanted) -> bool:
    if wanted is None:
        return actual is None
    return actual is not None and abs(actual - wanted) <= TOL


def test_every_value_matches_matlab(synth_report, expected):
    overall = synth_report["overall"]
    for metric in ("J", "F"):
        for stat in ("mean", "recall", "decay"):
            assert _close(overall[metric][stat], expected["overall"][metric][stat]), (metric, stat)
    assert _close(overall["T"]["mean"], expected["overall"]["T"]["mean"])
    assert set(synth_report["sequences"]) == set(expected["sequences"])
    for name, want in expected["sequences"].items():
        got = synth_report["sequences"][name]
        assert got["n_frames"] == want["n_frames"]
        for metric in ("J", "F"):
            for stat in ("mean", "recall", "decay"):
                assert _close(got[metric][stat], want[metric][stat]), (name, metric, stat)
            assert len(got["per_frame"][metric]) == want["n_frames"] - 2
            for k, (a, b) in enumerate(zip(got["per_frame"][metric], want["per_frame"][metric])):
                assert _close(a, b), (name, metric, k)
        assert _close(got["T"]["mean"], want["T"]["mean"]), name
        # ML16 lists T per scored frame with a leading NaN and without the x5
        want_pairs = [None if v is None else 5 * v for v in want["per_frame"]["T"][1:]]
        assert len(got["per_frame"]["T"]) == len(want_pairs) == want["n_frames"] - 3
        for k, (a, b) in enumerate(zip(got["per_frame"]["T"], want_pairs)):
            assert _close(a, b), (name, "T", k)


def test_json_schema(synth_report):
    assert set(synth_report["overall"]) == {"J", "F", "T"}
    assert set(synth_report["overall"]["J"]) == {"mean", "recall", "decay"}
    assert set(synth_report["overall"]["T"]) == {"mean"}
    entry = synth_report["sequences"]["tiny-short"]
    assert set(entry) == {"n_frames", "J", "F", "T", "per_frame"}
    assert set(entry["per_frame"]) == {"J", "F", "T"}
    json.dumps(synth_report, allow_nan=False)  # NaN is written as null


def test_workers_do_not_change_results(synth_root, synth_report):
    seqs = ["two-blobs-empty", "small-full", "tiny-short", "ell-noisy"]
    single = evaluate(_pred(synth_root), synth_root, seqs=seqs, workers=1)
    for name in seqs:
        assert single["sequences"][name] == synth_report["sequences"][name]


def test_gt_copy_is_perfect(synth_root):
    report = evaluate(_pred(synth_root, "gt-copy"), synth_root,
                      seqs=["two-blobs-empty", "small-01"], metrics=("J", "F"))
    for entry in report["sequences"].values():
        assert all(v == 1.0 for v in entry["per_frame"]["J"] + entry["per_frame"]["F"])
        assert entry["J"] == {"mean": 1.0, "recall": 1.0, "decay": 0.0}
    assert "T" not in report["overall"]


def test_cli_outputs(synth_root, tmp_path, capsys, expected):
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    code = main(["--pred", str(_pred(synth_root)), "--gt", str(synth_root),
                 "--seqs", "tiny-short,small-01", "--json", str(out_json), "--csv", str(out_csv),
                 "--no_progress"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "| mean-J | recall-J | decay-J | mean-F | recall-F | decay-F | T |" in stdout
    assert "tiny-short" in stdout and "small-01" in stdout
    report = json.loads(out_json.read_text())
    want = expected["sequences"]["tiny-short"]["J"]["mean"]
    assert math.isclose(report["sequences"]["tiny-short"]["J"]["mean"], want, abs_tol=TOL)
    rows = out_csv.read_text().splitlines()
    assert rows[0].startswith("sequence,n_frames,J_mean,J_recall,J_decay,F_mean")
    assert len(rows) == 3


def test_val_set_has_the_toolbox_stable_sequences():
    from eval.davis.sequences import UNSTABLE_SEQUENCES, VAL_SEQUENCES
    stable = [s for s in VAL_SEQUENCES if s not in UNSTABLE_SEQUENCES]
    assert len(VAL_SEQUENCES) == 20 and len(stable) == 10
    assert "blackswan" in stable and "goat" not in stable
