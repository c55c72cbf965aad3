"""Finding and reading DAVIS-2016 ground truth and predictions (PNG folders only), with validation.

Ground-truth layouts (``--gt``):

* ``davis``: ``<gt>/Annotations/480p/<seq>/*.png`` (the DAVIS-2016 release);
* ``fsnet``: ``<gt>/<seq>/GT/*.png`` (FSNet's ``TestSet/<Dataset>`` tree);
* ``plain``: ``<gt>/<seq>/*.png`` (a folder of sequences).

Predictions are ``<pred>/<seq>/<frame>.png`` with the GT frame names (the tree inference.py
writes). Before any scoring, every sequence is listed and every GT and scored prediction header is
read (thread pool, :func:`utils.data.images.check_images`); the problems of all sequences are
collected and reported in one :class:`DavisInputError` that names the files and the fix; nothing
is skipped silently. Inputs are only read.

GT masks are read with the shared mask reader (:func:`utils.io.mask_to_gray`: the encoding decided
from the mode and the value range, so 0/255, 0/1, 16-bit, palette and RGBA masks read alike),
then must be binary (docs/deviations.md D53).
"""
from __future__ import annotations


import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from eval.common import format_listing
from utils.cli import BadInputError, UserError
from utils.data.images import ImageHeader, check_images
from utils.io import mask_to_gray, natural_key, open_image

GT_LAYOUTS = ("auto", "davis", "fsnet", "plain")


class DavisInputError(UserError, ValueError):
    """Bad evaluation input (missing, unreadable or inconsistent files)."""


@dataclass
class SequenceJob:
    """Everything needed to score one sequence: GT frames in order and their predictions."""

    name: str
    gt_paths: list[Path]
    pred_paths: list[Path | None]  # None: missing prediction read as an empty mask
    size: tuple[int, int]  # (height, width) of the GT
    missing: list[str] = field(default_factory=list)  # frame names read as empty masks


def _listing(paths: list, what: str) -> str:
    """``what (count):`` followed by the first few entries, one per line."""
    return f"{what} ({len(paths)}):" + format_listing(paths)


def list_pngs(folder: Path) -> list[Path]:
    """PNG files of ``folder`` in natural order; any other entry is an error."""
    entries = sorted(folder.iterdir(), key=lambda p: natural_key(p.name))
    others = [p for p in entries if not (p.is_file() and p.suffix.lower() == ".png")]
    if others:
        raise DavisInputError(
            _listing(others, f"{folder} must contain only PNG mask files; found other entries")
            + "\nMove them out of the folder (masks must be saved as .png).")
    return entries


def detect_layout(gt_root: Path) -> str:
    """Which of the three GT layouts ``gt_root`` holds (see the module docstring)."""
    if not gt_root.is_dir():
        raise DavisInputError(f"GT folder {gt_root} does not exist (--gt).")
    if (gt_root / "Annotations" / "480p").is_dir():
        return "davis"
    subdirs = [p for p in gt_root.iterdir() if p.is_dir()]
    if not subdirs:
        raise DavisInputError(
            f"GT folder {gt_root} has no sequence folders; expected Annotations/480p/<seq>/, "
            "<seq>/GT/ or <seq>/*.png.")
    with_gt = [p for p in subdirs if (p / "GT").is_dir()]
    if with_gt and len(with_gt) != len(subdirs):
        missing = sorted(p for p in subdirs if not (p / "GT").is_dir())
        raise DavisInputError(_listing(
            missing, f"{gt_root} looks like the FSNet layout (<seq>/GT/*.png) but some "
            "sequence folders have no GT/ subfolder") + "\nAdd GT/ or pass --gt_layout plain.")
    return "fsnet" if with_gt else "plain"


def _sequence_dirs(root: Path, what: str) -> list[Path]:
    """Sub-folders of ``root``; files there are not sequences and are named in a warning."""
    entries = list(root.iterdir())
    stray = sorted(p for p in entries if not p.is_dir())
    if stray:
        warnings.warn(f"{what}: ignored " + _listing(stray, f"files in {root} (not sequence folders)"),
                      stacklevel=3)
    return [p for p in entries if p.is_dir()]


