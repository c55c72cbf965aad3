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

A single-stream variant has one pretraining stage (:data:`PRETRAIN_STAGES`): finetune starts from
that stage's weights as they are. Each stage checkpoint must hold the run's architecture
(:class:`lib.fsnet.FSNetConfig`, read by :mod:`lib.checkpoint`).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, TypeVar

from torch import Tensor

from lib.checkpoint import config_difference, read_checkpoint
from lib.fsnet import FSNet, FSNetConfig
from utils.cli import BadInputError, MissingInputError, check_all
from utils.torch_files import load_model_weights
from utils.training.state import peek_state
from utils.weights import user_errors

T = TypeVar("T")

#: Key prefixes of the motion stream's backbone (ResNet-50 and Res2Net-50 alike).
FLOW_BACKBONE_PREFIXES = tuple(
    f"resnet.{name}_flow." for name in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
)
RUNNING_STATS = ("running_mean", "running_var")
FLOW_BN_STATS_CHOICES = ("rgb", "flow")
#: The pretraining stages of each ``FSNetConfig.streams`` value (finetune follows them).
PRETRAIN_STAGES = {"both": ("pretrain_rgb", "pretrain_flow"), "appearance": ("pretrain_rgb",),
                   "motion": ("pretrain_flow",)}


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


def load_stage_state(path: Path, stage: str, config: FSNetConfig) -> dict[str, Tensor]:
    """Read a stage checkpoint; clear errors if it is missing or holds another architecture."""
    require_stage_file(path, stage)
    with user_errors():
        checkpoint = read_checkpoint(path)
        found = checkpoint.config()
    if found != config:
        has, wanted = config_difference(found, config)
        raise BadInputError(
            f"{path} ({stage}) holds an FSNet with {has} but this run trains {wanted}",
            f"train the {stage} stage with the same --backbone/--variant/--num_bpm/--rcam/--bpm/"
            f"--streams, or point --{stage.split('_')[1]}_ckpt at a checkpoint of this variant")
    return checkpoint.state


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
    """``check(stage, path)`` for each stage file; the problems of all of them are reported in one
    error (a single problem keeps its own error type)."""
    results: dict[str, T] = {}

    def run(stage: str, path: Path) -> None:
        results[stage] = check(stage, path)
    check_all([functools.partial(run, stage, path) for stage, path in paths.items()],
              "unusable stage checkpoints")
    return results


def init_finetune(model: FSNet, rgb_ckpt: Path | None, flow_ckpt: Path | None,
                  flow_bn_stats: str = "rgb") -> list[str]:
    """Load the stage-3 initialisation into ``model`` (strict); return the keys taken from the
    flow stage. A single-stream variant loads its one stage's checkpoint as it is (the other
    path is ignored and may be ``None``)."""
    config = model.config
    paths = {"pretrain_rgb": rgb_ckpt, "pretrain_flow": flow_ckpt}
    stages = PRETRAIN_STAGES[config.streams]
    states = for_both_stages(lambda stage, path: load_stage_state(path, stage, config),
                             {stage: paths[stage] for stage in stages})
    if len(stages) == 1:
        load_model_weights(model, states[stages[0]])
        return list(states[stages[0]]) if config.streams == "motion" else []
    rgb_state, flow_state = states["pretrain_rgb"], states["pretrain_flow"]
    load_model_weights(model, finetune_state_dict(rgb_state, flow_state, flow_bn_stats))
    return flow_keys_to_copy(list(rgb_state), flow_bn_stats)
