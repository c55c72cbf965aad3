"""Import the native DAVIS-2016 layout into FSNet's layouts (symlinks or copies) and make its flow.

Input (``--davis DIR``): ``JPEGImages/480p/<seq>/*.jpg``, ``Annotations/480p/<seq>/*.png`` and
``ImageSets/480p/{train,val}.txt`` (lines ``/JPEGImages/480p/<seq>/00000.jpg /Annotations/...``
or bare sequence names). Output under ``--data_root`` (default ``dataset``)::

    TestSet/DAVIS/<seq>/{Frame,GT,OF_FlowNet2}            val sequences
    TrainSet_Video/{Imgs,ground-truth,Flow}/<seq>_<frame>  train sequences
    TrainSet_StaticAndVideo/{Imgs,GTs}/<seq>_<frame>        train sequences (add DUTS-TR yourself)

The DAVIS folder is never modified. Before anything is written, the outputs are checked apart
from the DAVIS folder (none may be, contain or lie inside it), every DAVIS frame and annotation
header is read (thread pool: unreadable, truncated, or frame/annotation of different sizes) and
every destination is compared with what would be placed there; all problems are reported in one
error. Re-running is safe: identical links/copies are kept, flows already present are kept
(delete them to recompute), and a different existing file is an error.

CLI: ``python -m utils.davis_import --davis DIR --data_root dataset [--copy] [--no_flow]``
"""
from __future__ import annotations

import filecmp
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from utils.cli import BadInputError, MissingInputError, OutputExistsError, UserError
from utils.data.dataset import pair_by_stem
from utils.data.images import check_images, listing
from utils.io import PathLike, atomic_path
from utils.flow.generate import generate_flow
from utils.weights import set_offline
from utils.safety import check_writable, path_conflicts

OUTPUT_FOLDERS = ("TestSet/DAVIS", "TrainSet_Video", "TrainSet_StaticAndVideo")


def read_image_set(path: Path) -> List[str]:
    """Sequence names, in file order without repeats, from a DAVIS ``ImageSets`` list."""
    if not path.is_file():
        raise MissingInputError(f"DAVIS image set list not found: {path}",
                                "pass the DAVIS-2016 root (with ImageSets/480p/train.txt and val.txt)")
    names: Dict[str, None] = {}
    for line in path.read_text().splitlines():
        tokens = line.split()
        if tokens:
            names[Path(tokens[0]).parent.name if "/" in tokens[0] else tokens[0]] = None
    return list(names)


def _same_entry(src: Path, dst: Path) -> bool:
    """True when ``dst`` is already the link to (or a copy of) ``src``."""
    return (dst.is_symlink() and Path(os.readlink(dst)) == src.resolve()) or (
        dst.is_file() and filecmp.cmp(src, dst, shallow=False))


def place(src: Path, dst: Path, copy: bool) -> None:
    """Symlink (absolute target) or copy ``src`` to ``dst``; keep an identical existing entry."""
    if dst.is_symlink() or dst.exists():
        if not _same_entry(src, dst):
            raise OutputExistsError(f"{dst} already exists and differs from {src}", "remove it first")
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
    else:
        os.symlink(src.resolve(), dst)


def plan_import(davis: Path, root: Path) -> Tuple[Dict[str, int], Dict[str, int],
                                                 List[Tuple[Path, Path]], List[str]]:
    """(sequences per split, frames per split, (source, destination) pairs, problems) of an
    import; a missing list or sequence folder, or unpaired files, are problems, not errors, so
    that every one of them is reported."""
    n_sequences: Dict[str, int] = {}
    n_frames: Dict[str, int] = {}
    pairs: List[Tuple[Path, Path]] = []
    problems: List[str] = []
    for split in ("train", "val"):
        try:
            sequences = read_image_set(davis / "ImageSets" / "480p" / f"{split}.txt")
        except UserError as error:
            sequences = []
            problems.append(error.what)
        n_sequences[split], n_frames[split] = len(sequences), 0
        for seq in sequences:
            try:
                samples, _ = pair_by_stem({"image": davis / "JPEGImages" / "480p" / seq,
                                           "gt": davis / "Annotations" / "480p" / seq})
            except UserError as error:
                problems.append(f"{seq}: {error.what}")
                continue
            n_frames[split] += len(samples)
            for sample in samples:
                image, gt = sample["image"], sample["gt"]
                if split == "val":
                    pairs += [(image, root / "TestSet" / "DAVIS" / seq / "Frame" / image.name),
                              (gt, root / "TestSet" / "DAVIS" / seq / "GT" / gt.name)]
                    continue
                name = f"{seq}_{image.stem}"
                for folder, gt_folder in (("TrainSet_Video", "ground-truth"), ("TrainSet_StaticAndVideo", "GTs")):
                    pairs += [(image, root / folder / "Imgs" / f"{name}{image.suffix}"),
                              (gt, root / folder / gt_folder / f"{name}{gt.suffix}")]
    return n_sequences, n_frames, pairs, problems


