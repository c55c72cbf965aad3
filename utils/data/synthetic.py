"""Deterministic synthetic video data set in all three FSNet layouts (demo data and test fixture).

Each video shows 1-2 foreground objects (ellipses with saturated, striped textures that move with
the object) travelling over a low-saturation, blurred-noise background that pans with the
camera. Objects change scale over time, some videos have two objects crossing (one occludes the
other) and some have a background-textured pole, moving with the background, in front of the
objects (the GT excludes occluded parts). Foreground differs from background in colour statistics
(saturated vs grey), texture (stripes vs blur noise) and motion (own velocity vs camera pan), and
covers roughly 10-40% of the frame, so a small model can learn it quickly. The flow images are
computed by ``utils.flow.generate`` (DIS) from the rendered JPEG frames, not from the renderer's motion.

CLI: ``python -m utils.toy --out dataset/Toy [--quick] [--seed 0]``. Layout under ``out``::

    TrainSet_StaticAndVideo/{Imgs,GTs}     static images static000.jpg ... + all train video frames
    TrainSet_Video/{Imgs,Flow,ground-truth} <seq>_<frame>.jpg (train00_00000.jpg ...); last frames no flow
    TestSet/Toy/<seq>/{Frame,OF_FlowNet2,GT} 00000.jpg ...; the last frame of each sequence has no flow
    toy.json                                 the parameters used and every file written (a
                                             regenerated set replaces only those files)
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from utils.cli import BadInputError
from utils.cli import OutputExistsError
from utils.io import PathLike, save_image, save_json
from utils.flow.generate import generate_flow
from utils.safety import LOCK_NAME, check_writable, output_lock

RECORD = "toy.json"  # the parameters and every file written
MTIME_SLACK_NS = 2_000_000_000  # file systems with coarse timestamps (FAT: 2 s)


@dataclass(frozen=True)
class ToyConfig:
    """Sizes of the toy set (defaults: about 5 s to generate on one core)."""

    width: int = 128
    height: int = 96
    train_sequences: int = 8
    train_frames: int = 12
    test_sequences: int = 4
    test_frames: int = 10
    static_images: int = 40
    dataset_name: str = "Toy"


    def check(self) -> None:
        """Raise ``BadInputError`` naming every value out of range (sizes >= 16 pixels, at least
        one sequence of two frames per split, no negative static image count)."""
        minimum = {"width": 16, "height": 16, "train_sequences": 1, "train_frames": 2,
                   "test_sequences": 1, "test_frames": 2, "static_images": 0}
        bad = [f"--{name} {getattr(self, name)} (at least {low})" for name, low in minimum.items()
               if getattr(self, name) < low]
        if bad:
            raise BadInputError("toy set size out of range: " + ", ".join(bad), "pass larger values")


QUICK = ToyConfig(train_sequences=2, train_frames=4, test_sequences=1, test_frames=4, static_images=4)


@dataclass
class _Object:
    center: np.ndarray      # (x, y) at t = 0, pixels
    velocity: np.ndarray    # pixels per frame
    radii: np.ndarray       # (rx, ry) at t = 0
    angle: float            # ellipse orientation, radians
    growth: float           # scale factor per frame
    color: np.ndarray       # base RGB in [0, 1]
    stripe_angle: float
    stripe_period: float


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    pixel = np.uint8([[[int(h * 179), int(s * 255), int(v * 255)]]])
    return cv2.cvtColor(pixel, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0


def _background_canvas(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Low-saturation blurred noise, RGB float in [0, 1]."""
    coarse = cv2.GaussianBlur(rng.random((height, width)).astype(np.float32), (0, 0), 6)
    fine = cv2.GaussianBlur(rng.random((height, width)).astype(np.float32), (0, 0), 1.2)
    gray = 0.5 + 2.5 * (coarse - coarse.mean()) + 0.6 * (fine - fine.mean())
    tint = rng.uniform(-0.04, 0.04, size=3).astype(np.float32)
    return np.clip(gray[..., None] * (0.8 + 0.1 * rng.random()) + tint, 0.05, 0.95)


