"""The flow options shared by ``python -m utils.flow``, ``python -m utils.davis_import`` and
``inference.py --video``: the same names, meanings and defaults in every tool."""
from __future__ import annotations

from typing import Any

from utils.flow.generate import METHODS
from utils.weights import RAFT_MODELS


def add_flow_arguments(container: Any, dest: str = "flow_method", when: str = "") -> None:
    """Add ``--flow_method``, ``--raft_model`` and ``--raft_weights`` (``dest`` names the method's
    attribute; ``when`` prefixes the help, e.g. ``"--video"``)."""
    prefix = f"{when}: " if when else ""
    container.add_argument("--flow_method", dest=dest, choices=METHODS, default="dis",
                           help=f"{prefix}flow algorithm (dis and farneback need no weights)")
    container.add_argument("--raft_model", choices=RAFT_MODELS, default="raft_large",
                           help=f"{prefix}RAFT variant of --flow_method raft")
    container.add_argument("--raft_weights", default=None, metavar="PATH",
                           help=f"{prefix}local torchvision RAFT state_dict (default: torchvision's "
                                "file, downloaded on first use unless --offline)")
