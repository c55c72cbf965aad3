"""CLI: ``python -m utils.toy`` writes the synthetic toy data set (library: ``utils.data.synthetic``)."""
from __future__ import annotations

from utils.cli import install_interrupt_hook

install_interrupt_hook()  # first: a Ctrl-C while torch is still being imported is one error line too

import argparse
from dataclasses import asdict, replace
from typing import Optional, Sequence

from utils.cli import make_parser, run_guarded
from utils.data.synthetic import QUICK, ToyConfig, make_toy_dataset


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python -m utils.toy``."""
    parser = make_parser("python -m utils.toy", "Generate the synthetic toy data set for FSNet.")
    parser.add_argument("--out", default="dataset/Toy", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--quick", action="store_true", help="a handful of frames (for tests)")
    parser.add_argument("--workers", type=int, default=1,
                        help="flow worker processes, at least 1")
    for field in ("width", "height", "train_sequences", "train_frames", "test_sequences",
                  "test_frames", "static_images"):
        parser.add_argument(f"--{field}", type=int, default=None,
                            help=f"override the {field.replace('_', ' ')} of the default set")
    parser.accept_old_spellings({"--num_workers": "--workers"})
    return parser


def _run(args: argparse.Namespace) -> None:
    base = QUICK if args.quick else ToyConfig()
    overrides = {k: getattr(args, k) for k in asdict(base) if getattr(args, k, None) is not None}
    out = make_toy_dataset(args.out, args.seed, args.quick, replace(base, **overrides), args.workers,
                           progress=True)
    print(f"toy data set written to {out}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input)."""
    args = get_args_parser().parse_args(argv)
    return run_guarded(lambda: _run(args), args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
