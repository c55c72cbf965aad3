"""CLI: ``python -m utils.davis_import`` lays out DAVIS-2016 for FSNet (library: ``utils.data.davis_layout``)."""
from __future__ import annotations

from utils.cli import install_interrupt_hook

install_interrupt_hook()  # first: a Ctrl-C while torch is still being imported is one error line too

import argparse
from dataclasses import fields
from typing import Optional, Sequence

from utils.cli import make_parser, run_guarded
from utils.data.davis_layout import ImportConfig, run
from utils.flow.options import add_flow_arguments
from utils.weights import add_offline_argument


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python -m utils.davis_import``."""
    parser = make_parser("python -m utils.davis_import", "Import DAVIS-2016 into FSNet's dataset layouts.")
    parser.add_argument("--davis", required=True, help="DAVIS-2016 root (JPEGImages/, Annotations/, ImageSets/)")
    parser.add_argument("--data_root", default="dataset", help="where TrainSet_Video/ and TestSet/ go")
    parser.add_argument("--copy", action="store_true", help="copy files instead of symlinking")
    parser.add_argument("--no_flow", action="store_true", help="do not generate flow")
    add_flow_arguments(parser, dest="method")
    parser.add_argument("--last_frame", choices=("skip", "backward"), default="skip",
                        help="flow of the last frame (see python -m utils.flow)")
    parser.add_argument("--workers", type=int, default=1,
                        help="flow worker processes, at least 1")
    add_offline_argument(parser)
    parser.accept_old_spellings({"--method": "--flow_method", "--num_workers": "--workers"})
    return parser


def _run(args: argparse.Namespace) -> None:
    summary = run(ImportConfig(**{f.name: getattr(args, f.name) for f in fields(ImportConfig)}))
    for split, info in summary.items():
        flows = f", {info['flow']['written']} flows written" if "flow" in info else ""
        print(f"{split}: {info['sequences']} sequences, {info['frames']} frames{flows}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input)."""
    args = get_args_parser().parse_args(argv)
    return run_guarded(lambda: _run(args), args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
