"""Training and test datasets for FSNet, with files paired by name (stem) and checked.

Layouts (under ``data_root``, default ``./dataset``; see dataset/README.md):

* ``TrainSet_StaticAndVideo/{Imgs,GTs}`` -- stage ``pretrain_rgb`` (flow input := the RGB image);
* ``TrainSet_Video/{Imgs,Flow,ground-truth}`` -- ``pretrain_flow`` (RGB input := the flow image)
  and ``finetune`` (RGB + flow); flat folders named ``<seq>_<frame>``;
* ``TestSet/<Dataset>/<seq>/{Frame,OF_FlowNet2,GT}``.

The official loaders pair sorted lists by position; here every sample is matched by file stem
and any mismatch is an error (or, with ``drop_unpaired=True``, skipped with a printed count).
The last frame of a sequence has no forward flow (official rule): such frames are excluded and
listed, never treated as a mismatch.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from utils.cli import BadInputError, MissingInputError
from utils.io import PathLike
from utils.data.images import (first_names, list_images, natural_key, read_mask, read_mask_official,
                          read_rgb, sequence_name)
from utils.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, gt_tensor, hflip_flow_image,
                              hflip_image, input_tensor)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TRAIN_TYPES", "TrainDataset", "TestDataset",
           "read_mask", "pair_by_stem"]

# stage -> (sub-folder of data_root, role -> folder)
TRAIN_TYPES: Dict[str, Tuple[str, Dict[str, str]]] = {
    "pretrain_rgb": ("TrainSet_StaticAndVideo", {"image": "Imgs", "gt": "GTs"}),
    "pretrain_flow": ("TrainSet_Video", {"flow": "Flow", "gt": "ground-truth"}),
    "finetune": ("TrainSet_Video", {"image": "Imgs", "flow": "Flow", "gt": "ground-truth"}),
}
GT_MODES = ("binary", "official")
LAST_FRAME_REASON = ("last frame: no forward flow (official rule; to predict it, make flow with "
                     "python -m utils.flow --last_frame backward)")


def _last_frames(stems: Sequence[str]) -> Set[str]:
    """Last stem (natural order) of every ``<seq>_<frame>`` group."""
    last: Dict[str, str] = {}
    for stem in sorted(stems, key=natural_key):
        last[sequence_name(stem)] = stem
    return set(last.values())


def pair_by_stem(folders: Dict[str, Path], drop_unpaired: bool = False,
                 ) -> Tuple[List[Dict[str, Path]], List[str]]:
    """Match the images of ``folders`` (role -> folder) by stem.

    Returns ``(samples, last_frames_without_flow)``. A stem missing only from the ``flow``
    folder is allowed when it is the last frame of its ``<seq>_<frame>`` sequence. Any other
    mismatch raises ``ValueError`` with counts and the first unmatched names per folder, unless
    ``drop_unpaired`` (then the unmatched stems are skipped and their number printed).
    """
    listings = {role: list_images(folder) for role, folder in folders.items()}
    all_stems = sorted(set().union(*listings.values()), key=natural_key)
    complete = [s for s in all_stems if all(s in files for files in listings.values())]
    unmatched = [s for s in all_stems if not all(s in files for files in listings.values())]
    no_flow_last: List[str] = []
    if "flow" in listings:
        others = [role for role in listings if role != "flow"]
        reference = set().union(*(listings[r] for r in others))
        lasts = _last_frames(list(reference))
        no_flow_last = [s for s in unmatched if s in lasts and s not in listings["flow"]
                        and all(s in listings[r] for r in others)]
        excluded = set(no_flow_last)
        unmatched = [s for s in unmatched if s not in excluded]
    if unmatched and not drop_unpaired:
        lines = []
        for role, files in listings.items():
            extra = [files[s].name for s in unmatched if s in files]
            missing = [s for s in unmatched if s not in files]
            lines.append(f"  {folders[role]} ({len(files)} files): {len(extra)} without a partner "
                         f"[{first_names(extra)}]; {len(missing)} stems missing [{first_names(missing)}]")
        raise BadInputError(
            f"Files do not pair up by name: {len(complete)} complete samples, {len(unmatched)} "
            f"unmatched stems.\n" + "\n".join(lines) +
            "\nFix the folders (same stem in every folder), generate missing flow with "
            "python -m utils.flow, or pass --drop_unpaired to skip these files.")
    if unmatched:
        print(f"drop_unpaired: skipped {len(unmatched)} unpaired stems "
              f"[{first_names(unmatched)}]; {len(complete)} samples kept")
    samples = [{role: listings[role][s] for role in listings} for s in complete]
    return samples, no_flow_last


def _check_same_size(images: Dict[str, Image.Image], paths: Dict[str, Path]) -> None:
    sizes = {role: image.size for role, image in images.items()}
    if len(set(sizes.values())) > 1:
        described = ", ".join(f"{paths[r]} {w}x{h}" for r, (w, h) in sizes.items())
        raise BadInputError(f"Paired files differ in size: {described}. Resize them to one size.")


class TrainDataset(Dataset):
    """Training samples ``(image, flow, gt)``: float tensors (3,S,S), (3,S,S), (1,S,S).

    ``gt_mode='binary'`` (default) thresholds the mask at full resolution (value > 127 after
    conversion, see utils.data.images) before the official bilinear resize, so GT edges stay soft;
    ``'official'`` uses PIL ``convert('L')`` without threshold, exactly like the official loader.
    ``hflip`` (off by default, not in the official recipe) mirrors samples with probability 0.5,
    mirroring flow colours correctly. ``max_samples`` keeps an evenly spaced subset.
    """

    def __init__(self, data_root: PathLike = "dataset", train_type: str = "finetune",
                 trainsize: int = 352, drop_unpaired: bool = False, hflip: bool = False,
                 max_samples: Optional[int] = None, gt_mode: str = "binary") -> None:
        if train_type not in TRAIN_TYPES:
            raise BadInputError(f"Unknown train_type '{train_type}': choose one of {tuple(TRAIN_TYPES)}")
        if gt_mode not in GT_MODES:
            raise BadInputError(f"Unknown gt_mode '{gt_mode}': choose one of {GT_MODES}")
        subset, roles = TRAIN_TYPES[train_type]
        root = Path(data_root) / subset
        folders = {role: root / name for role, name in roles.items()}
        for folder in folders.values():
            if not folder.is_dir():
                raise MissingInputError(
                    f"Training folder not found: {folder} (train_type={train_type}). Prepare the "
                    f"layout described in dataset/README.md, or make a toy set with python -m utils.toy.")
        self.train_type, self.trainsize, self.hflip, self.gt_mode = train_type, trainsize, hflip, gt_mode
        self.samples, self.last_frames_without_flow = pair_by_stem(folders, drop_unpaired)
        if self.last_frames_without_flow:
            print(f"{train_type}: {len(self.last_frames_without_flow)} last frames have no forward "
                  f"flow (official last-frame rule) and are not used")
        if max_samples is not None and max_samples < len(self.samples):
            keep = np.unique(np.linspace(0, len(self.samples) - 1, max(1, max_samples)).round().astype(int))
            self.samples = [self.samples[i] for i in keep]
        if not self.samples:
            raise BadInputError(f"No training samples found under {root}: put images and masks with the "
                             f"same stem into {', '.join(str(f) for f in folders.values())} "
                             f"(see dataset/README.md).")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        paths = self.samples[index]
        reader = read_mask_official if self.gt_mode == "official" else (
            lambda p: Image.fromarray(read_mask(p)))
        images = {role: read_rgb(path) for role, path in paths.items() if role != "gt"}
        images["gt"] = reader(paths["gt"])
        _check_same_size(images, paths)
        if self.hflip and random.random() < 0.5:
            images = {role: hflip_flow_image(im) if role == "flow" else hflip_image(im)
                      for role, im in images.items()}
        gt = gt_tensor(images["gt"], self.trainsize)
        if self.train_type == "pretrain_rgb":
            image = input_tensor(images["image"], self.trainsize)
            return image, image.clone(), gt
        flow = input_tensor(images["flow"], self.trainsize)
        if self.train_type == "pretrain_flow":
            return flow.clone(), flow, gt
        return input_tensor(images["image"], self.trainsize), flow, gt


class TestDataset(Dataset):
    """Test frames with their flow: ``dataset_dir`` holds ``<seq>/{Frame,OF_FlowNet2}`` (or is
    itself one sequence folder holding ``Frame``).

    Items are dicts with ``image``, ``flow`` (3,S,S) tensors, ``sequence``, ``frame`` (stem),
    ``frame_path``, ``height`` and ``width`` (original frame size). Frames without flow: the last
    frame of a sequence goes to ``unpredicted`` (official rule); any other is an error.
    """

    __test__ = False  # a data set, not a pytest test class

    def __init__(self, dataset_dir: PathLike, testsize: int = 352, flow_folder: str = "OF_FlowNet2",
                 frame_folder: str = "Frame", sequences: Optional[Sequence[str]] = None) -> None:
        root = Path(dataset_dir)
        if not root.is_dir():
            raise MissingInputError(f"Test set folder not found: {root}")
        self.testsize = testsize
        self.unpredicted: List[Tuple[str, str, str]] = []
        self.samples: List[Tuple[str, str, Path, Path]] = []
        seq_dirs = self._sequence_dirs(root, frame_folder, sequences)
        for seq_dir in seq_dirs:
            self._add_sequence(seq_dir, frame_folder, flow_folder)
        self.sequences = [d.name for d in seq_dirs]
        if not self.samples:
            raise BadInputError(f"No frame with flow found under {root} ({frame_folder}/ + {flow_folder}/)")

    @staticmethod
    def _sequence_dirs(root: Path, frame_folder: str, sequences: Optional[Sequence[str]]) -> List[Path]:
        if (root / frame_folder).is_dir():
            return [root]
        names = sequences if sequences is not None else sorted(
            (d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=natural_key)
        dirs = [root / name for name in names]
        for seq_dir in dirs:
            if not (seq_dir / frame_folder).is_dir():
                raise MissingInputError(f"Sequence folder {seq_dir} has no '{frame_folder}/' folder "
                                        f"(expected {root}/<seq>/{frame_folder}/).")
        return dirs

    def _add_sequence(self, seq_dir: Path, frame_folder: str, flow_folder: str) -> None:
        frames = list_images(seq_dir / frame_folder)
        fix = (f"generate it with: python -m utils.flow --frames {seq_dir / frame_folder} "
               f"--out {seq_dir / flow_folder} --skip_existing")
        if not (seq_dir / flow_folder).is_dir():
            raise MissingInputError(f"Flow folder not found: {seq_dir / flow_folder}; {fix}")
        flows = list_images(seq_dir / flow_folder)
        orphans = [flows[s].name for s in flows if s not in frames]
        if orphans:
            raise BadInputError(f"{len(orphans)} flow images in {seq_dir / flow_folder} have no frame of the "
                             f"same name in {seq_dir / frame_folder}: {first_names(orphans)}")
        stems = list(frames)
        missing = [frames[s].name for s in stems[:-1] if s not in flows]
        if missing:
            raise BadInputError(f"{len(missing)} frames in {seq_dir / frame_folder} have no flow image of the "
                             f"same name in {seq_dir / flow_folder}: {first_names(missing)}; {fix}")
        for stem in stems:
            if stem in flows:
                self.samples.append((seq_dir.name, stem, frames[stem], flows[stem]))
            else:
                self.unpredicted.append((seq_dir.name, stem, LAST_FRAME_REASON))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sequence, stem, frame_path, flow_path = self.samples[index]
        image, flow = read_rgb(frame_path), read_rgb(flow_path)
        _check_same_size({"frame": image, "flow": flow}, {"frame": frame_path, "flow": flow_path})
        return {
            "image": input_tensor(image, self.testsize),
            "flow": input_tensor(flow, self.testsize),
            "sequence": sequence,
            "frame": stem,
            "frame_path": str(frame_path),
            "height": image.height,
            "width": image.width,
        }
