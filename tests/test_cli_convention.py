"""Every tool's command line follows one convention (utils/cli.py): shared flags have one name,
meaning and default; older spellings still work; every option has help and shows its default once;
argparse's own errors are one ``error: <what> — <fix>`` line with exit status 2."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
from typing import Callable, Dict, List

import pytest

from tests.cli_checks import assert_user_error, run_module
from utils.cli import ArgumentParser


def _export_parser() -> argparse.ArgumentParser:
    """The ONNX export's command line: ``utils.export`` where it exists, else ``lib.export``."""
    name = "utils.export" if importlib.util.find_spec("utils.export") else "lib.export"
    return importlib.import_module(name).get_args_parser()


def _parser(module: str) -> Callable[[], argparse.ArgumentParser]:
    return lambda: importlib.import_module(module).get_args_parser()


#: tool -> (its parser, the least command line it accepts)
TOOLS: Dict[str, tuple] = {
    "train.py": (_parser("train"), ["--train_type", "finetune"]),
    "inference.py": (_parser("inference"), []),
    "demo.py": (_parser("demo"), []),
    "utils.flow": (_parser("utils.flow.__main__"), ["--frames", "f"]),
    "utils.toy": (_parser("utils.toy"), []),
    "utils.davis_import": (_parser("utils.davis_import"), ["--davis", "d"]),
    "utils.weights": (_parser("utils.weights"), ["imagenet"]),
    "export": (_export_parser, ["--model_path", "m.pth", "--out", "m.onnx"]),
    "eval.davis16": (_parser("eval.davis16"), ["--pred", "p", "--gt", "g"]),
    "eval.vsod": (_parser("eval.vsod"), ["--pred", "p", "--gt", "g"]),
}

#: Shared flags: the same default (and choices) in every tool that has them.
SHARED_DEFAULTS = {
    "--device": "auto",
    "--amp": "off",
    "--offline": False,
    "--flow_method": "dis",
    "--raft_model": "raft_large",
    "--raft_weights": None,
    "--skip_existing": False,
    "--overwrite": False,
    "--no_progress": False,
    "--debug": False,
    "--seed": 0,
    "--testsize": 352,
    "--frame_folder": "Frame",
    "--flow_folder": "OF_FlowNet2",
}
SHARED_CHOICES = {"--amp": ("off", "bf16", "fp16"), "--flow_method": ("dis", "farneback", "raft"),
                  "--raft_model": ("raft_large", "raft_small")}
#: Older spelling -> the current one, the same in every tool that accepts it.
OLD_SPELLINGS = {"--num_workers": "--workers", "--method": "--flow_method",
                 "--dataset_path": "--data_root", "--threshold": "--binarize"}
#: Older spellings that stay a current name in one tool (the official inference flags).
CURRENT_IN = {"--dataset_path": {"inference.py"}, "--threshold": {"inference.py"}}
#: List options: several values, by spaces or commas.
LIST_OPTIONS = ("--datasets", "--seqs", "--metrics")


def _parsers(tool: str) -> List[argparse.ArgumentParser]:
    """The tool's parser and its sub-command parsers."""
    parser = TOOLS[tool][0]()
    subs = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return [parser] + [sub for action in subs for sub in action.choices.values()]


def _options(parser: argparse.ArgumentParser) -> List[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.help is not argparse.SUPPRESS
            and not isinstance(a, argparse._HelpAction)]


def _converted(tool: str) -> None:
    if not isinstance(TOOLS[tool][0](), ArgumentParser):
        pytest.skip(f"{tool} does not use utils.cli's parser yet")


@pytest.mark.parametrize("tool", TOOLS)
def test_every_option_has_help_and_one_default(tool):
    _converted(tool)
    for parser in _parsers(tool):
        help_text = parser.format_help()
        assert "(default: None)" not in help_text, tool
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or action.help is argparse.SUPPRESS:
                continue
            assert action.help, f"{tool} {action.option_strings or action.dest}: no help text"
            shown = formatter._expand_help(action)
            assert shown.lower().count("default") <= 1, f"{tool}: {shown}"


