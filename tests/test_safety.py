"""The shared error convention (utils.cli) and the data-safety guards (utils.safety)."""
from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cli_checks import assert_user_error
from utils.cli import BadInputError, UserError, install_interrupt_hook, make_parser, progress, run_guarded
from utils.io import atomic_path, temporary_job
from utils.job import Job, current_job, process_start
from utils.safety import (LOCK_NAME, check_outputs_apart, check_writable, output_lock,
                          path_conflicts, remove_stale_temporaries)


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


def test_progress_prints_at_most_one_line_per_30_s_for_all_bars(capsys, monkeypatch):
    """Several bars in a row (epochs) with forced refreshes: one plain line per 30 s in all."""
    clock = [1000.0]
    monkeypatch.setattr("utils.cli.time.monotonic", lambda: clock[0])
    monkeypatch.setattr("utils.cli._LogLines.last_line_at", -float("inf"))
    for epoch in range(6):
        bar = progress(range(100), desc=f"epoch {epoch}")
        for step in bar:
            bar.set_postfix(loss=step)  # a forced refresh per step, as train.py does
            clock[0] += 0.01
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("\n") == 1 and "epoch 0" in err
    clock[0] += 30
    for _ in progress(range(10), desc="later"):
        pass
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "later" in err


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


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _temporary_of(folder: Path, job: Job, name: str = "mask.png") -> Path:
    path = folder / f".{name}.{job.tag}.abcdefgh.tmp"
    path.write_bytes(b"partial")
    return path


def test_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path, capsys):
    sleeper = _sleeper()
    try:
        live = Job(socket.gethostname(), sleeper.pid, process_start(sleeper.pid))
        (tmp_path / LOCK_NAME).write_text(json.dumps(
            {"host": live.host, "pid": live.pid, "process_start": live.start, "command": "train.py"}))
        with pytest.raises(UserError, match=f"process {sleeper.pid}.*wait for that job"):
            with output_lock(tmp_path, "test"):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    dead = _temporary_of(tmp_path, live)
    with output_lock(tmp_path, "test") as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        assert not dead.exists()
    assert "taking over the stale lock" in capsys.readouterr().err
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_of_a_reused_pid_is_stale(tmp_path, capsys):
    """The lock's PID is alive (it is this very process) but was started at another time."""
    (tmp_path / LOCK_NAME).write_text(json.dumps(
        {"host": socket.gethostname(), "pid": os.getpid(), "process_start": "1b00000000"}))
    with output_lock(tmp_path, "test"):
        pass
    assert "taking over the stale lock" in capsys.readouterr().err


