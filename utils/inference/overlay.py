"""Animated GIF of masks tinted over their frames, to look at a video result at a glance.

The GIF is written frame by frame (:class:`GifStream`): each frame is quantised on its own and
appended with its own colour table, so memory stays that of one frame however long the video.
"""
from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import BinaryIO, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from utils.cli import BadInputError
from utils.io import PathLike, atomic_path, open_image

#: GIF header extension that makes viewers loop the animation forever.
_LOOP_FOREVER = b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"


def tint(frame: np.ndarray, mask: np.ndarray, color: Tuple[int, int, int] = (255, 0, 0),
         alpha: float = 0.5) -> np.ndarray:
    """Blend ``color`` over the RGB ``frame`` (H, W, 3) uint8 in proportion to ``mask`` (H, W) 0..255."""
    weight = alpha * (mask.astype(np.float32) / 255.0)[..., None]
    blended = frame.astype(np.float32) * (1.0 - weight) + np.asarray(color, np.float32) * weight
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def _shrunk(array: np.ndarray, max_side: int) -> np.ndarray:
    """``array`` (H, W[, 3]) shrunk by area averaging so that its longer side is at most ``max_side``."""
    height, width = array.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return array
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA)


def overlay_image(frame: np.ndarray, mask: Optional[np.ndarray], max_side: int = 480,
                  where: str = "frame") -> Image.Image:
    """The RGB ``frame`` shrunk so that its longer side is at most ``max_side``, with ``mask``
    (same size as the frame, or ``None``: untinted), shrunk alike, tinted over it; ``where``
    names the frame in errors."""
    small_frame = _shrunk(np.ascontiguousarray(frame), max_side)
    if mask is None:
        return Image.fromarray(small_frame)
    if mask.shape[:2] != frame.shape[:2]:
        raise BadInputError(
            f"Mask of {where} is {mask.shape[1]}x{mask.shape[0]} but the frame is "
            f"{frame.shape[1]}x{frame.shape[0]}: masks must be written at the original frame size.")
    return Image.fromarray(tint(small_frame, _shrunk(np.ascontiguousarray(mask), max_side)))


def _gif_parts(image: Image.Image) -> Tuple[bytes, int, bytes]:
    """``(colour table, size bits, image data)`` of ``image`` (fast octree palette) saved as a
    one-frame GIF by PIL."""
    buffer = io.BytesIO()
    image.quantize(256, method=Image.Quantize.FASTOCTREE).save(buffer, format="GIF")
    data = buffer.getvalue()
    flags = data[10]
    table_size = 3 << ((flags & 7) + 1) if flags & 0x80 else 0
    table, pos = data[13:13 + table_size], 13 + table_size
    while data[pos:pos + 1] == b"!":  # skip extensions: label, then sub-blocks up to a 0 byte
        pos += 2
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    if data[pos:pos + 1] != b"," or data[pos + 9] & 0x80:
        raise RuntimeError("unexpected GIF layout from PIL")  # one image, global table only
    descriptor = data[pos + 1:pos + 9]  # left, top, width, height; flags rebuilt by the caller
    return table, flags & 7, descriptor + data[pos + 10:-1]  # image data without the trailer


class GifStream:
    """A looping GIF written one frame at a time into a temporary file, renamed on :meth:`close`.

    Every frame carries its own colour table (PIL's fast octree palette of that frame, ~1 ms
    against ~0.3 s for its default median cut at 480x270), so no frame is kept after it is added.
    Use as a context manager: an error leaves no file behind.
    """

    def __init__(self, path: PathLike, duration_ms: int = 100, max_side: int = 480) -> None:
        self.path, self.duration_ms, self.max_side = Path(path), duration_ms, max_side
        self.frames = 0
        self.size: Optional[Tuple[int, int]] = None
        self._atomic = atomic_path(self.path)
        self._file: Optional[BinaryIO] = None

    def __enter__(self) -> "GifStream":
        self._file = open(self._atomic.__enter__(), "wb")
        return self

    def add(self, frame: np.ndarray, mask: Optional[np.ndarray], where: str = "frame") -> None:
        """Append ``frame`` (RGB uint8) with ``mask`` (uint8, frame size, or ``None``) tinted over it."""
        image = overlay_image(frame, mask, self.max_side, where)
        if self.size is None:
            self.size = image.size
            self._file.write(b"GIF89a" + struct.pack("<HHBBB", *image.size, 0, 0, 0) + _LOOP_FOREVER)
        elif image.size != self.size:
            raise BadInputError(f"{where} is {image.size[0]}x{image.size[1]} in the GIF, the first frame "
                                f"{self.size[0]}x{self.size[1]}: frames of one video must share one size")
        table, bits, rest = _gif_parts(image)
        control = b"!\xf9\x04\x00" + struct.pack("<H", self.duration_ms // 10) + b"\x00\x00"
        self._file.write(control + b"," + rest[:8] + bytes([0x80 | bits]) + table + rest[8:])
        self.frames += 1

    def close(self, error: Optional[BaseException] = None) -> None:
        """Finish the file (rename it into place), or drop it when ``error`` is given; a GIF
        without frames is an error."""
        if self._file is None:
            return
        empty = error is None and not self.frames
        if error is None and not empty:
            self._file.write(b";")
        self._file.close()
        self._file = None
        if error is None and not empty:
            self._atomic.__exit__(None, None, None)
            return
        failure = error or BadInputError(f"no frames to write into {self.path}")
        self._atomic.__exit__(type(failure), failure, failure.__traceback__)
        if empty:
            raise failure

    def __exit__(self, kind, error, traceback) -> None:
        self.close(error)


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
    with GifStream(out_path, duration_ms, max_side) as gif:
        for frame_path, mask_path in zip(frame_paths, mask_paths):
            mask = None if mask_path is None else np.asarray(open_image(mask_path).convert("L"))
            gif.add(np.asarray(open_image(frame_path).convert("RGB")), mask,
                    f"frame {frame_path} (mask {mask_path})")