@pytest.mark.parametrize("tool", TOOLS)
def test_shared_flags_mean_the_same(tool):
    _converted(tool)
    for parser in _parsers(tool):
        for action in _options(parser):
            current, *others = action.option_strings
            old = set(getattr(action, "old_spellings", ()))
            assert set(others) == old, f"{tool}: {action.option_strings} shows more than one name"
            for name in old:
                assert OLD_SPELLINGS.get(name) == current, f"{tool}: {name} is not an old {current}"
            if current in OLD_SPELLINGS:
                assert tool in CURRENT_IN.get(current, ()), f"{tool}: {current} is an old spelling"
            if current in SHARED_DEFAULTS and action.default is not argparse.SUPPRESS:
                assert action.default == SHARED_DEFAULTS[current], f"{tool} {current}: {action.default!r}"
            if current in SHARED_CHOICES:
                assert tuple(action.choices) == SHARED_CHOICES[current], f"{tool} {current}"
            if current == "--amp":
                assert action.const == "bf16", f"{tool}: a bare --amp is not bf16"


#: Tools that may download weights (RAFT, ImageNet) and must offer --offline.
DOWNLOADING = ("train.py", "inference.py", "utils.flow", "utils.davis_import")


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_has_debug_and_downloads_can_be_refused(tool):
    _converted(tool)
    options = {name for action in _options(TOOLS[tool][0]()) for name in action.option_strings}
    assert "--debug" in options
    if tool in DOWNLOADING:
        assert "--offline" in options


def _value(action: argparse.Action) -> List[str]:
    """A valid command-line value for ``action``."""
    if action.nargs == 0:
        return []
    if action.choices:
        return [list(action.choices)[-1]]
    if isinstance(action.default, str):
        return [action.default]
    return ["3"] if action.type in (int, float) else ["x"]


@pytest.mark.parametrize("tool", TOOLS)
def test_old_spellings_are_accepted(tool):
    _converted(tool)
    parser, least = TOOLS[tool][0](), TOOLS[tool][1]
    command, rest = (least[:1], least[1:]) if tool == "utils.weights" else ([], least)
    for action in _options(parser):
        for old in getattr(action, "old_spellings", ()):
            current = action.option_strings[0]
            value = _value(action)
            assert parser.parse_args(command + rest + [old, *value]) == \
                parser.parse_args(command + rest + [current, *value]), f"{tool} {old}"


@pytest.mark.parametrize("tool", TOOLS)
def test_list_options_take_spaces_or_commas(tool):
    _converted(tool)
    parser, least = TOOLS[tool]
    parser = parser()
    for action in _options(parser):
        if action.option_strings[0] in LIST_OPTIONS:
            name = action.option_strings[0]
            spaced = parser.parse_args(least + [name, "J", "F"])
            assert getattr(spaced, action.dest) == ["J", "F"]
            assert parser.parse_args(least + [name, "J,F"]) == spaced


def _error_line(parser: argparse.ArgumentParser, argv: List[str], capsys) -> str:
    with pytest.raises(SystemExit) as caught:
        parser.parse_args(argv)
    stderr = capsys.readouterr().err
    assert caught.value.code == 2, stderr
    assert "usage:" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and " — " in lines[0], stderr
    return lines[0]


@pytest.mark.parametrize("tool", TOOLS)
def test_argparse_errors_are_one_line(tool, capsys):
    _converted(tool)
    parser, least = TOOLS[tool][0](), TOOLS[tool][1]
    assert "--help" in _error_line(parser, least + ["--no_such_flag"], capsys)
    for action in _options(parser):
        if action.choices and action.nargs is None:
            line = _error_line(parser, least + [action.option_strings[0], "bogus"], capsys)
            assert all(str(choice) in line for choice in action.choices), line
        elif action.type is int:
            line = _error_line(parser, least + [action.option_strings[0], "x"], capsys)
            assert "whole number" in line, line


def test_missing_choices_are_listed(capsys):
    line = _error_line(TOOLS["utils.weights"][0](), [], capsys)
    assert "add one of fsnet, imagenet, raft" in line
    line = _error_line(TOOLS["train.py"][0](), [], capsys)
    assert "--train_type with one of pretrain_rgb, pretrain_flow, finetune" in line


def test_close_option_names_are_suggested(capsys):
    parser = TOOLS["eval.vsod"][0]()
    line = _error_line(parser, ["--pred", "p", "--gt", "g", "--wrokers", "2"], capsys)
    assert "did you mean --workers" in line


def test_a_real_command_line_error(tmp_path):
    result = run_module("eval.vsod", ["--pred", str(tmp_path), "--gt", str(tmp_path), "--digits", "x"])
    assert "usage:" not in result.stderr
    assert_user_error(result.returncode, result.stderr, "--digits", "whole number")
