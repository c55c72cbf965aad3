"""Run ablation rows here, one after another, or hand each row to a job through submitit.

``local`` calls :func:`experiments.runner.run_row` in this process. ``submitit_local`` and
``slurm`` submit one job per row with submitit (the launcher of FAIR's DETR, DINO and ConvNeXt):
one task on one node with ``gpus_per_row`` GPUs, whose stages train under ``torchrun
--standalone`` when there are several (experiments.runner.train_stage). Job logs go to
``<out>/submitit/``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from experiments.runner import RowRun, run_row
from utils.cli import UserError

LAUNCHERS = ("local", "submitit_local", "slurm")
SUBMITIT_HINT = "pip install submitit (it is in requirements-extra.txt), or use --launcher local"


@dataclass(frozen=True)
class LaunchOptions:
    """How rows are run: the launcher and what a SLURM job asks for."""

    launcher: str = "local"
    partition: Optional[str] = None
    account: Optional[str] = None
    gpus_per_row: int = 1
    cpus_per_task: int = 10
    mem_gb: int = 64
    timeout_min: int = 24 * 60
    wait: bool = True


def require_submitit() -> Any:
    """The submitit module, or a ``UserError`` saying how to install it."""
    try:
        import submitit
    except ImportError:
        raise UserError("the submitit package is not installed", SUBMITIT_HINT) from None
    return submitit


def make_executor(options: LaunchOptions, folder: Path) -> Any:
    """A submitit executor for ``options`` (cluster ``local`` or ``slurm``) logging into ``folder``:
    one task on one node per row, with ``gpus_per_row`` GPUs."""
    submitit = require_submitit()
    cluster = "local" if options.launcher == "submitit_local" else "slurm"
    try:
        executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    except RuntimeError as error:  # no srun: not a SLURM machine
        raise UserError(f"--launcher {options.launcher}: {error}",
                        "run on the cluster's login node, or use --launcher local or "
                        "submitit_local") from None
    parameters: dict[str, Any] = {
        "name": "fsnet-ablation", "nodes": 1, "tasks_per_node": 1,
        "cpus_per_task": options.cpus_per_task, "mem_gb": options.mem_gb,
        "timeout_min": options.timeout_min}
    if options.gpus_per_row:
        parameters["gpus_per_node"] = options.gpus_per_row
    if options.partition:
        parameters["slurm_partition"] = options.partition
    if options.account:
        parameters["slurm_account"] = options.account
    executor.update_parameters(**parameters)
    return executor


def launch(runs: Sequence[RowRun], options: LaunchOptions, folder: Path
           ) -> Optional[list[dict[str, Any]]]:
    """Run ``runs`` as ``options`` says; return their results, or ``None`` when the jobs were
    submitted without waiting."""
    if options.launcher == "local" or not runs:
        return [run_row(run) for run in runs]
    executor = make_executor(options, folder)
    jobs = [executor.submit(run_row, run) for run in runs]
    for run, job in zip(runs, jobs):
        print(f"submitted {run.name} (seed {run.seed}) as job {job.job_id}; log {job.paths.stdout}")
    if not options.wait:
        return None
    return [_job_result(run, job) for run, job in zip(runs, jobs)]


def _job_result(run: RowRun, job: Any) -> dict[str, Any]:
    """The row's result from its job; a failed job is one ``UserError``."""
    try:
        return job.result()
    except Exception as error:  # submitit re-raises the job's error with its remote traceback
        last = str(error).strip().splitlines()[-1:] or ["unknown error"]
        raise UserError(f"row {run.name} (seed {run.seed}) failed in job {job.job_id}: {last[0]}",
                        f"read {job.paths.stderr}, fix it and run the same command again "
                        "(finished rows are kept)") from error
