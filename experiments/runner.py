"""One ablation row, start to finish: train every applicable stage, write saliency maps, score them.

A row run lives in its own folder (``<out>/<name>/``, or ``<out>/<name>/seed<s>/`` for a seed
other than 0)::

    .fsnet-source.json            what the folder is for: variant, configuration, recipe, seed, data
    train/<stage>/last.pth ...    train.py's run folders (``--save_path <folder> --run_name train``)
    maps/<dataset>/<seq>/*.png    inference.py --mode saliency
    phases.json                   seconds spent in each finished phase (summed over resumptions)
    result.json                   the scores and the network's cost (experiments.cost); its
                                  presence marks the row finished

Every phase calls the library entry of the command-line tool (``train.train``,
``inference.predict``, ``eval.vsod.evaluate``); re-running resumes: finished stages are kept,
an interrupted stage continues from its ``last.pth`` (``--resume auto``), maps already written
are kept (``--skip_existing``). With several GPUs a stage runs as ``torchrun train.py`` (DDP).
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import inference
import train
from eval import vsod
from lib.fsnet import FSNetConfig
from utils.cli import OutputExistsError, UserError
from utils.io import read_json_object, save_json
from utils.safety import output_lock, real_path, record_source, source_differences
from utils.training.finetune_init import PRETRAIN_STAGES
from utils.training.state import is_finished
from experiments.cost import measure_cost
from experiments.variants import PAPER_DATASETS

T = TypeVar("T")
RESULT, PHASES = "result.json", "phases.json"


@dataclass(frozen=True)
class Recipe:
    """Training and inference settings of every row (the paper's: train.py's defaults)."""

    epoch: int = 20
    lr: float = 2e-3
    batchsize: int = 16
    trainsize: int = 352
    rates: tuple[float, ...] = (0.75, 1.0, 1.25)
    max_samples: Optional[int] = None
    no_imagenet: bool = False
    testsize: int = 352

    def train_fields(self) -> dict[str, Any]:
        """The recipe as train.TrainConfig keyword arguments: the last epoch runs at lr/10 (the
        paper's 20 epochs: train.py's default ``--decay_epoch 19``) and is the one exported."""
        return {"epoch": self.epoch, "decay_epoch": self.epoch - 1, "lr": self.lr,
                "batchsize": self.batchsize, "trainsize": self.trainsize,
                "rates": list(self.rates), "max_samples": self.max_samples,
                "no_imagenet": self.no_imagenet, "save_from_epoch": self.epoch}


PAPER_RECIPE = Recipe()
#: ``--quick``: seconds per row on a CPU; far from the paper (random init, 64×64, one step of
#: two samples per stage).
QUICK_RECIPE = Recipe(epoch=1, lr=1e-2, batchsize=2, trainsize=64, rates=(1.0,), max_samples=2,
                      no_imagenet=True, testsize=64)


@dataclass(frozen=True)
class Machine:
    """Where and how a row runs; not part of its identity (a row may resume elsewhere)."""

    device: str = "auto"
    workers: int = 4
    imagenet: Optional[str] = None
    offline: bool = False
    processes: int = 1  # training processes per stage (> 1: torchrun DDP, one per GPU)
    keep_checkpoints: bool = True  # False: a finished row keeps only its final checkpoint


@dataclass(frozen=True)
class RowRun:
    """One (row, seed): everything a job needs (picklable, for submitit)."""

    name: str
    table: int
    config: FSNetConfig
    seed: int
    folder: Path
    data_root: Path
    datasets: tuple[str, ...]
    recipe: Recipe
    machine: Machine

    @property
    def test_root(self) -> Path:
        """The V-SOD test sets: ``<data_root>/TestSet``."""
        return self.data_root / "TestSet"

    @property
    def maps(self) -> Path:
        """The row's saliency maps: ``<folder>/maps/<dataset>/<sequence>/*.png``."""
        return self.folder / "maps"

    def record(self) -> dict[str, Any]:
        """What makes this row's results (the folder's source record, utils.safety); a folder
        holding another record is refused."""
        return {"tool": "experiments.ablation", "variant": self.name,
                "config": asdict(self.config), "seed": self.seed, "recipe": asdict(self.recipe),
                "data_root": str(real_path(self.data_root))}


def run_folder(out: Path, name: str, seed: int) -> Path:
    """``<out>/<name>`` for seed 0, ``<out>/<name>/seed<seed>`` for another seed."""
    return out / name if seed == 0 else out / name / f"seed{seed}"


def dataset_label(folder_name: str) -> str:
    """The paper's name of a test-set folder (``DAVIS`` -> ``DAVIS-16``), else the folder name."""
    return {folder: label for label, folder in PAPER_DATASETS.items()}.get(folder_name, folder_name)


def stages(config: FSNetConfig) -> tuple[str, ...]:
    """The training stages of ``config``, in order: its pretraining stages (a single-stream
    variant has none for the stream it lacks), then finetune."""
    return (*PRETRAIN_STAGES[config.streams], "finetune")


def check_folder(run: RowRun) -> None:
    """Refuse a row folder that holds another configuration's run (read only, before any work)."""
    changed = source_differences(run.folder, _normalised(run.record()))
    if not changed:
        return
    raise OutputExistsError(f"{run.folder} holds the ablation run of another configuration (it "
                            f"differs in {', '.join(changed)})",
                            "choose another --out, or delete that folder to run this one there")