def _random_object(rng: np.random.Generator, width: int, height: int, frames: int) -> _Object:
    size = min(width, height)
    radii = rng.uniform(0.22, 0.34, size=2) * size
    start = np.array([rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height])
    direction = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(1.5, 3.0)
    return _Object(
        center=start - np.array([np.cos(direction), np.sin(direction)]) * speed * frames / 2,
        velocity=np.array([np.cos(direction), np.sin(direction)]) * speed,
        radii=radii, angle=rng.uniform(0, np.pi), growth=rng.uniform(0.97, 1.03),
        color=_hsv_to_rgb(rng.random(), rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0)),
        stripe_angle=rng.uniform(0, np.pi), stripe_period=rng.uniform(5, 9))


def _render_object(obj: _Object, t: int, grid: Tuple[np.ndarray, np.ndarray]
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(alpha for the image, hard mask, RGB texture) of one object at frame t."""
    scale = obj.growth ** t
    cx, cy = obj.center + obj.velocity * t
    dx, dy = grid[0] - cx, grid[1] - cy
    cos, sin = np.cos(obj.angle), np.sin(obj.angle)
    u = (dx * cos + dy * sin) / scale          # object coordinates: texture moves with the object
    v = (-dx * sin + dy * cos) / scale
    dist = np.sqrt((u / obj.radii[0]) ** 2 + (v / obj.radii[1]) ** 2)
    alpha = np.clip((1.0 - dist) * obj.radii.min() * scale + 0.5, 0.0, 1.0)
    phase = (u * np.cos(obj.stripe_angle) + v * np.sin(obj.stripe_angle)) / obj.stripe_period
    texture = obj.color * (0.75 + 0.25 * np.sin(2 * np.pi * phase))[..., None]
    return alpha, dist <= 1.0, texture


class _Scene:
    """One video: background canvas panned by the camera, objects, optional occluding pole."""

    def __init__(self, rng: np.random.Generator, width: int, height: int, frames: int) -> None:
        self.width, self.height = width, height
        self.canvas = _background_canvas(rng, 2 * height, 2 * width)
        self.camera = np.array([rng.uniform(0.2, 0.6) * width, rng.uniform(0.2, 0.6) * height])
        self.pan = rng.uniform(-1.0, 1.0, size=2)
        self.objects = [_random_object(rng, width, height, frames)
                        for _ in range(1 + int(rng.random() < 0.5))]
        self.pole: Optional[Tuple[float, float]] = None
        if rng.random() < 0.4:  # canvas x-position and width of an occluding pole
            self.pole = (float(self.camera[0] + rng.uniform(0.3, 0.7) * width), float(rng.uniform(6, 10)))
        self.grid = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))

    def render(self, t: int) -> Tuple[np.ndarray, np.ndarray]:
        """RGB uint8 frame and {0,255} GT at frame t."""
        ox, oy = self.camera + self.pan * t
        shift = np.float32([[1, 0, ox], [0, 1, oy]])
        image = cv2.warpAffine(self.canvas, shift, (self.width, self.height),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
        gt = np.zeros((self.height, self.width), dtype=bool)
        for obj in self.objects:
            alpha, mask, texture = _render_object(obj, t, self.grid)
            image = image * (1 - alpha[..., None]) + texture * alpha[..., None]
            gt |= mask
        if self.pole is not None:
            pole_x, pole_w = self.pole
            alpha = np.clip(pole_w / 2 - np.abs(self.grid[0] + ox - pole_x) + 0.5, 0.0, 1.0)
            pole = np.float32([0.3, 0.3, 0.32]) + 0.15 * image.mean(axis=2, keepdims=True)
            image = image * (1 - alpha[..., None]) + pole * alpha[..., None]
            gt &= alpha < 0.5
        return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), gt.astype(np.uint8) * 255


def _render_video(seed: Sequence[int], config: ToyConfig, frames: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    scene = _Scene(np.random.default_rng(list(seed)), config.width, config.height, frames)
    return [scene.render(t) for t in range(frames)]


def make_toy_dataset(out: PathLike = "dataset/Toy", seed: int = 0, quick: bool = False,
                     config: Optional[ToyConfig] = None, workers: int = 1, progress: bool = False) -> Path:
    """Write the toy set under ``out`` (see the module docstring) and return ``out``.

    ``out`` must be empty or hold an earlier toy set (recognised by ``toy.json``), whose files
    (as recorded there) are then replaced; other files and folders in ``out`` stay.
    """
    config = config or (QUICK if quick else ToyConfig())
    config.check()
    if seed < 0:
        raise BadInputError(f"--seed must be 0 or more, got {seed}", "pass a non-negative seed")
    if int(workers) < 1:
        raise BadInputError(f"--workers must be at least 1, got {workers}", "pass --workers 1 or more")
    out = Path(out)
    if out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir()) \
            and not (out / RECORD).is_file():
        raise OutputExistsError(f"{out} is not empty and holds no toy.json",
                                "choose an empty folder (or an earlier toy set) for --out")
    check_writable(out, "--out")
    with output_lock(out, "utils.toy"):
        _write_toy(out, seed, quick, config, workers, progress)
    return out


def _files_under(out: Path) -> List[Path]:
    return [path for path in out.rglob("*") if path.is_file()
            and path.name != LOCK_NAME and path != out / RECORD]


def remove_toy_files(out: Path) -> None:
    """Delete the files an earlier toy set recorded in ``toy.json`` (only those), then the
    folders they leave empty; anything a user added stays."""
    try:
        files = json.loads((out / RECORD).read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        files = []
    folders = set()
    for name in files:
        path = out / name
        if ".." not in Path(name).parts and path.is_file() and not path.is_symlink():
            path.unlink()
            folders.update(p for p in path.parents if out in p.parents)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty


def _write_toy(out: Path, seed: int, quick: bool, config: ToyConfig, workers: int, progress: bool) -> None:
    """Replace the files of an earlier toy set in ``out`` with a freshly rendered toy set and
    record every file written in ``toy.json``."""
    remove_toy_files(out)
    start = time.time_ns() - MTIME_SLACK_NS
    before = set(_files_under(out))
    static_dir, video_dir = out / "TrainSet_StaticAndVideo", out / "TrainSet_Video"
    for index in range(config.static_images):
        image, gt = _render_video((seed, 0, index), config, 1)[0]
        save_image(image, static_dir / "Imgs" / f"static{index:03d}.jpg")
        save_image(gt, static_dir / "GTs" / f"static{index:03d}.png")
    for index in range(config.train_sequences):
        for t, (image, gt) in enumerate(_render_video((seed, 1, index), config, config.train_frames)):
            name = f"train{index:02d}_{t:05d}"
            for folder, gt_folder in ((video_dir, "ground-truth"), (static_dir, "GTs")):
                save_image(image, folder / "Imgs" / f"{name}.jpg")
                save_image(gt, folder / gt_folder / f"{name}.png")
    test_root = out / "TestSet" / config.dataset_name
    for index in range(config.test_sequences):
        seq_dir = test_root / f"test{index:02d}"
        for t, (image, gt) in enumerate(_render_video((seed, 2, index), config, config.test_frames)):
            save_image(image, seq_dir / "Frame" / f"{t:05d}.jpg")
            save_image(gt, seq_dir / "GT" / f"{t:05d}.png")
    for tree in (video_dir, test_root):
        generate_flow(tree, method="dis", last_frame="skip", workers=workers, progress=progress)
    written = [path.relative_to(out).as_posix() for path in sorted(_files_under(out))
               if path not in before or path.stat().st_mtime_ns >= start]
    save_json({"seed": seed, "quick": quick, **asdict(config), "files": written}, out / RECORD)
