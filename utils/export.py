"""Export an FSNet checkpoint to ONNX, checked against PyTorch (the network inference runs).

    python -m utils.export --model_path CKPT --out fsnet.onnx [--testsize 352] [--dynamic]
        [--no_cache]

(``python -m lib.export`` runs the same command.) The export (:mod:`lib.export`) is shared with
``inference.py`` through the warm-start cache (:mod:`utils.export_cache`): a checkpoint exported
once, by either tool, is not exported again. The output path is checked before any work, the file
is written atomically (an interrupted run leaves nothing behind), and errors follow the common
convention (one ``error:`` line, exit 2; ``--debug`` or ``FSNET_DEBUG=1`` for the traceback).
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from lib.checkpoint import build_fsnet
from utils.cli import BadInputError, MissingInputError, UserError, make_parser, run_guarded
from utils.io import atomic_write_bytes
from utils.weights import user_errors
from utils.safety import check_file_writable, check_outputs_apart

PROG = "python -m utils.export"


@dataclass
class ExportConfig:
    """Everything one export needs (the flags of ``python -m utils.export``)."""

    model_path: str
    out: str
    testsize: int = 352
    dynamic: bool = False
    no_cache: bool = False


@dataclass
class ExportResult:
    """What an export wrote: the file, its size, the numerical check and the cache's state."""

    out: str
    size_mib: float
    check: str
    cache: str


def get_args_parser() -> argparse.ArgumentParser:
    """Options of ``python -m utils.export``."""
    parser = make_parser(PROG, __doc__.splitlines()[0])
    parser.add_argument("--model_path", required=True, help="FSNet checkpoint (.pth)")
    parser.add_argument("--out", required=True, help="ONNX file to write (one file, weights inside)")
    parser.add_argument("--testsize", type=int, default=352,
                        help="input size of the export and of the check (multiple of 32)")
    parser.add_argument("--dynamic", action="store_true",
                        help="dynamic height and width too (the batch axis is always dynamic)")
    parser.add_argument("--no_cache", action="store_true",
                        help="export again instead of reusing (and filling) the export cache in "
                             "the torch hub folder (fsnet/onnx/)")
    return parser


def check_before_work(config: ExportConfig) -> Path:
    """Every check that needs no model: size, onnxruntime, checkpoint, output path; return the
    output path."""
    if config.testsize < 32 or config.testsize % 32:
        raise BadInputError(f"--testsize {config.testsize} is not a positive multiple of 32",
                            f"use e.g. {max(32, round(config.testsize / 32) * 32)}")
    from lib.export import require_onnxruntime
    try:
        require_onnxruntime()
    except ImportError as error:
        raise UserError(str(error)) from error
    if not Path(config.model_path).is_file():
        raise MissingInputError(f"checkpoint not found: {config.model_path}",
                                "pass --model_path to an FSNet checkpoint (python -m utils.weights "
                                "fsnet says where to get the release)")
    check_outputs_apart({"--model_path": config.model_path}, {"--out": config.out})
    return check_file_writable(config.out, "--out")


def export(config: ExportConfig) -> ExportResult:
    """Export the checkpoint (or reuse its cached export), check it against PyTorch and write
    ``config.out`` atomically. A failed check writes nothing and drops the cached entry."""
    from lib.export import OnnxPredictor, check_export, export_model, save_external
    out = check_before_work(config)
    with user_errors():  # each error names the file and the fix
        model = build_fsnet(config.model_path)  # whatever variant the file holds
    with tempfile.TemporaryDirectory(prefix="fsnet-onnx-") as folder:
        if config.no_cache:
            path, cache = save_external(export_model(copy.deepcopy(model), config.testsize,
                                                     config.dynamic, inplace=True), folder), "off"
        else:
            from utils.export_cache import cached_export, forget
            entry = cached_export(config.model_path, config.testsize,
                                  lambda: copy.deepcopy(model), config.dynamic)
            path, cache = entry.path, entry.state
        check = check_export(model, OnnxPredictor(path), (2, 3, config.testsize, config.testsize))
        if not check.passed:
            if cache != "off":
                forget(path)
            raise UserError(f"the exported network deviates from PyTorch: {check}",
                            "please report this with your torch, onnx and onnxruntime versions")
        import onnx
        atomic_write_bytes(out, onnx.load(str(path)).SerializeToString())
    return ExportResult(str(out), out.stat().st_size / 2**20, str(check), cache)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Export, check and print; a user error is one ``error:`` line and exit status 2."""
    args = get_args_parser().parse_args(argv)
    config = ExportConfig(args.model_path, args.out, args.testsize, args.dynamic, args.no_cache)

    def work() -> None:
        result = export(config)
        print(f"wrote {result.out} ({result.size_mib:.0f} MiB; export cache {result.cache}); "
              f"{result.check}")
    return run_guarded(work, args.debug)


if __name__ == "__main__":
    sys.exit(main())
