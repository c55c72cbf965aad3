"""Animated GIF of masks tinted over their frames, to look at a video result at a glance."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from utils.cli import BadInputError
from utils.io import PathLike, atomic_write_with, open_image


def tint(frame: np.ndarray, mask: np.ndarray, color: Tuple[int, int, int] = (255, 0, 0),
         alpha: float = 0.5) -> np.ndarray:
    """Blend ``color`` over the RGB ``frame`` (H, W, 3) uint8 in proportion to ``mask`` (H, W) 0..255."""
    weight = alpha * (mask.astype(np.float32) / 255.0)[..., None]
    blended = frame.astype(np.float32) * (1.0 - weight) + np.asarray(color, np.float32) * weight
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def _overlay_frame(frame_path: PathLike, mask_path: Optional[PathLike], max_side: int) -> Image.Image:
    """One GIF frame: the RGB frame with its mask tinted over it, shrunk to ``max_side``."""
    frame = open_image(frame_path).convert("RGB")
    if mask_path is not None:
        mask = open_image(mask_path).convert("L")
        if mask.size != frame.size:
            raise BadInputError(
                f"Mask {mask_path} is {mask.size[0]}x{mask.size[1]} but frame {frame_path} is "
                f"{frame.size[0]}x{frame.size[1]}: masks must be written at the original frame size."
            )
        frame = Image.fromarray(tint(np.asarray(frame), np.asarray(mask)))
    scale = max_side / max(frame.size)
    if scale < 1.0:
        frame = frame.resize((max(1, round(frame.width * scale)), max(1, round(frame.height * scale))),
                             Image.BILINEAR)
    return frame


def write_overlay_gif(frame_paths: Sequence[PathLike], mask_paths: Sequence[Optional[PathLike]],
                      out_path: PathLike, duration_ms: int = 100, max_side: int = 480) -> None:
    """Write a looping GIF of each mask tinted red over its frame, atomically.

    ``mask_paths[i]`` may be ``None`` for a frame that has no mask (shown untinted). Frames are
    shrunk so that their longer side is at most ``max_side`` pixels to keep the file small.
    """
    if len(frame_paths) != len(mask_paths):
        raise BadInputError(f"write_overlay_gif: {len(frame_paths)} frames but {len(mask_paths)} masks")
    if not frame_paths:
        raise BadInputError(f"write_overlay_gif: no frames to write into {out_path}")
    images = [_overlay_frame(f, m, max_side) for f, m in zip(frame_paths, mask_paths)]
    atomic_write_with(out_path, lambda buf: images[0].save(
        buf, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0))
