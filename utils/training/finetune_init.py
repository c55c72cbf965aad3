"""Stage-3 (``finetune``) initialisation from the two pretraining stages.

What the official ``utils/func.py::update_predict`` intends (and does, once its prefix bug is
fixed, docs/deviations.md D20):

1. every tensor comes from the ``pretrain_rgb`` checkpoint (all three backbone streams, RCAM
   attention, DimReduce, BPMs, both decoders, BN running statistics);
2. then the motion (flow) stream's backbone tensors (``resnet.conv1_flow``, ``resnet.bn1_flow``,
   ``resnet.layer1_flow`` .. ``resnet.layer4_flow``) are overwritten from the ``pretrain_flow``
   checkpoint: conv weights and BN affine parameters (``weight``/``bias``), plus BN
   ``num_batches_tracked`` (the official loop does not exclude it; it only matters for BN with
   ``momentum=None``, which FSNet does not use, so it has no effect on training).

The flow stream's BN running statistics (``running_mean``/``running_var``) are, officially, kept
from the rgb stage, where that stream was fed RGB images (docs/deviations.md D21). ``flow_bn_stats="flow"`` takes
them from the flow stage instead, consistent with the flow-stage weights.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, TypeVar

from torch import Tensor, nn

from utils.cli import BadInputError, MissingInputError, check_all
from utils.checkpoint import detect_backbone, load_model_weights, load_state_dict_file
from utils.training.state import peek_state

T = TypeVar("T")

#: Key prefixes of the motion stream's backbone (ResNet-50 and Res2Net-50 alike).
FLOW_BACKBONE_PREFIXES = tuple(
    f"resnet.{name}_flow." for name in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
)
RUNNING_STATS = ("running_mean", "running_var")
FLOW_BN_STATS_CHOICES = ("rgb", "flow")


def flow_keys_to_copy(keys: list[str], flow_bn_stats: str = "rgb") -> list[str]:
    """The keys taken from the flow stage, in ``keys`` order (see module docstring)."""
    if flow_bn_stats not in FLOW_BN_STATS_CHOICES:
        raise BadInputError(f"flow_bn_stats must be one of {FLOW_BN_STATS_CHOICES}, got {flow_bn_stats!r}")
    selected = [k for k in keys if k.startswith(FLOW_BACKBONE_PREFIXES)]
    if flow_bn_stats == "rgb":
        selected = [k for k in selected if k.rsplit(".", 1)[-1] not in RUNNING_STATS]
    return selected


def finetune_state_dict(
    rgb_state: dict[str, Tensor], flow_state: dict[str, Tensor], flow_bn_stats: str = "rgb"
) -> dict[str, Tensor]:
    """The rgb-stage state_dict with the documented flow-stream tensors from the flow stage."""
    merged = dict(rgb_state)
    keys = flow_keys_to_copy(list(rgb_state), flow_bn_stats)
    if not keys:
        raise BadInputError("The rgb-stage state_dict has no motion-stream keys (resnet.*_flow.*); "
                         "is it an FSNet checkpoint?")
    missing = [k for k in keys if k not in flow_state]
    if missing:
        raise BadInputError(f"The flow-stage state_dict lacks {len(missing)} motion-stream keys, "
                         f"e.g. {missing[:5]}; is it an FSNet checkpoint of the same backbone?")
    for key in keys:
        if flow_state[key].shape != rgb_state[key].shape:
            raise BadInputError(f"{key}: flow-stage shape {tuple(flow_state[key].shape)} != "
                             f"rgb-stage shape {tuple(rgb_state[key].shape)}")
        merged[key] = flow_state[key]
    return merged


def require_stage_file(path: Path, stage: str) -> None:
    """``FileNotFoundError`` naming the stage to run (or the flag to pass) if ``path`` is absent."""
    if not Path(path).is_file():
        raise MissingInputError(
            f"finetune needs the {stage} weights, but {path} does not exist. Run "
            f"`python train.py --train_type {stage} ...` first with the same --save_path and "
            f"--run_name, or point --{stage.split('_')[1]}_ckpt at the file."
        )


def load_stage_state(path: Path, stage: str, backbone: str) -> dict[str, Tensor]:
    """Read a stage checkpoint; clear errors if it is missing or from another backbone."""
    require_stage_file(path, stage)
    state = load_state_dict_file(path)
    found = detect_backbone(state)
    if found != backbone:
        raise BadInputError(
            f"{path} ({stage}) holds a {found} FSNet but this run uses --backbone {backbone}. "
            f"Use --backbone {found}, or train the {stage} stage with --backbone {backbone}."
        )
    return state


def check_stage_finished(path: Path, stage: str) -> None:
    """``ValueError`` if ``path`` is a ``last.pth`` of a stage that has not finished training."""
    state = peek_state(path)
    if state.get("finished") is False:
        raise BadInputError(
            f"{path} is from an unfinished {stage} run (stopped before epoch "
            f"{state.get('epoch', 0) + 1} of {state.get('args', {}).get('epoch', '?')}). Finish "
            f"it with `python train.py --train_type {stage} --resume auto ...`, or pass "
            f"--{stage.split('_')[1]}_ckpt {path} to use these weights anyway."
        )


def for_both_stages(check: Callable[[str, Path], T], paths: dict[str, Path]) -> dict[str, T]:
    """``check(stage, path)`` for the rgb and flow stage files; the problems of both are
    reported in one error (a single problem keeps its own error type)."""
    results: dict[str, T] = {}

    def run(stage: str, path: Path) -> None:
        results[stage] = check(stage, path)
    check_all([functools.partial(run, stage, path) for stage, path in paths.items()],
              "unusable stage checkpoints")
    return results


def init_finetune(
    model: nn.Module, rgb_ckpt: Path, flow_ckpt: Path, flow_bn_stats: str = "rgb"
) -> list[str]:
    """Load the stage-3 initialisation into ``model`` (strict); return the keys taken from flow."""
    backbone = model.backbone_name
    states = for_both_stages(lambda stage, path: load_stage_state(path, stage, backbone),
                             {"pretrain_rgb": rgb_ckpt, "pretrain_flow": flow_ckpt})
    rgb_state, flow_state = states["pretrain_rgb"], states["pretrain_flow"]
    load_model_weights(model, finetune_state_dict(rgb_state, flow_state, flow_bn_stats))
    return flow_keys_to_copy(list(rgb_state), flow_bn_stats)
