"""Find what ``main_VSOD.m`` evaluates, and check the prediction tree before any work is done.

Layout: GT ``<gt_root>/<Dataset>/<seq>/GT/<frame>`` (or ``<seq>/<frame>`` when there is no ``GT/``
folder); prediction ``<pred_root>/<Dataset>/<seq>/<frame>`` with the GT frame's exact file name.

MATLAB rules kept: sequences are the dataset folder's entries in byte order; the GT frames are the
``*.bmp`` files, or if none the ``*.jpg``, or if none the ``*.png`` (``calculateNumber.m``), in
byte order; the first and the last of them are never evaluated.  Where ``main_VSOD.m`` would
silently produce NaN or stop half-way (stray files, sequences with <= 2 GT frames, a missing
prediction) this module reports every offending path up front.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from eval.common import format_listing
from eval.sod.images import VSODInputError

GT_EXTENSIONS = (".bmp", ".jpg", ".png")  # calculateNumber.m's order of preference
SHORT_SEQUENCE_POLICIES = ("error", "exclude")


@dataclass(frozen=True)
class SequencePlan:
    """One sequence to evaluate: where its files are and which GT frames count."""

    dataset: str
    name: str
    gt_dir: Path
    pred_dir: Path
    frames: tuple[str, ...]


@dataclass
class DatasetPlan:
    """The sequences of one dataset to evaluate and the warnings found while planning."""

    name: str
    jobs: list[SequencePlan] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def sequence_gt_dir(seq_dir: Path) -> Path:
    """``<seq>/GT`` if it exists (DAVSOD layout), else the sequence folder itself."""
    sub = seq_dir / "GT"
    return sub if sub.is_dir() else seq_dir


def gt_frames(gt_dir: Path) -> tuple[list[str], list[str]]:
    """(GT frame names in byte order, files ignored) with calculateNumber.m's extension rule."""
    files = sorted(p.name for p in gt_dir.iterdir() if p.is_file()) if gt_dir.is_dir() else []
    for ext in GT_EXTENSIONS:
        chosen = [name for name in files if name.endswith(ext)]
        if chosen:
            return chosen, [name for name in files if not name.endswith(ext)]
    return [], files


def resolve_datasets(pred_root: Path, gt_root: Path, datasets: list[str] | None) -> list[str]:
    """The datasets to evaluate: the given names, or every folder under ``pred_root``."""
    for root, what in ((pred_root, "--pred"), (gt_root, "--gt")):
        if not root.is_dir():
            raise VSODInputError(f"{what} folder {root} does not exist")
    names = list(datasets) if datasets else sorted(p.name for p in pred_root.iterdir() if p.is_dir())
    if not names:
        raise VSODInputError(f"no dataset folders under {pred_root}; expected <pred>/<Dataset>/<seq>/<frame>.png")
    problems = [f"{gt_root / n} (GT)" for n in names if not (gt_root / n).is_dir()]
    problems += [f"{pred_root / n} (predictions)" for n in names if not (pred_root / n).is_dir()]
    if problems:
        raise VSODInputError("dataset folders not found:" + format_listing(problems)
                             + "\nFix: check --gt/--pred or name the datasets with --datasets.")
    return names


def plan_dataset(pred_root: Path, gt_root: Path, dataset: str, short_sequences: str = "error") -> DatasetPlan:
    """Sequences and evaluated frames of ``dataset``; VSODInputError on unusable input.

    ``short_sequences``: "error" stops on a sequence with <= 2 GT frames (main_VSOD.m would give
    NaN for every number of the dataset), "exclude" leaves it out with a warning.
    """
    if short_sequences not in SHORT_SEQUENCE_POLICIES:
        raise VSODInputError(f"--short_sequences must be one of {SHORT_SEQUENCE_POLICIES}, got {short_sequences!r}")
    gt_dataset, pred_dataset = gt_root / dataset, pred_root / dataset
    plan = DatasetPlan(dataset)
    entries = sorted(gt_dataset.iterdir(), key=lambda p: p.name)
    stray = [str(p) for p in entries if not p.is_dir()]
    if stray:
        plan.warnings.append("ignored files in the GT dataset folder (main_VSOD.m would take each for a "
                             "sequence and report NaN for the whole dataset):" + format_listing(stray))
    short, missing = [], []
    for seq_dir in (p for p in entries if p.is_dir()):
        gt_dir = sequence_gt_dir(seq_dir)
        names, ignored = gt_frames(gt_dir)
        if ignored:
            rule = f"only the *{Path(names[0]).suffix} files are GT frames" if names else "no *.bmp/*.jpg/*.png file"
            plan.warnings.append(f"ignored files in {gt_dir} ({rule}, as in calculateNumber.m):"
                                 + format_listing(ignored))
        if len(names) <= 2:
            short.append(f"{gt_dir}: {len(names)} GT frame(s)")
            continue
        pred_dir = pred_dataset / seq_dir.name
        evaluated = tuple(names[1:-1])
        for name in evaluated:
            if not (pred_dir / name).is_file():
                missing.append(_missing_text(pred_dir, name))
        plan.jobs.append(SequencePlan(dataset, seq_dir.name, gt_dir, pred_dir, evaluated))
    if short and short_sequences == "error":
        raise VSODInputError(
            f"{dataset}: sequences with <= 2 GT frames have no evaluated frame (the first and last GT "
            "frame are always skipped) and make main_VSOD.m report NaN for the whole dataset:"
            + format_listing(short) + "\nFix: remove them, or pass --short_sequences exclude to leave them out.")
    if short:
        plan.warnings.append(f"{dataset}: excluded sequences with <= 2 GT frames:" + format_listing(short))
    if missing:
        raise VSODInputError(
            f"{dataset}: {len(missing)} evaluated GT frame(s) have no prediction with the same file name "
            "(main_VSOD.m stops at the first):" + format_listing(missing)
            + "\nFix: run inference on these sequences, or point --pred at the folder holding <Dataset>/<seq>/.")
    if not plan.jobs:
        raise VSODInputError(f"{dataset}: no sequence with more than 2 GT frames under {gt_dataset}")
    extra = [str(p) for p in sorted(pred_dataset.iterdir()) if p.is_dir() and not (gt_dataset / p.name).is_dir()]
    if extra:
        plan.warnings.append(f"{dataset}: prediction folders without GT, not evaluated:" + format_listing(extra))
    return plan


def _missing_text(pred_dir: Path, name: str) -> str:
    """Path of a missing prediction, with a hint when the same stem exists with another suffix."""
    path = pred_dir / name
    if not pred_dir.is_dir():
        return f"{path} (folder {pred_dir} does not exist)"
    others = sorted(p.name for p in pred_dir.glob(Path(name).stem + ".*") if p.name != name)
    return f"{path} (found {', '.join(others)}: the names must match exactly)" if others else str(path)
