"""End-to-end: ``python demo.py --quick`` runs every phase and leaves well-formed outputs; bad
input stops it with one ``error:`` line before any work."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import demo
from tests.cli_checks import assert_user_error
from utils.safety import LOCK_NAME


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    workdir = tmp_path_factory.mktemp("demo")
    return workdir, _run_quick(workdir)


def _run_quick(workdir: Path) -> dict:
    return demo.run_demo(demo.get_args_parser().parse_args(["--quick", "--workdir", str(workdir)]))


def _frame_sizes(test_root: Path) -> dict[str, tuple[int, int]]:
    return {f"{frame.parent.parent.name}/{frame.stem}": Image.open(frame).size
            for frame in test_root.glob("*/Frame/*.jpg")}


def test_every_phase_ran_and_was_timed(quick_run: tuple[Path, dict]) -> None:
    _, summary = quick_run
    phases = set(summary["phase_seconds"])
    assert {"toy data set + DIS optical flow", "train: pretrain_rgb", "train: pretrain_flow",
            "train: finetune", "eval.davis16: finetuned", "eval.vsod: finetuned"} <= phases
    assert all(seconds > 0 for seconds in summary["phase_seconds"].values())


def test_stage_checkpoints_exist(quick_run: tuple[Path, dict]) -> None:
    _, summary = quick_run
    for stage in demo.STAGES:
        path = Path(summary["checkpoints"][stage])
        assert path.is_file(), stage
        assert (path.parent / "run.json").is_file()


def test_masks_are_binary_and_full_size(quick_run: tuple[Path, dict]) -> None:
    workdir, summary = quick_run
    sizes = _frame_sizes(workdir / "dataset" / "ToyQuick" / "TestSet" / demo.TOY_DATASET)
    for mode in ("binary", "untrained-binary", "saliency"):
        masks = sorted((Path(summary["result_dir"]) / mode / demo.TOY_DATASET).glob("*/*.png"))
        # every frame but the last of each sequence (no forward flow: official rule)
        n_sequences = len({key.split("/")[0] for key in sizes})
        assert len(masks) == len(sizes) - n_sequences, mode
        for mask in masks:
            image = Image.open(mask)
            assert image.mode == "L"
            assert image.size == sizes[f"{mask.parent.name}/{mask.stem}"]
            if mode != "saliency":
                assert set(np.unique(np.asarray(image))) <= {0, 255}


def test_scores_are_well_formed(quick_run: tuple[Path, dict]) -> None:
    _, summary = quick_run
    for key in ("mean_J_untrained", "mean_J_trained"):
        assert 0.0 <= summary[key] <= 1.0
    assert set(summary["davis16"]) == {"J", "F", "T"}
    assert {"S", "maxE", "maxF", "MAE", "n_sequences", "n_frames"} <= set(summary["vsod"])
    report = json.loads((Path(summary["result_dir"]) / "davis16_trained.json").read_text())
    assert report["overall"]["J"]["mean"] == summary["mean_J_trained"]


def test_overlay_gif_has_one_frame_per_mask(quick_run: tuple[Path, dict]) -> None:
    _, summary = quick_run
    gif_path = Path(summary["overlay_gif"])
    sequence = gif_path.stem.removeprefix("overlay_")
    masks = list((Path(summary["result_dir"]) / "binary" / demo.TOY_DATASET / sequence).glob("*.png"))
    with Image.open(gif_path) as gif:
        assert gif.format == "GIF"
        assert gif.n_frames == len(masks) >= 2


def test_rerun_reuses_everything(quick_run: tuple[Path, dict]) -> None:
    workdir, summary = quick_run
    checkpoints = [Path(path) for path in summary["checkpoints"].values()]
    before = [path.stat().st_mtime_ns for path in checkpoints]
    again = _run_quick(workdir)
    assert "toy data set + DIS optical flow" not in again["phase_seconds"]
    assert [path.stat().st_mtime_ns for path in checkpoints] == before
    assert again["mean_J_trained"] == summary["mean_J_trained"]


def test_missing_imagenet_file_stops_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = demo.main(["--quick", "--workdir", str(tmp_path), "--imagenet", str(tmp_path / "absent.pth")])
    assert_user_error(code, capsys.readouterr().err, "--imagenet", "absent.pth")
    assert list(tmp_path.iterdir()) == []


def test_second_demo_on_the_same_workdir_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    result = tmp_path / "result" / "demo-quick"
    result.mkdir(parents=True)
    lock = result / LOCK_NAME  # held by this (live) test process
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "command": "demo.py"}))
    code = demo.main(["--quick", "--workdir", str(tmp_path)])
    assert_user_error(code, capsys.readouterr().err, "in use by", str(os.getpid()))
    assert not (tmp_path / "dataset" / "ToyQuick").exists()
    assert not (tmp_path / "snapshot" / "demo-quick").exists()


def test_other_settings_never_share_stages_or_data(tmp_path: Path) -> None:
    """A re-run with another --backbone, --seed or --imagenet gets its own data, run and result
    folders (the stages of the old settings are not reused); the defaults keep theirs."""
    def paths(*argv: str) -> demo.DemoPaths:
        return demo.DemoPaths.under(tmp_path, demo.get_args_parser().parse_args(["--quick", *argv]))
    default = paths()
    assert (default.tag, default.data.name) == ("demo-quick", "ToyQuick")
    others = [paths("--backbone", "resnet50"), paths("--seed", "3"),
              paths("--imagenet", str(tmp_path / "a.pth")), paths("--imagenet", str(tmp_path / "b.pth"))]
    runs = [p.run for p in [default, *others]]
    assert len(set(runs)) == len(runs) and len({p.result for p in [default, *others]}) == len(runs)
    assert others[1].data != default.data


def test_fresh_keeps_what_the_demo_did_not_write(tmp_path: Path) -> None:
    paths = demo.DemoPaths.under(tmp_path, demo.get_args_parser().parse_args(["--quick"]))
    mine = [paths.result / "binary" / "Toy" / "a.png", paths.run / "untrained.pth"]
    theirs = [paths.result / "notes.txt", paths.data / "MyData" / "x.png", paths.run / "other" / "last.pth"]
    for path in mine + theirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (paths.data / "toy.json").write_text(json.dumps({"files": []}))
    demo.clear_outputs(paths)
    assert not any(p.exists() for p in mine) and all(p.exists() for p in theirs)
    assert not (paths.data / "toy.json").exists()  # the next run makes the toy set again
