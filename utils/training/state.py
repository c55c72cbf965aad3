"""Training checkpoints (``last.pth``) and exact resume.

``last.pth`` is a dict that ``torch.load(..., weights_only=True)`` can read:

* ``model``: bare state_dict (no ``module.`` prefix), loadable by ``lib.checkpoint.build_fsnet``;
* ``optimizer``, ``scaler`` (fp16 only): their state_dicts;
* ``epoch`` (0-based epoch to run next), ``batch_in_epoch`` (global batches of that epoch already
  done), ``global_step`` (batches done in all), ``finished`` (all epochs done);
* ``rng``: the python / numpy / torch / CUDA generator states of every rank, by rank;
* ``args``: the run's ``TrainConfig`` as a dict, checked against the resuming run's.
* ``config``: the architecture (``asdict(FSNetConfig)``, :mod:`lib.checkpoint`); a resume of
  another architecture is refused.

Every tensor of a saved state is finite (train.py checks before saving, and every reader
refuses a file with a NaN/inf tensor). The learning rate is a pure function of the epoch (see
``train.lr_at``) and the data order
a pure function of ``(seed, epoch)``, so these fields are all a resumed run needs to continue
bit-identically.
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from utils.cli import BadInputError
from utils.torch_files import load_torch_file, save_checkpoint

#: Arguments that fix the sequence of optimiser steps; a resume must not change them.
RESUME_MUST_MATCH = (
    "train_type", "backbone", "batchsize", "trainsize", "rates", "seed", "max_samples",
    "lr", "momentum", "weight_decay", "decay_epoch", "gamma", "amp", "sync_bn", "freeze_bn",
    "flow_bn_stats", "gt_mode", "drop_unpaired", "hflip",
)
#: Of those, the ones a resume may change on purpose (logged and recorded in run.json): the way
#: out of a diverged run is to continue its last good state with a lower lr or another AMP mode.
RESUME_MAY_CHANGE = ("lr", "amp")


def capture_rng() -> dict[str, Any]:
    """This process's python, numpy, torch and CUDA RNG states (weights_only-loadable types)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    random.setstate(_as_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """``random.setstate`` needs tuples; a checkpoint round trip may hand back lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def all_finite(state: Any) -> bool:
    """True when every floating-point tensor in ``state`` (nested dicts, lists, tuples) is
    finite: one min/max pass per tensor (a NaN propagates through both) and a single read of all
    the results on the host. On a true answer no tensor need be checked alone (which waits for the
    device once per tensor); on a false one, ``lib.state_dict.first_non_finite`` names the tensor."""
    extremes = [torch.stack(torch.aminmax(t)).float() for t in tree_leaves(state)
                if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()]
    return not extremes or bool(torch.stack(extremes).isfinite().all())


def save_train_state(path: Path, **state: Any) -> None:
    """Write a ``last.pth`` dict (see module docstring) atomically."""
    save_checkpoint(state, path)


def load_train_state(path: str | Path) -> dict[str, Any]:
    """Read a ``last.pth`` written by :func:`save_train_state`; clear errors if it is not one."""
    state = load_torch_file(
        path,
        missing_fix="Point --resume at a last.pth written by train.py, or use --resume auto to "
                    "continue the run in --save_path/--run_name/<train_type>/ if one exists.",
        unreadable_fix="resume from another copy of it, or start afresh with --overwrite")
    missing = [k for k in ("model", "optimizer", "epoch", "batch_in_epoch", "rng", "args")
               if not isinstance(state, dict) or k not in state]
    if missing:
        raise BadInputError(
            f"{path} is not a training checkpoint written by train.py (missing {missing}); a bare "
            "state_dict such as FSNet-<n>epoch.pth cannot be resumed. Use the stage's last.pth."
        )
    return state


def peek_state(path: str | Path) -> dict[str, Any]:
    """The top-level entries of a checkpoint file, memory-mapped (tensors are not read); ``{}``
    for a missing file or a bare state_dict without training metadata."""
    if not Path(path).is_file():
        return {}
    state = load_torch_file(path, missing_fix="", mmap=True,
                            unreadable_fix="point the flag at a checkpoint written by train.py")
    return state if isinstance(state, dict) else {}


def is_finished(path: str | Path) -> bool:
    """True if ``path`` is a ``last.pth`` whose run completed all its epochs."""
    return peek_state(path).get("finished") is True


def check_resume_args(saved: dict[str, Any], current: dict[str, Any], path: Path
                      ) -> dict[str, list[Any]]:
    """``ValueError`` listing every argument in :data:`RESUME_MUST_MATCH` that changed, except
    those in :data:`RESUME_MAY_CHANGE`, which are returned as ``{name: [saved, now]}``."""
    differ = [key for key in RESUME_MUST_MATCH
              if _normalise(saved.get(key)) != _normalise(current.get(key))]
    changed = [f"--{key}: checkpoint {saved.get(key)!r}, now {current.get(key)!r}"
               for key in differ if key not in RESUME_MAY_CHANGE]
    if changed:
        raise BadInputError(
            f"Cannot resume from {path}: these arguments differ from the interrupted run, so it "
            "would not continue the same training:\n  " + "\n  ".join(changed)
            + "\nRun with the original values, or start a new run: another --run_name, or "
            "--overwrite instead of --resume."
        )
    return {key: [saved.get(key), current.get(key)] for key in differ}


def _normalise(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def params_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter's bytes in ``named_parameters`` order (buffers excluded: without
    SyncBatchNorm each DDP rank keeps its own BN running statistics). Equal digests on all ranks
    show the replicas stayed in sync; recorded in the run summary."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