def check_import(davis: Path, root: Path, pairs: List[Tuple[Path, Path]],
                 problems: Sequence[str] = ()) -> None:
    """Everything that could stop the import half-way, found before it starts and reported in
    one error listing every file: ``problems`` found while planning, outputs overlapping the
    DAVIS folder, unreadable or mismatched DAVIS images, destinations that hold something else."""
    problems = list(problems) + path_conflicts(
        {"--davis": davis}, {f"--data_root {name}": root / name for name in OUTPUT_FOLDERS})
    sources = [src for src, _ in pairs]
    by_frame: Dict[Tuple[str, str], List[Path]] = {}
    for src in sources:  # a frame and its annotation: same sequence folder and stem
        by_frame.setdefault((src.parent.name, src.stem), []).append(src)
    problems += check_images(sources, by_frame.values())[1]
    taken = [f"{dst} already exists and differs from {src}" for src, dst in pairs
             if (dst.is_symlink() or dst.exists()) and not _same_entry(src, dst)]
    problems += taken
    if problems:
        raise (OutputExistsError if taken else BadInputError)(f"{len(problems)} problem(s) stop the DAVIS import:" + listing(problems),
                            "pass the DAVIS-2016 root, restore damaged files from its archive, and "
                            "choose a --data_root apart from it whose DAVIS folders are empty")
    check_writable(root, "--data_root")


def import_davis(davis: PathLike, data_root: PathLike = "dataset", copy: bool = False,
                 flow: bool = True, method: str = "dis", last_frame: str = "skip",
                 workers: int = 1, progress: bool = True, raft_weights: Optional[str] = None,
                 raft_model: str = "raft_large") -> dict:
    """Import DAVIS-2016 train/val into ``data_root``; return counts per split and flow summaries."""
    davis, root = Path(davis), Path(data_root)
    if int(workers) < 1:
        raise BadInputError(f"--workers must be at least 1, got {workers}", "pass --workers 1 or more")
    n_sequences, n_frames, pairs, problems = plan_import(davis, root)
    check_import(davis, root, pairs, problems)
    for src, dst in pairs:
        place(src, dst, copy)
    summary: dict = {split: {"sequences": n_sequences[split], "frames": n_frames[split]}
                     for split in ("train", "val")}
    if flow:
        for split, tree in (("train", root / "TrainSet_Video"), ("val", root / "TestSet" / "DAVIS")):
            summary[split]["flow"] = generate_flow(tree, method=method, last_frame=last_frame,
                                                   workers=workers, skip_existing=True, progress=progress,
                                                   raft_weights=raft_weights, raft_model=raft_model)
    return summary


@dataclass
class ImportConfig:
    """Every option of ``python -m utils.davis_import`` (help: ``python -m utils.davis_import --help``)."""

    davis: str
    data_root: str = "dataset"
    copy: bool = False
    no_flow: bool = False
    method: str = "dis"
    last_frame: str = "skip"
    workers: int = 1
    raft_weights: Optional[str] = None
    raft_model: str = "raft_large"
    offline: bool = False


def run(config: ImportConfig, progress: bool = True) -> dict:
    """:func:`import_davis` as configured (``offline`` forbids RAFT weight downloads)."""
    set_offline(config.offline)
    return import_davis(config.davis, config.data_root, config.copy, not config.no_flow,
                        config.method, config.last_frame, config.workers, progress,
                        config.raft_weights, config.raft_model)
