"""CLI: ``python -m utils.flow`` writes colour-coded optical flow (library: ``utils.flow.generate``)."""
from __future__ import annotations

from utils.cli import install_interrupt_hook

install_interrupt_hook()  # first: a Ctrl-C while torch is still being imported is one error line too

import argparse
from dataclasses import fields
from typing import Optional, Sequence

from utils.cli import add_device_argument, make_parser, run_guarded
from utils.flow.generate import FlowConfig, run
from utils.flow.options import add_flow_arguments
from utils.weights import add_offline_argument


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python -m utils.flow``."""
    parser = make_parser("python -m utils.flow", "Generate colour-coded optical flow images for FSNet.")
    parser.add_argument("--frames", required=True, help="folder of frames, data-set tree or video file")
    parser.add_argument("--out", default=None,
                        help="output folder (default: <seq>/OF_FlowNet2 beside <seq>/Frame, "
                        "<parent>/<name>_OF_FlowNet2 for another frame folder; see docs/data-and-flow.md)")
    add_flow_arguments(parser, dest="method")
    parser.add_argument("--last_frame", choices=("skip", "backward"), default="skip",
                        help="skip: official, the last frame gets no flow; backward: flow last->previous")
    parser.add_argument("--workers", type=int, default=1,
                        help="parallel processes (dis/farneback), at least 1")
    parser.add_argument("--skip_existing", action="store_true", help="resume: keep flows already written")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an output folder that holds the flow of another input (its "
                        ".jpg/.npy/.flo files are deleted first) or files of unknown origin "
                        "(replaced where names collide)")
    parser.add_argument("--save_raw", choices=("npy", "flo"), default=None,
                        help="also save raw flow into <flow_folder>_raw/")
    add_device_argument(parser, what="where RAFT runs")
    parser.add_argument("--flow_folder", default="OF_FlowNet2", help="flow folder name in test trees")
    parser.add_argument("--frame_folder", default="Frame", help="frame folder name in test trees")
    add_offline_argument(parser)
    parser.accept_old_spellings({"--method": "--flow_method", "--num_workers": "--workers"})
    return parser


def _run(args: argparse.Namespace) -> None:
    summary = run(FlowConfig(**{f.name: getattr(args, f.name) for f in fields(FlowConfig)}))
    print(f"{summary['written']} flow images written, {summary['skipped_existing']} already there, "
          f"{summary['sequences']} sequences, {len(summary['no_flow'])} frames without flow "
          f"(last frames), {summary['seconds']} s -> {', '.join(summary['out_dirs'][:3])}"
          f"{' ...' if len(summary['out_dirs']) > 3 else ''}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input)."""
    args = get_args_parser().parse_args(argv)
    return run_guarded(lambda: _run(args), args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
