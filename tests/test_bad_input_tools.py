"""Bad input for the data and evaluation tools (utils.flow, utils.toy, utils.davis_import,
eval.davis16, eval.vsod): one ``error:`` line, exit status 2, no traceback, inputs untouched.

Tools run in-process through ``main(argv)`` (fast); only the lock holder is a subprocess.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from tests.cli_checks import REPO, assert_user_error, checksums
from utils.cli import UserError
from utils.data.images import read_mask
from utils.flow.__main__ import main as flow_main
from utils.flow.generate import generate_flow
from utils.job import Job
from utils.safety import SOURCE_RECORD
from utils.safety import LOCK_NAME
from utils.toy import main as toy_main
from utils.davis_import import main as import_main
from eval.davis16 import evaluate as davis_evaluate, main as davis_main
from eval.davis.io import read_gt as davis_read_gt
from eval.sod.images import read_gt as vsod_read_gt
from eval.vsod import evaluate as vsod_evaluate, main as vsod_main

H, W = 24, 32


def _frame(t: int) -> np.ndarray:
    """A textured frame shifted by 2t pixels (flow has something to find)."""
    rng = np.random.default_rng(0)
    base = (rng.random((H, W + 16)) * 255).astype(np.uint8)
    return np.repeat(base[:, 2 * t: 2 * t + W, None], 3, axis=2)


def _frames(folder: Path, count: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(count):
        Image.fromarray(_frame(t)).save(folder / f"{t:05d}.png")
    return folder


def _mask(shift: int = 0) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[6:18, 8 + shift:20 + shift] = 255
    return mask


def _davis(root: Path, seqs=("aa", "bb"), count: int = 4) -> tuple[Path, Path]:
    """Plain-layout GT <root>/gt/<seq>/*.png and predictions <root>/pred/<seq>/*.png."""
    for seq in seqs:
        for t in range(count):
            for kind in ("gt", "pred"):
                (root / kind / seq).mkdir(parents=True, exist_ok=True)
                Image.fromarray(_mask(t)).save(root / kind / seq / f"{t:05d}.png")
    return root / "pred", root / "gt"


def _vsod(root: Path, count: int = 4) -> tuple[Path, Path]:
    """GT <root>/gt/Set/seq/GT/*.png and predictions <root>/pred/Set/seq/*.png."""
    for t in range(count):
        for folder in (root / "gt" / "Set" / "seq" / "GT", root / "pred" / "Set" / "seq"):
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_mask(t)).save(folder / f"{t:05d}.png")
    return root / "pred", root / "gt"


def run_module_async(module: str, argv: list[str]) -> subprocess.Popen:
    """Start ``python -m module argv`` in the background (output discarded)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", module] + argv, cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _refused(capsys, code: int, *fragments: str) -> str:
    return assert_user_error(code, capsys.readouterr().err, *fragments)


# ---------------------------------------------------------------- utils.flow: inputs are sacred

def test_flow_out_is_the_frame_folder(tmp_path, capsys):
    frames = _frames(tmp_path / "clip")
    before = checksums(frames)
    _refused(capsys, flow_main(["--frames", str(frames), "--out", str(frames)]), "refusing to write")
    assert checksums(frames) == before


def test_flow_out_inside_the_frame_folder(tmp_path, capsys):
    frames = _frames(tmp_path / "clip")
    before = checksums(frames)
    _refused(capsys, flow_main(["--frames", str(frames), "--out", str(frames / "flow")]), "overlaps")
    assert checksums(frames) == before and not (frames / "flow").exists()


def test_flow_folder_naming_the_frame_folder(tmp_path, capsys):
    tree = tmp_path / "TestSet" / "Set"
    _frames(tree / "s1" / "Frame")
    before = checksums(tree)
    _refused(capsys, flow_main(["--frames", str(tree), "--flow_folder", "Frame"]), "refusing to write")
    assert checksums(tree) == before


def test_flow_out_through_a_symlink_to_the_frames(tmp_path, capsys):
    frames = _frames(tmp_path / "clip")
    (tmp_path / "alias").symlink_to(frames)
    before = checksums(frames)
    _refused(capsys, flow_main(["--frames", str(frames), "--out", str(tmp_path / "alias")]), "overlaps")
    assert checksums(frames) == before


def test_two_plain_frame_folders_get_their_own_default_outputs(tmp_path):
    a, b = _frames(tmp_path / "a"), _frames(tmp_path / "b", count=2)
    before = checksums(a, b)
    out_a = generate_flow(a, progress=False)["out_dirs"]
    out_b = generate_flow(b, progress=False)["out_dirs"]
    assert out_a == [str(tmp_path / "a_OF_FlowNet2")] and out_b == [str(tmp_path / "b_OF_FlowNet2")]
    assert len(list((tmp_path / "a_OF_FlowNet2").glob("*.jpg"))) == 2
    assert len(list((tmp_path / "b_OF_FlowNet2").glob("*.jpg"))) == 1
    assert checksums(a, b) == before


def test_output_of_another_input_is_not_replaced_without_overwrite(tmp_path, capsys):
    a, b = _frames(tmp_path / "a", count=4), _frames(tmp_path / "b")
    out = tmp_path / "flow"
    assert flow_main(["--frames", str(a), "--out", str(out)]) == 0
    capsys.readouterr()
    before = checksums(a, b, out)
    for extra in ([], ["--skip_existing"]):
        _refused(capsys, flow_main(["--frames", str(b), "--out", str(out)] + extra),
                 "holds the flow of", "--overwrite")
        assert checksums(a, b, out) == before
    assert flow_main(["--frames", str(b), "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.glob("*.jpg")) == ["00000.jpg", "00001.jpg"]  # none of a's left
    assert json.loads((out / SOURCE_RECORD).read_text())["source"] == os.path.relpath(b, out)


def test_folder_of_unknown_files_is_not_replaced(tmp_path, capsys):
    frames = _frames(tmp_path / "clip")
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "00000.jpg").write_bytes(b"my holiday")
    (mine / "holiday.jpg").write_bytes(b"keep me")
    before = checksums(frames, mine)
    _refused(capsys, flow_main(["--frames", str(frames), "--out", str(mine)]), "no record of their input")
    assert checksums(frames, mine) == before
    assert flow_main(["--frames", str(frames), "--out", str(mine), "--overwrite"]) == 0
    assert (mine / "holiday.jpg").read_bytes() == b"keep me"  # replaced where names collide only


# ---------------------------------------------------------------- utils.flow: checked before work

def test_flow_reports_every_bad_frame_in_one_message(tmp_path, capsys):
    frames = _frames(tmp_path / "clip", count=5)
    (frames / "00001.png").write_bytes(b"")                                     # 0 bytes
    data = (frames / "00003.png").read_bytes()
    (frames / "00003.png").write_bytes(data[: len(data) // 2])                  # truncated
    Image.fromarray(np.zeros((H + 8, W, 3), np.uint8)).save(frames / "00004.png")  # other size
    before = checksums(frames)
    line = _refused(capsys, flow_main(["--frames", str(frames)]), "3 unusable frame(s)")
    for name in ("00001.png", "00003.png", "00004.png"):
        assert name in line
    assert checksums(frames) == before and not (tmp_path / "clip_OF_FlowNet2").exists()


def test_flow_workers_must_be_positive(tmp_path, capsys):
    frames = _frames(tmp_path / "clip")
    _refused(capsys, flow_main(["--frames", str(frames), "--workers", "0"]), "--workers")
    assert not (tmp_path / "clip_OF_FlowNet2").exists()


# ---------------------------------------------------------------- utils.flow: one owner per folder

@contextlib.contextmanager
def _live_process() -> Iterator[int]:
    holder = subprocess.Popen(["sleep", "60"])
    try:
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def _write_lock(folder: Path, pid: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": pid,
                                                "started": "earlier", "command": "python -m utils.flow"}))


def test_second_concurrent_flow_run_stops_at_once(tmp_path, capsys):
    frames = _frames(tmp_path / "clip")
    out = tmp_path / "clip_OF_FlowNet2"
    with _live_process() as pid:
        _write_lock(out, pid)
        _refused(capsys, flow_main(["--frames", str(frames)]), f"process {pid}", "in use")
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written


def test_stale_lock_is_taken_over_and_leftover_temporaries_removed(tmp_path, capsys):
    frames = _frames(tmp_path / "clip")
    out = tmp_path / "clip_OF_FlowNet2"
    dead = subprocess.Popen(["true"])
    dead.wait()
    _write_lock(out, dead.pid)
    half = out / f".x.png.{Job(socket.gethostname(), dead.pid, '').tag}.abcdefgh.tmp"
    half.write_bytes(b"half a file")
    assert flow_main(["--frames", str(frames), "--skip_existing"]) == 0
    err = capsys.readouterr().err
    assert "warning: taking over the stale lock" in err and "Traceback" not in err
    assert not half.exists() and not (out / LOCK_NAME).exists()
    assert len(list(out.glob("*.jpg"))) == 2


# ---------------------------------------------------------------- utils.toy / utils.davis_import

def test_toy_sizes_out_of_range(tmp_path, capsys):
    _refused(capsys, toy_main(["--out", str(tmp_path / "toy"), "--quick", "--width", "0",
                               "--test_frames", "1"]), "--width 0", "--test_frames 1")
    assert not (tmp_path / "toy").exists()


def test_toy_refuses_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("user data")
    before = checksums(tmp_path)
    _refused(capsys, toy_main(["--out", str(tmp_path), "--quick"]), "no toy.json")
    assert checksums(tmp_path) == before


def _davis_release(root: Path) -> Path:
    for seq in ("bear", "cows"):
        _frames(root / "JPEGImages" / "480p" / seq, count=3)
        for t in range(3):
            (root / "Annotations" / "480p" / seq).mkdir(parents=True, exist_ok=True)
            Image.fromarray(_mask(t)).save(root / "Annotations" / "480p" / seq / f"{t:05d}.png")
    sets = root / "ImageSets" / "480p"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("bear\n")
    (sets / "val.txt").write_text("cows\n")
    return root


def test_davis_import_into_the_davis_folder(tmp_path, capsys):
    davis = _davis_release(tmp_path / "DAVIS")
    before = checksums(davis)
    _refused(capsys, import_main(["--davis", str(davis), "--data_root", str(davis), "--no_flow"]),
             "overlaps --davis")
    assert checksums(davis) == before


def test_davis_import_lists_every_bad_file_before_writing(tmp_path, capsys):
    davis = _davis_release(tmp_path / "DAVIS")
    (davis / "JPEGImages" / "480p" / "bear" / "00001.png").write_bytes(b"")
    Image.fromarray(np.zeros((H + 2, W), np.uint8)).save(davis / "Annotations" / "480p" / "cows" / "00002.png")
    before = checksums(davis)
    line = _refused(capsys, import_main(["--davis", str(davis), "--data_root", str(tmp_path / "data")]),
                    "2 problem(s)", "bear/00001.png", "cows/00002.png")
    assert "Cannot read image" in line
    assert checksums(davis) == before and not (tmp_path / "data").exists()


def test_davis_import_reports_every_kind_of_problem_in_one_run(tmp_path, capsys):
    """A sequence folder missing, a damaged frame and a destination holding another file."""
    davis = _davis_release(tmp_path / "DAVIS")
    (davis / "ImageSets" / "480p" / "train.txt").write_text("bear\nghost\n")
    (davis / "JPEGImages" / "480p" / "bear" / "00001.png").write_bytes(b"")
    taken = tmp_path / "data" / "TestSet" / "DAVIS" / "cows" / "Frame" / "00000.png"
    taken.parent.mkdir(parents=True)
    taken.write_bytes(b"the user's file")
    before = checksums(tmp_path)
    _refused(capsys, import_main(["--davis", str(davis), "--data_root", str(tmp_path / "data")]),
             "3 problem(s)", "ghost", "bear/00001.png", str(taken))
    assert checksums(tmp_path) == before


# ---------------------------------------------------------------- eval.davis16

def test_davis16_json_onto_a_gt_or_prediction_png(tmp_path, capsys):
    pred, gt = _davis(tmp_path)
    before = checksums(pred, gt)
    for target in (gt / "aa" / "00001.png", pred / "bb" / "00002.png", pred):
        _refused(capsys, davis_main(["--pred", str(pred), "--gt", str(gt), "--json", str(target),
                                     "--no_progress"]), "refusing to write")
        assert checksums(pred, gt) == before
    _refused(capsys, davis_main(["--pred", str(pred), "--gt", str(gt), "--csv", str(gt / "x.csv"),
                                 "--no_progress"]), "--csv")


def test_davis16_unwritable_report_found_before_work(tmp_path, capsys):
    pred, gt = _davis(tmp_path)
    (tmp_path / "afile").write_text("a file, not a folder")
    _refused(capsys, davis_main(["--pred", str(pred), "--gt", str(gt), "--json",
                                 str(tmp_path / "afile" / "r.json"), "--no_progress"]), "afile")
    assert capsys.readouterr().out == ""  # no table: nothing was evaluated


def test_davis16_read_only_report_folder(tmp_path, capsys):
    pred, gt = _davis(tmp_path)
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: chmod does not make a folder read-only here")
        _refused(capsys, davis_main(["--pred", str(pred), "--gt", str(gt), "--json",
                                     str(folder / "r.json"), "--no_progress"]), "not writable")
        assert capsys.readouterr().out == ""
    finally:
        folder.chmod(0o755)


@contextlib.contextmanager
def _tmpfs(folder: Path, options: str) -> Iterator[Path]:
    folder.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_davis16_read_only_file_system(tmp_path, capsys):
    pred, gt = _davis(tmp_path)
    with _tmpfs(tmp_path / "ro", "ro,size=64k") as folder:
        _refused(capsys, davis_main(["--pred", str(pred), "--gt", str(gt), "--json",
                                     str(folder / "r.json"), "--no_progress"]), "read-only file system")
        assert capsys.readouterr().out == ""


def test_davis16_full_disk_names_the_file(tmp_path, capsys):
    pred, gt = _davis(tmp_path)
    before = checksums(pred, gt)
    with _tmpfs(tmp_path / "full", "size=16k") as folder:
        with contextlib.suppress(OSError):
            with open(folder / "filler", "wb") as handle:
                handle.write(b"x" * 1024 * 1024)
        _refused(capsys, davis_main(["--pred", str(pred), "--gt", str(gt), "--json",
                                     str(folder / "r.json"), "--no_progress"]), "no space left on device", "r.json")
        assert not (folder / "r.json").exists() and not list(folder.glob(".*.tmp"))
    assert checksums(pred, gt) == before


def test_davis16_every_bad_file_in_one_message(tmp_path, capsys):
    pred, gt = _davis(tmp_path, seqs=("aa", "bb", "cc"))
    (gt / "aa" / "00001.png").write_bytes(b"")                                       # 0 bytes
    data = (pred / "bb" / "00002.png").read_bytes()
    (pred / "bb" / "00002.png").write_bytes(data[:40])                              # truncated
    Image.fromarray(np.zeros((H + 4, W), np.uint8)).save(gt / "cc" / "00002.png")   # GT of another size
    before = checksums(pred, gt)
    _refused(capsys, davis_main(["--pred", str(pred), "--gt", str(gt), "--no_progress"]),
             "aa/00001.png", "bb/00002.png", "cc/00002.png", "size mismatch")
    assert checksums(pred, gt) == before


def test_davis16_workers_must_be_positive(tmp_path, capsys):
    pred, gt = _davis(tmp_path)
    _refused(capsys, davis_main(["--pred", str(pred), "--gt", str(gt), "--workers", "0",
                                 "--no_progress"]), "--workers")


# ---------------------------------------------------------------- eval.vsod

def test_vsod_reports_onto_inputs_are_refused(tmp_path, capsys):
    pred, gt = _vsod(tmp_path)
    before = checksums(pred, gt)
    for flag, target in (("--csv", gt / "Set" / "seq" / "GT" / "00001.png"),
                         ("--json", pred / "Set" / "seq" / "00002.png"),
                         ("--plot", pred / "Set")):
        _refused(capsys, vsod_main(["--pred", str(pred), "--gt", str(gt), flag, str(target),
                                    "--no_progress"]), "refusing to write", flag)
        assert checksums(pred, gt) == before


def test_vsod_every_unreadable_file_in_one_message(tmp_path, capsys):
    pred, gt = _vsod(tmp_path, count=5)
    (gt / "Set" / "seq" / "GT" / "00001.png").write_bytes(b"")
    data = (pred / "Set" / "seq" / "00003.png").read_bytes()
    (pred / "Set" / "seq" / "00003.png").write_bytes(data[:40])
    Image.fromarray(_mask()).convert("F").save(pred / "Set" / "seq" / "00002.tiff")
    (pred / "Set" / "seq" / "00002.tiff").rename(pred / "Set" / "seq" / "00002.png")  # a float TIFF
    before = checksums(pred, gt)
    _refused(capsys, vsod_main(["--pred", str(pred), "--gt", str(gt), "--no_progress"]),
             "3 unusable file(s)", "GT/00001.png", "seq/00003.png", "seq/00002.png: unsupported image mode 'F'")
    assert checksums(pred, gt) == before


def test_vsod_unwritable_csv_found_before_work(tmp_path, capsys):
    pred, gt = _vsod(tmp_path)
    (tmp_path / "afile").write_text("a file")
    _refused(capsys, vsod_main(["--pred", str(pred), "--gt", str(gt), "--csv",
                                str(tmp_path / "afile" / "r.csv"), "--no_progress"]), "afile")
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------- masks read one way everywhere

def _mask_encodings(folder: Path) -> dict[str, Path]:
    """One mask in every common encoding: grey 0/255 and 0/1, 16-bit 0/65535 and 0/1, 1-bit,
    palette (index 1 drawn in a dark colour), RGBA (white everywhere, the object only in the
    alpha channel) and opaque RGBA."""
    mask = _mask()
    folder.mkdir(parents=True, exist_ok=True)
    images = {"grey": Image.fromarray(mask), "grey01": Image.fromarray(mask // 255),
              "16bit": Image.fromarray(mask.astype(np.uint16) * 257),
              "16bit01": Image.fromarray((mask // 255).astype(np.uint16)),
              "1bit": Image.fromarray(mask > 0),
              "rgba": Image.fromarray(np.dstack([np.full((H, W, 3), 255, np.uint8), mask]), mode="RGBA"),
              "opaque_rgba": Image.fromarray(np.dstack([mask] * 3 + [np.full((H, W), 255, np.uint8)]),
                                             mode="RGBA")}
    palette = Image.fromarray((mask > 0).astype(np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 40, 10, 10] + [0] * 762)  # index 1 = dark red (luminance 18)
    images["palette"] = palette
    paths = {name: folder / f"{name}.png" for name in images}
    for name, image in images.items():
        image.save(paths[name])
    return paths


def _training_gt(root: Path, mask: Path):
    """The GT tensor the training loader makes of ``mask`` (one static sample)."""
    from utils.data.dataset import TrainDataset
    for folder in ("Imgs", "GTs"):
        (root / "TrainSet_StaticAndVideo" / folder).mkdir(parents=True, exist_ok=True)
    Image.fromarray(_frame(0)).save(root / "TrainSet_StaticAndVideo" / "Imgs" / "s.jpg")
    (root / "TrainSet_StaticAndVideo" / "GTs" / "s.png").write_bytes(mask.read_bytes())
    return TrainDataset(root, "pretrain_rgb", trainsize=32)[0][2]


def test_every_mask_encoding_is_read_the_same_by_every_reader(tmp_path):
    paths = _mask_encodings(tmp_path / "masks")
    before = checksums(tmp_path / "masks")
    expected = _mask() > 0
    reference = _training_gt(tmp_path / "train_grey", paths["grey"])
    for name, path in paths.items():
        assert (read_mask(path) > 0).tolist() == expected.tolist(), name
        assert davis_read_gt(path).tolist() == expected.tolist(), name
        assert vsod_read_gt(path)[0].tolist() == expected.tolist(), name
        assert _training_gt(tmp_path / f"train_{name}", path).equal(reference), name
    assert checksums(tmp_path / "masks") == before


def test_an_ambiguous_mask_encoding_is_refused_by_every_reader(tmp_path):
    """A floating-point mask (0..1 or 0..255?) is refused with one clear message everywhere."""
    path = tmp_path / "float.tif"
    Image.fromarray((_mask() / 255.0).astype(np.float32), mode="F").save(path)
    for reader in (read_mask, davis_read_gt, vsod_read_gt):
        with pytest.raises(UserError, match="cannot be read as a mask unambiguously|unsupported image mode"):
            reader(path)


def test_every_mask_encoding_scores_the_same_in_both_evaluators(tmp_path):
    encodings = _mask_encodings(tmp_path / "masks")
    scores = {}
    for name, path in encodings.items():
        root = tmp_path / name
        pred, _ = _vsod(root)
        for t in range(4):
            gt_frame = root / "gt" / "Set" / "seq" / "GT" / f"{t:05d}.png"
            gt_frame.write_bytes(path.read_bytes())
        vsod = vsod_evaluate(pred, root / "gt")["datasets"]["Set"]
        davis = davis_evaluate(pred / "Set", root / "gt" / "Set", metrics=("J", "F"))["overall"]
        scores[name] = (vsod, davis)
    assert all(score == scores["grey"] for score in scores.values())
    assert scores["grey"][1]["J"]["mean"] < 1  # the predictions move, the GT does not: a real score


def test_killed_flow_run_resumes_cleanly(tmp_path):
    """SIGKILL a running flow job: the next run takes over its lock, removes its temporaries and
    completes; every flow image decodes (writes are atomic)."""
    frames = tmp_path / "clip"
    frames.mkdir()
    rng = np.random.default_rng(1)
    texture = (rng.random((144, 192 + 60)) * 255).astype(np.uint8)
    for t in range(60):
        Image.fromarray(texture[:, t: t + 192]).save(frames / f"{t:05d}.png")
    before = checksums(frames)
    out = tmp_path / "clip_OF_FlowNet2"
    job = run_module_async("utils.flow", ["--frames", str(frames)])
    try:
        while job.poll() is None and len(list(out.glob("*.jpg"))) < 5:
            time.sleep(0.05)
    finally:
        job.kill()
        job.wait()
    assert job.returncode == -signal.SIGKILL  # killed mid-run, not finished
    assert (out / LOCK_NAME).exists()         # its lock is left behind
    code = flow_main(["--frames", str(frames), "--skip_existing"])
    assert code == 0 and checksums(frames) == before
    assert not (out / LOCK_NAME).exists() and not list(out.glob(".*.tmp"))
    written = sorted(out.glob("*.jpg"))
    assert len(written) == 59
    for path in written:
        with Image.open(path) as image:
            image.load()


@pytest.mark.parametrize("module", ["utils.flow.__main__", "utils.toy", "utils.davis_import",
                                    "eval.davis16", "eval.vsod"])
def test_help_names_the_program_and_every_flag(module):
    import importlib

    parser = importlib.import_module(module).get_args_parser()
    assert parser.prog == "python -m " + module.replace(".__main__", "")
    undocumented = [action.dest for action in parser._actions if not action.help]
    assert undocumented == [] and "--debug" in parser.format_help()


def test_two_reports_on_one_file_are_refused(tmp_path, capsys):
    pred, gt = _davis(tmp_path)
    report = str(tmp_path / "r.txt")
    _refused(capsys, davis_main(["--pred", str(pred), "--gt", str(gt), "--json", report, "--csv", report,
                                 "--no_progress"]), "both name")
    vpred, vgt = _vsod(tmp_path / "v")
    _refused(capsys, vsod_main(["--pred", str(vpred), "--gt", str(vgt), "--json", report, "--csv", report,
                                "--no_progress"]), "both name")
    assert not Path(report).exists()


@pytest.mark.parametrize("tool", ["davis16", "vsod"])
def test_two_reports_naming_one_file_through_a_symlink(tmp_path, capsys, tool):
    """--json and --csv differ as strings but are one file: refused before any scoring."""
    pred, gt = _davis(tmp_path) if tool == "davis16" else _vsod(tmp_path)
    (tmp_path / "reports").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "reports", target_is_directory=True)
    (tmp_path / "reports" / "r.txt").write_text("the user's notes")
    before = checksums(tmp_path)
    main = davis_main if tool == "davis16" else vsod_main
    code = main(["--pred", str(pred), "--gt", str(gt), "--json", str(tmp_path / "reports" / "r.txt"),
                 "--csv", str(tmp_path / "alias" / ".." / "alias" / "r.txt"), "--no_progress"])
    assert "both name one file" in assert_user_error(code, capsys.readouterr().err)
    assert checksums(tmp_path) == before


def test_regenerated_toy_set_keeps_what_the_user_added(tmp_path, capsys):
    """Regenerating replaces only the files the earlier toy set recorded: a dataset the user
    put beside it (and files inside the toy's folders) stay byte-identical, and get no flow."""
    out = tmp_path / "Toy"
    assert toy_main(["--out", str(out), "--quick"]) == 0
    mine = _frames(out / "TestSet" / "Mine" / "seq" / "Frame", 2)
    notes = out / "TrainSet_Video" / "Imgs" / "notes.txt"
    notes.write_text("mine")
    before = checksums(mine, notes)
    assert toy_main(["--out", str(out), "--quick", "--seed", "1"]) == 0
    capsys.readouterr()
    assert checksums(mine, notes) == before
    assert not (mine.parent / "OF_FlowNet2").exists()
    assert json.loads((out / "toy.json").read_text())["seed"] == 1


def test_very_long_frame_names_are_written_within_the_name_limit(tmp_path, capsys):
    """Frames whose names take 254 of the 255 bytes a file name may have: flow is written (its
    temporary names are shortened), nothing else changes."""
    frames = tmp_path / "clip"
    frames.mkdir()
    for t in range(2):
        Image.fromarray(_frame(t)).save(frames / f"{'f' * 249}{t}.png")
    before = checksums(frames)
    assert flow_main(["--frames", str(frames), "--out", str(tmp_path / "flow")]) == 0
    assert checksums(frames) == before
    assert [p.name for p in (tmp_path / "flow").glob("*.jpg")] == [f"{'f' * 249}0.jpg"]


def test_a_file_name_over_the_limit_is_one_error_line(tmp_path, capsys):
    frames = _frames(tmp_path / "clip", 2)
    _refused(capsys, flow_main(["--frames", str(frames), "--out", str(tmp_path / ("o" * 300))]),
             "too long")


def test_ctrl_c_stops_a_flow_run_with_workers_in_one_line(tmp_path):
    """SIGINT to the whole process group (what a terminal's Ctrl-C sends) while two worker
    processes compute flow: one error line, no traceback from the main process or the workers."""
    frames = tmp_path / "clip"
    frames.mkdir()
    texture = (np.random.default_rng(2).random((288, 384 + 120)) * 255).astype(np.uint8)
    for t in range(120):  # enough work that the signal comes mid-run
        Image.fromarray(texture[:, t: t + 384]).save(frames / f"{t:05d}.png")
    before = checksums(frames)
    out = tmp_path / "clip_OF_FlowNet2"
    job = subprocess.Popen([sys.executable, "-m", "utils.flow", "--frames", str(frames),
                            "--workers", "2"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           start_new_session=True,  # (a test runner in the background ignores
                           # SIGINT, and children inherit that: give it back to the tool)
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        while job.poll() is None and len(list(out.glob("*.jpg"))) < 3:
            time.sleep(0.05)
        os.killpg(job.pid, signal.SIGINT)
        _, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert_user_error(job.returncode, err, "interrupted by Ctrl-C")
    assert checksums(frames) == before


def test_skip_existing_never_keeps_flow_of_another_method(tmp_path, capsys):
    """DIS flow is not "done" for a Farneback run: refused, and --overwrite replaces all of it."""
    frames = _frames(tmp_path / "clip")
    out = tmp_path / "clip_OF_FlowNet2"
    assert flow_main(["--frames", str(frames)]) == 0
    before = checksums(frames, out)
    _refused(capsys, flow_main(["--frames", str(frames), "--method", "farneback", "--skip_existing"]),
             "holds dis flow, not farneback flow", "--overwrite")
    assert checksums(frames, out) == before
    assert flow_main(["--frames", str(frames), "--method", "farneback", "--overwrite"]) == 0
    assert json.loads((out / SOURCE_RECORD).read_text())["method"] == "farneback"


@pytest.mark.parametrize("device", ["mps", "meta", "vulkan", "garbage"])
def test_flow_device_other_than_cpu_or_cuda(tmp_path, capsys, device):
    frames = _frames(tmp_path / "clip", 2)
    before = checksums(frames)
    _refused(capsys, flow_main(["--frames", str(frames), "--device", device]), "--device", "cpu")
    assert checksums(frames) == before and not (tmp_path / "clip_OF_FlowNet2").exists()
