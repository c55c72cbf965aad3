"""The shared error convention (utils.cli) and the data-safety guards (utils.safety)."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from tests.cli_checks import assert_user_error
from utils.cli import BadInputError, UserError, make_parser, progress, run_guarded
from utils.safety import (LOCK_NAME, check_outputs_apart, check_writable, output_lock,
                          remove_stale_temporaries)


def _run(work, capsys, debug=False):
    code = run_guarded(work, debug)
    return code, capsys.readouterr().err


def test_user_error_is_one_line_with_the_fix(capsys):
    def work():
        raise BadInputError("bad --trainsize 100", "use a multiple of 32\n(e.g. 352)")
    code, err = _run(work, capsys)
    line = assert_user_error(code, err, "bad --trainsize 100", "use a multiple of 32 (e.g. 352)")
    assert line == "error: bad --trainsize 100 — use a multiple of 32 (e.g. 352)"


@pytest.mark.parametrize("number, words", [(errno.ENOSPC, "no space left on device"),
                                           (errno.EROFS, "read-only file system"),
                                           (errno.EACCES, "permission denied")])
def test_os_errors_a_user_causes_are_named_with_the_file(capsys, number, words):
    def work():
        raise OSError(number, os.strerror(number), "/data/out/mask.png")
    code, err = _run(work, capsys)
    assert_user_error(code, err, words, "/data/out/mask.png")


def test_ctrl_c_is_an_error_line(capsys):
    def work():
        raise KeyboardInterrupt
    code, err = _run(work, capsys)
    assert_user_error(code, err, "interrupted")


def test_bugs_keep_their_traceback_and_debug_shows_user_errors():
    with pytest.raises(ZeroDivisionError):
        run_guarded(lambda: 1 / 0)
    with pytest.raises(OSError):  # not one a user causes
        run_guarded(lambda: (_ for _ in ()).throw(OSError(errno.EBADF, "bad fd")))
    with pytest.raises(UserError):
        run_guarded(lambda: (_ for _ in ()).throw(UserError("x", "y")), debug=True)


def test_debug_environment_variable(monkeypatch):
    monkeypatch.setenv("FSNET_DEBUG", "1")
    with pytest.raises(UserError):
        run_guarded(lambda: (_ for _ in ()).throw(UserError("x", "y")))


def test_returned_status_and_success():
    assert run_guarded(lambda: 3) == 3
    assert run_guarded(lambda: {"done": True}) == 0


def test_parser_names_the_program_and_shows_defaults():
    parser = make_parser("python -m utils.flow", "Make flow.")
    parser.add_argument("--workers", type=int, default=4, help="processes")
    text = parser.format_help()
    assert text.startswith("usage: python -m utils.flow") and "(default: 4)" in text
    assert "--debug" in text


def test_progress_prints_plain_lines_when_not_a_terminal(capsys):
    bar = progress(range(1000), desc="frames")
    for step in bar:
        bar.set_postfix(loss=step)  # a forced refresh per step, as train.py does
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("\n") == 2 and "1000/1000" in err and "loss=999" in err


@pytest.mark.parametrize("output, ok", [("out", True), ("data", False), ("data/seq/out", False),
                                        (".", False), ("data_flow", True)])
def test_outputs_apart_from_inputs(tmp_path, output, ok):
    (tmp_path / "data" / "seq").mkdir(parents=True)
    inputs = {"--frames": tmp_path / "data"}
    if ok:
        check_outputs_apart(inputs, {"--out": tmp_path / output})
    else:
        with pytest.raises(UserError, match="overlaps --frames"):
            check_outputs_apart(inputs, {"--out": tmp_path / output})


def test_outputs_apart_follows_symlinks(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    with pytest.raises(UserError):
        check_outputs_apart({"--gt": tmp_path / "data"}, {"--json": tmp_path / "link" / "r.json"})


def test_check_writable_creates_and_refuses_a_file(tmp_path):
    assert check_writable(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError):
        check_writable(tmp_path / "file")


def test_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path, capsys):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps(
            {"host": os.uname().nodename, "pid": sleeper.pid, "command": "train.py"}))
        with pytest.raises(UserError, match=f"process {sleeper.pid}"):
            with output_lock(tmp_path, "test"):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    (tmp_path / ".mask.png.abc.tmp").write_bytes(b"partial")
    with output_lock(tmp_path, "test") as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        assert not (tmp_path / ".mask.png.abc.tmp").exists()
    assert "taking over the stale lock" in capsys.readouterr().err
    assert not (tmp_path / LOCK_NAME).exists()


def test_remove_stale_temporaries_keeps_real_files(tmp_path):
    (tmp_path / "seq").mkdir()
    (tmp_path / "seq" / ".00001.png.x1.tmp").write_bytes(b"")
    (tmp_path / "seq" / "00001.png").write_bytes(b"png")
    assert remove_stale_temporaries(tmp_path) == 1
    assert (tmp_path / "seq" / "00001.png").exists()