def gt_sequences(gt_root: Path, layout: str = "auto") -> dict[str, Path]:
    """Map sequence name -> folder holding its GT PNGs."""
    gt_root = Path(gt_root)
    if layout not in GT_LAYOUTS:
        raise DavisInputError(f"Unknown --gt_layout {layout!r}; choose one of {GT_LAYOUTS}.")
    if layout == "auto":
        layout = detect_layout(gt_root)
    base = gt_root / "Annotations" / "480p" if layout == "davis" else gt_root
    if not base.is_dir():
        raise DavisInputError(f"GT folder {base} does not exist (--gt, layout {layout}).")
    seqs = {p.name: (p / "GT" if layout == "fsnet" else p) for p in _sequence_dirs(base, "--gt")}
    if not seqs:
        raise DavisInputError(f"No sequence folders under {base} (--gt, layout {layout}).")
    return dict(sorted(seqs.items()))


def pred_sequences(pred_root: Path) -> list[str]:
    """Sequence folders present under the prediction root."""
    pred_root = Path(pred_root)
    if not pred_root.is_dir():
        raise DavisInputError(f"Prediction folder {pred_root} does not exist (--pred).")
    return sorted(p.name for p in _sequence_dirs(pred_root, "--pred"))


def _list_sequence(name: str, gt_dir: Path, pred_root: Path, allow_missing: bool
                   ) -> tuple[list[Path], dict[str, Path], Path]:
    """(GT PNGs, available predictions by stem, prediction folder) of one sequence."""
    gt_paths = list_pngs(gt_dir)
    if len(gt_paths) < 3:
        raise DavisInputError(
            f"Sequence {name!r}: {gt_dir} holds {len(gt_paths)} GT PNG(s); at least 3 are "
            "needed (the first and last frame are never scored).")
    pred_dir = Path(pred_root) / name
    if pred_dir.is_dir():
        available = {p.stem: p for p in list_pngs(pred_dir)}
    elif allow_missing:
        available = {}
    else:
        raise DavisInputError(
            f"No prediction folder {pred_dir} for sequence {name!r}. Run inference for it, "
            "choose sequences with --seqs, or pass --allow_missing to score it as empty.")
    return gt_paths, available, pred_dir


def plan_sequences(names: list[str], gt_seqs: dict[str, Path], pred_root: Path,
                   allow_missing: bool) -> list[SequenceJob]:
    """Check every sequence's files (names, count, readable headers, sizes) and return the jobs;
    the problems of all sequences are reported together in one :class:`DavisInputError`."""
    listed, problems = {}, []
    for name in names:
        try:
            listed[name] = _list_sequence(name, gt_seqs[name], pred_root, allow_missing)
        except DavisInputError as error:
            problems.append(str(error))
    wanted = [path for gt_paths, available, _ in listed.values()
              for path in gt_paths + [available[p.stem] for p in gt_paths[1:-1] if p.stem in available]]
    sizes, unreadable = check_images(wanted)
    if unreadable:
        problems.append(_listing(unreadable, "Unreadable or truncated PNGs") + "\nRe-save them as PNG.")
    jobs = []
    for name, (gt_paths, available, pred_dir) in listed.items():
        try:
            jobs.append(plan_sequence(name, gt_paths, available, pred_dir, sizes, allow_missing))
        except DavisInputError as error:
            problems.append(str(error))
    if problems:
        raise DavisInputError("\n".join(problems))
    return jobs