def test_lock_of_another_host_names_the_lock_file(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    with pytest.raises(UserError, match="delete .*fsnet.lock"):
        with output_lock(tmp_path, "test"):
            pass


def test_only_a_dead_jobs_temporaries_in_the_folder_itself_are_removed(tmp_path):
    """A live job's temporaries, foreign '.tmp' files and those of sub-folders stay."""
    sleeper = _sleeper()
    try:
        live = Job(socket.gethostname(), sleeper.pid, process_start(sleeper.pid))
        reused = Job(live.host, sleeper.pid, "1b00000000")  # the PID now runs another process
        (tmp_path / "seq").mkdir()
        kept = [_temporary_of(tmp_path, live), tmp_path / ".notes.tmp", tmp_path / "00001.png",
                _temporary_of(tmp_path / "seq", reused), _temporary_of(tmp_path, Job("other", 1, ""))]
        for path in kept[1:3]:
            path.write_bytes(b"user")
        gone = [_temporary_of(tmp_path, reused, "a.png"), _temporary_of(tmp_path, Job(live.host, 2**22 + 7, ""))]
        assert remove_stale_temporaries(tmp_path) == 2
    finally:
        sleeper.kill()
        sleeper.wait()
    assert all(p.exists() for p in kept) and not any(p.exists() for p in gone)


def test_temporary_names_fit_the_name_limit_and_name_the_job(tmp_path):
    """A 250-byte file name (multi-byte characters too) is written atomically."""
    for name in ("m" * 246 + ".png", "é" * 123 + ".png"):
        target = tmp_path / name
        with atomic_path(target) as tmp:
            assert len(tmp.name.encode()) <= 255 and temporary_job(tmp) == current_job()
            tmp.write_bytes(b"x")
        assert target.read_bytes() == b"x"


# --------------------------------------------------------------------- path conflicts, as a property

class _Layout:
    """A random tree of folders, files, hard links and symlinks (absolute or relative targets),
    built on disk under ``root`` and mirrored by a model that resolves paths on its own."""

    def __init__(self, data, root: Path) -> None:
        self.root, self.parent, self.entries = root, {0: None}, {0: {}}
        for index in range(1, data.draw(st.integers(1, 4)) + 1):
            parent = data.draw(st.integers(0, index - 1))
            self.parent[index], self.entries[index] = parent, {}
            self.entries[parent][f"d{index}"] = ("dir", index)
            self.path(("dir", index)).mkdir()
        files = []
        for index in range(data.draw(st.integers(0, 3))):
            folder = data.draw(st.sampled_from(sorted(self.parent)))
            node = ("file", index, folder, f"f{index}.png")
            self.entries[folder][node[3]] = node
            self.path(node).write_bytes(b"x" * index)
            files.append(node)
        for index in range(data.draw(st.integers(0, 2)) if files else 0):
            source, folder = data.draw(st.sampled_from(files)), data.draw(st.sampled_from(sorted(self.parent)))
            node = ("file", source[1], folder, f"h{index}.png")  # same inode group as source
            os.link(self.path(source), self.path(node))
            self.entries[folder][node[3]] = node
        targets = [("dir", i) for i in self.parent] + files
        for index in range(data.draw(st.integers(0, 3))):
            folder, target = data.draw(st.sampled_from(sorted(self.parent))), data.draw(st.sampled_from(targets))
            link = self.path(("dir", folder)) / f"l{index}"
            spelled = self.path(target)
            if data.draw(st.booleans()):
                spelled = Path(os.path.relpath(spelled, link.parent))
            link.symlink_to(spelled)
            self.entries[folder][f"l{index}"] = target

    def path(self, node) -> Path:
        """The physical path of a model node."""
        if node[0] == "file":
            return self.path(("dir", node[2])) / node[3]
        names, index = [], node[1]
        while index:
            names.append(next(n for n, e in self.entries[self.parent[index]].items() if e == ("dir", index)))
            index = self.parent[index]
        return self.root.joinpath(*reversed(names))

    def spelling(self, data, cwd: int):
        """A path spelled with '..', '.', symlinks, relative or absolute; and the model node it
        names: ("dir", i), ("file", group, folder, name) or ("new", folder, names)."""
        here = 0 if data.draw(st.booleans()) else cwd
        parts = [str(self.root)] if here == 0 and data.draw(st.booleans()) else []
        if here == 0 and not parts:
            parts = [os.path.relpath(self.root, self.path(("dir", cwd)))]
        for _ in range(data.draw(st.integers(0, 4))):
            dirs = [n for n, e in self.entries[here].items() if e[0] == "dir"]
            step = data.draw(st.sampled_from(dirs + [".", ".."] if here else dirs + ["."]))
            parts.append(step)
            here = (self.parent[here] if step == ".." else here if step == "." else
                    self.entries[here][step][1])
        files = [n for n, e in self.entries[here].items() if e[0] == "file"]
        end = data.draw(st.sampled_from(["folder", "new"] + (["file"] if files else [])))
        if end == "file":
            name = data.draw(st.sampled_from(files))
            return os.path.join(*parts, name), self.entries[here][name]
        if end == "new":
            names = tuple(data.draw(st.lists(st.sampled_from(["n0", "n1"]), min_size=1, max_size=2)))
            return os.path.join(*parts, *names), ("new", here, names)
        return os.path.join(*parts) if parts else ".", ("dir", here)

    def folders_above(self, node) -> list:
        """Every folder that physically holds ``node`` (its chain of parents)."""
        index = node[1] if node[0] == "new" else node[2] if node[0] == "file" else self.parent[node[1]]
        chain = []
        while index is not None:
            chain.append(index)
            index = self.parent[index]
        return chain

    def same(self, a, b) -> bool:
        return a == b or (a[0] == b[0] == "file" and a[1] == b[1])

    def inside(self, a, b) -> bool:
        if b[0] == "dir":
            return b[1] in self.folders_above(a)
        return a[0] == b[0] == "new" and a[1] == b[1] and a[2][:len(b[2])] == b[2] and a != b


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_path_conflicts_for_any_layout_and_spelling(data):
    """For any layout of files, hard links and symlinks and any spelling of the paths: exactly the
    outputs that equal, lie inside or contain an input, and the outputs naming one file, are
    reported."""
    previous = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        layout = _Layout(data, Path(os.path.realpath(folder)))
        os.chdir(layout.path(("dir", data.draw(st.sampled_from(sorted(layout.parent))))))
        try:
            cwd = next(i for i in layout.parent if layout.path(("dir", i)) == Path.cwd())
            reads = [layout.spelling(data, cwd) for _ in range(data.draw(st.integers(1, 3)))]
            writes = [layout.spelling(data, cwd) for _ in range(data.draw(st.integers(1, 3)))]
            problems = path_conflicts({f"in{i}": p for i, (p, _) in enumerate(reads)},
                                      {f"out{i}": p for i, (p, _) in enumerate(writes)})
        finally:
            os.chdir(previous)
    expected = {(f"out{i}", f"in{j}") for i, (_, w) in enumerate(writes) for j, (_, r) in enumerate(reads)
                if layout.same(w, r) or layout.inside(w, r) or layout.inside(r, w)}
    expected |= {(f"out{i}", f"out{j}") for i, (_, a) in enumerate(writes)
                 for j, (_, b) in enumerate(writes) if i < j and layout.same(a, b)}
    found = {(p.split(" ", 1)[0], re.search(r" (in\d+|out\d+) ", p.split(" ", 2)[2]).group(1))
             for p in problems}
    assert found == expected and len(problems) == len(expected), (reads, writes, problems)


def test_ctrl_c_while_a_tool_starts_is_one_line(capsys, monkeypatch):
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after the test
    install_interrupt_hook()
    sys.excepthook(KeyboardInterrupt, KeyboardInterrupt(), None)
    assert_user_error(2, capsys.readouterr().err, "interrupted by Ctrl-C")
