"""Where and how torch runs: the one ``--device`` resolver of every tool, the ``--amp`` precisions,
and a torch-threads scope."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import torch

from utils.cli import BadInputError

#: ``--amp`` choices: the autocast dtype of each (``None``: full float32).
AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def add_amp_argument(container: Any, default: str = "off", what: str = "autocast precision") -> None:
    """Add ``--amp {off,bf16,fp16}``; a bare ``--amp`` means bf16."""
    container.add_argument("--amp", nargs="?", const="bf16", choices=tuple(AMP_DTYPES), default=default,
                           help=f"{what} (bare --amp = bf16; fp16 needs CUDA)")


def resolve_device(name: str | None = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` (or ``None``) -> CUDA when available, else the CPU; ``cuda`` without an index ->
    ``cuda:<local_rank>`` (torchrun); ``cpu`` or ``cuda:N`` checked to exist; any other device
    type (``mps``, ``meta``, ...) is refused."""
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise BadInputError(f"--device {name!r} is not a device name", "use auto, cpu, cuda or cuda:N") from error
    if device.type not in ("cpu", "cuda"):
        raise BadInputError(f"--device {name} is not supported (the tools run on the CPU or on "
                            "NVIDIA GPUs)", "use --device cpu, or cuda / cuda:N on a machine with "
                            "a GPU")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInputError(f"--device {name} asked for CUDA but torch sees no GPU", "use --device cpu")
        index = local_rank if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise BadInputError(f"--device {name}: there is no GPU {index} "
                                f"({torch.cuda.device_count()} visible)", "pick an existing GPU index")
        return torch.device("cuda", index)
    return device


def autocast(device_type: str, dtype: Optional[torch.dtype], cache_enabled: bool = True) -> torch.autocast:
    """``torch.autocast`` to ``dtype`` (an :data:`AMP_DTYPES` value; ``None``: disabled).
    ``cache_enabled=False`` for CUDA-graph capture, which cannot keep autocast's cast cache."""
    return torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None,
                          cache_enabled=cache_enabled)


@contextlib.contextmanager
def torch_threads(count: Optional[int]) -> Iterator[None]:
    """Run the block with ``count`` torch threads (``None`` or 0: unchanged), then restore."""
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