def plan_sequence(name: str, gt_paths: list[Path], available: dict[str, Path], pred_dir: Path,
                  sizes: dict[Path, ImageHeader], allow_missing: bool) -> SequenceJob:
    """One sequence's job from its listed files and their ``sizes`` (headers: size and mode).

    Predictions must be single-channel (checked from the header, before any scoring). Only the scored frames (1 .. N-2) need a prediction; extra prediction files are ignored;
    files missing from ``sizes`` (unreadable, reported by the caller) are not compared.
    """
    def size_of(path: Path) -> tuple[int, int] | None:
        return (sizes[path].height, sizes[path].width) if path in sizes else None

    size = size_of(gt_paths[0]) or (0, 0)
    pred_paths: list[Path | None] = [None] * len(gt_paths)
    missing, wrong_size, multi_channel = [], [], []
    for index, gt_path in enumerate(gt_paths):
        gt_size = size_of(gt_path)
        if gt_size is not None and gt_size != size:
            wrong_size.append(f"{gt_path}: {gt_size} vs {size} of {gt_paths[0]}")
        if not 1 <= index <= len(gt_paths) - 2:
            continue
        pred = available.get(gt_path.stem)
        if pred is None:
            missing.append(pred_dir / (gt_path.stem + ".png"))
            continue
        bands = Image.getmodebands(sizes[pred].mode) if pred in sizes else 1
        if bands != 1:
            multi_channel.append(f"{pred}: {bands} channels (mode {sizes[pred].mode})")
        pred_size = size_of(pred)
        if pred_size is not None and pred_size != size:
            wrong_size.append(f"{pred}: {pred_size[0]}x{pred_size[1]} but GT {gt_path} is "
                              f"{size[0]}x{size[1]}")
        pred_paths[index] = pred
    if wrong_size:
        raise DavisInputError(_listing(wrong_size, f"Sequence {name!r}: size mismatch")
                              + "\nPredictions must have the GT size (no resizing is done).")
    if multi_channel:
        raise DavisInputError(_listing(multi_channel, f"Sequence {name!r}: multi-channel predictions")
                              + "\nMasks must be single-channel (grey or palette) PNGs, as in the "
                              "MATLAB toolbox: save them in mode 'L'.")
    if missing and not allow_missing:
        raise DavisInputError(_listing(missing, f"Sequence {name!r}: missing predictions")
                              + "\nWrite them, or pass --allow_missing to score them as empty.")
    return SequenceJob(name, gt_paths, pred_paths, size, [p.stem for p in missing])


def _open(path: Path) -> Image.Image:
    """The decoded image (``utils.io.open_image``); DavisInputError naming it if unreadable."""
    try:
        return open_image(path)
    except BadInputError as error:
        raise DavisInputError(error.what, error.fix) from error


def _read_array(path: Path) -> np.ndarray:
    array = np.asarray(_open(path))
    if array.ndim != 2:
        raise DavisInputError(
            f"{path} has {array.shape[2]} channels; masks must be single-channel (grey or "
            "palette) PNGs, as in the MATLAB toolbox. Save it in mode 'L'.")
    return array


def _is_binary(array: np.ndarray) -> bool:
    """Values all in {0, 1} or all in {0, 255} (or a bool image)."""
    if array.dtype == bool:
        return True
    top = array.max()
    return bool(top in (0, 1, 255) and not np.any((array != 0) & (array != top)))


def read_gt(path: Path) -> np.ndarray:
    """GT mask as bool: the shared mask reader's grey (``utils.io.mask_to_gray``, which makes
    every two-level encoding 0/255) > 0; that grey must be binary."""
    try:
        array = mask_to_gray(_open(path), path)
    except BadInputError as error:
        raise DavisInputError(error.what, error.fix) from error
    if not _is_binary(array):
        values = np.unique(array)[:8].tolist()
        raise DavisInputError(f"GT {path} is not binary (values {values} ...); DAVIS-2016 GT "
                              "must hold only 0 and 255.")
    return array > 0


def read_prediction(path: Path | None, shape: tuple[int, int], threshold: float | None
                    ) -> np.ndarray:
    """Prediction as bool (None -> empty mask of ``shape``).

    Binary PNGs ({0,255}, {0,1}, 1-bit) are foreground where non-zero. Other maps are
    thresholded: with ``threshold`` None as the MATLAB toolbox does (value > round(max / 2),
    rounded half up, e.g. > 128 for a map whose maximum is 255), else value > threshold x the
    largest value of the integer type (255 for 8-bit PNGs).
    """
    if path is None:
        return np.zeros(shape, dtype=bool)
    array = _read_array(path)
    if _is_binary(array):
        return array > 0
    if threshold is None:
        return array > (int(array.max()) + 1) // 2
    return array > threshold * np.iinfo(array.dtype).max