def result_of(run: RowRun) -> Optional[dict[str, Any]]:
    """The row's ``result.json`` (``None`` before it has finished)."""
    return read_json_object(run.folder / RESULT)


def is_done(run: RowRun) -> bool:
    """Whether the row's result holds every requested dataset."""
    result = result_of(run)
    return result is not None and all(dataset_label(name) in result["measured"]
                                      for name in run.datasets)


def run_row(run: RowRun) -> dict[str, Any]:
    """Train, predict and score one row (resuming what exists); return its result."""
    check_folder(run)
    if is_done(run):
        return result_of(run)
    run.folder.mkdir(parents=True, exist_ok=True)
    with output_lock(run.folder, "experiments.ablation"):
        record_source(run.folder, run.record())
        phases = _Phases(run.folder / PHASES)
        trained = result_of(run) is not None  # scored before, now asked for another test set
        for stage in [] if trained else _unfinished_stages(run):
            phases.run(f"train {stage}", lambda s=stage: train_stage(run, s))
        phases.run("maps", lambda: inference.predict(_inference_config(run)))
        scores = phases.run("eval.vsod", lambda: vsod.evaluate(run.maps, run.test_root,
                                                               list(run.datasets)))
        result = {"name": run.name, "table": run.table, "seed": run.seed,
                  "config": asdict(run.config), "measured": measured(scores),
                  "scores": scores["datasets"], "checkpoint": str(checkpoint(run)),
                  "maps": str(run.maps), "seconds": sum(phases.seconds.values()),
                  "phases": phases.seconds, "cost": asdict(measure_cost(run.config))}
        save_json(result, run.folder / RESULT)
        if not run.machine.keep_checkpoints:
            prune(run)
    return result


def train_stage(run: RowRun, stage: str) -> None:
    """Train (or resume) one stage: ``train.train`` in this process, or with ``processes`` > 1
    ``torchrun --standalone --nproc_per_node=<processes> train.py ...`` (DDP, one process per
    GPU; train.py starts and ends its process group once per run)."""
    config = train_config(run, stage)
    if run.machine.processes <= 1:
        train.train(config)
        return
    command = torchrun_command(config, run.machine.processes)
    print("running " + shlex.join(command), flush=True)
    code = subprocess.run(command, check=False).returncode
    if code:
        raise UserError(f"{stage} of row {run.name} stopped with exit status {code} (train.py's "
                        "message is above)", "fix its cause and run the same command again: the "
                        "stage resumes from its last.pth")


def torchrun_command(config: train.TrainConfig, processes: int) -> list[str]:
    """The torchrun command line that trains ``config`` with ``processes`` DDP processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", str(Path(train.__file__).resolve()),
            *train.config_argv(config)]


def checkpoint(run: RowRun) -> Path:
    """The row's trained network: the last stage's last-epoch file (release format, its
    configuration inside)."""
    return _stage_folder(run, stages(run.config)[-1]) / f"FSNet-{run.recipe.epoch}epoch.pth"


def prune(run: RowRun) -> None:
    """Delete every checkpoint of a finished row but :func:`checkpoint` (``--quick`` does: a
    table would otherwise leave 3.5 GB per row)."""
    keep = checkpoint(run)
    for path in (run.folder / "train").glob("*/*.pth"):
        if path != keep:
            path.unlink()


def measured(scores: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{dataset label: {"S", "MAE"}}`` of ``eval.vsod.evaluate``'s result."""
    return {dataset_label(name): {"S": values["S"], "MAE": values["MAE"]}
            for name, values in scores["datasets"].items()}


class _Phases:
    """Runs named phases and adds their seconds to ``phases.json`` as each one finishes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds: dict[str, float] = read_json_object(path) or {}

    def run(self, name: str, work: Callable[[], T]) -> T:
        start = time.perf_counter()
        result = work()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        save_json(self.seconds, self.path)
        return result


def _stage_folder(run: RowRun, stage: str) -> Path:
    return run.folder / "train" / stage


def _unfinished_stages(run: RowRun) -> list[str]:
    return [stage for stage in stages(run.config)
            if not is_finished(_stage_folder(run, stage) / "last.pth")]


def train_config(run: RowRun, stage: str) -> train.TrainConfig:
    """train.py's configuration of one stage of the row (resuming its last.pth if any)."""
    config = run.config
    return train.TrainConfig(
        train_type=stage, backbone=config.backbone, num_bpm=config.num_bpm, rcam=config.rcam,
        bpm=config.bpm, streams=config.streams, **run.recipe.train_fields(), seed=run.seed,
        data_root=str(run.data_root), save_path=str(run.folder), run_name="train",
        resume="auto", device=run.machine.device, workers=run.machine.workers,
        imagenet=run.machine.imagenet, offline=run.machine.offline)


def _inference_config(run: RowRun) -> inference.InferenceConfig:
    """inference.py's configuration: saliency maps of the requested sets, plain forward."""
    return inference.InferenceConfig(
        model_path=str(checkpoint(run)), dataset_path=str(run.test_root),
        datasets=list(run.datasets), test_save=str(run.maps), mode="saliency",
        testsize=run.recipe.testsize, device=run.machine.device, backend="plain",
        workers=min(run.machine.workers, 4), skip_existing=True, show_progress=False)


def _normalised(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(record))

