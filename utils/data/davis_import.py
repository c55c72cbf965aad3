"""Import the native DAVIS-2016 layout into FSNet's layouts (symlinks or copies) and make its flow.

Input (``--davis DIR``): ``JPEGImages/480p/<seq>/*.jpg``, ``Annotations/480p/<seq>/*.png`` and
``ImageSets/480p/{train,val}.txt`` (lines ``/JPEGImages/480p/<seq>/00000.jpg /Annotations/...``
or bare sequence names). Output under ``--data_root`` (default ``dataset``)::

    TestSet/DAVIS/<seq>/{Frame,GT,OF_FlowNet2}            val sequences
    TrainSet_Video/{Imgs,ground-truth,Flow}/<seq>_<frame>  train sequences
    TrainSet_StaticAndVideo/{Imgs,GTs}/<seq>_<frame>        train sequences (add DUTS-TR yourself)

The DAVIS folder is never modified. Re-running is safe: identical links/copies are kept, flows
already present are kept (delete them to recompute), and a different existing file is an error.

CLI: ``python -m utils.davis_import --davis DIR --data_root dataset [--copy] [--no_flow]``
"""
from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional

from utils.cli import MissingInputError
from utils.data.dataset import pair_by_stem
from utils.io import PathLike, atomic_path
from utils.flow.generate import generate_flow


def read_image_set(path: Path) -> List[str]:
    """Sequence names, in file order without repeats, from a DAVIS ``ImageSets`` list."""
    if not path.is_file():
        raise MissingInputError(f"DAVIS image set list not found: {path} (expected the DAVIS-2016 "
                                f"layout with ImageSets/480p/train.txt and val.txt)")
    names: Dict[str, None] = {}
    for line in path.read_text().splitlines():
        tokens = line.split()
        if tokens:
            names[Path(tokens[0]).parent.name if "/" in tokens[0] else tokens[0]] = None
    return list(names)


def place(src: Path, dst: Path, copy: bool) -> None:
    """Symlink (absolute target) or copy ``src`` to ``dst``; keep an identical existing entry."""
    if dst.is_symlink() or dst.exists():
        same = (dst.is_symlink() and Path(os.readlink(dst)) == src.resolve()) or (
            dst.is_file() and filecmp.cmp(src, dst, shallow=False))
        if not same:
            raise FileExistsError(f"{dst} already exists and differs from {src}: remove it first.")
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
    else:
        os.symlink(src.resolve(), dst)


def import_davis(davis: PathLike, data_root: PathLike = "dataset", copy: bool = False,
                 flow: bool = True, method: str = "dis", last_frame: str = "skip",
                 workers: int = 1, progress: bool = True, raft_weights: Optional[str] = None,
                 raft_model: str = "raft_large") -> dict:
    """Import DAVIS-2016 train/val into ``data_root``; return counts per split and flow summaries."""
    davis, root = Path(davis), Path(data_root)
    summary: dict = {}
    for split in ("train", "val"):
        sequences = read_image_set(davis / "ImageSets" / "480p" / f"{split}.txt")
        count = 0
        for seq in sequences:
            samples, _ = pair_by_stem({"image": davis / "JPEGImages" / "480p" / seq,
                                       "gt": davis / "Annotations" / "480p" / seq})
            for sample in samples:
                image, gt = sample["image"], sample["gt"]
                if split == "val":
                    place(image, root / "TestSet" / "DAVIS" / seq / "Frame" / image.name, copy)
                    place(gt, root / "TestSet" / "DAVIS" / seq / "GT" / gt.name, copy)
                    continue
                name = f"{seq}_{image.stem}"
                for folder, gt_folder in (("TrainSet_Video", "ground-truth"), ("TrainSet_StaticAndVideo", "GTs")):
                    place(image, root / folder / "Imgs" / f"{name}{image.suffix}", copy)
                    place(gt, root / folder / gt_folder / f"{name}{gt.suffix}", copy)
            count += len(samples)
        summary[split] = {"sequences": len(sequences), "frames": count}
    if flow:
        for split, tree in (("train", root / "TrainSet_Video"), ("val", root / "TestSet" / "DAVIS")):
            summary[split]["flow"] = generate_flow(tree, method=method, last_frame=last_frame,
                                                   workers=workers, skip_existing=True, progress=progress,
                                                   raft_weights=raft_weights, raft_model=raft_model)
    return summary
