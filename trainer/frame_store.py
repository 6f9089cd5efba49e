"""How a video's decoded frames sit on disk: uint8 arrays (`npy`) or one JPEG per frame packed in
one file (`jpeg`, about a tenth of the bytes at quality 90; docs/BENCHMARKS.md has the figures).

A packed file is the JPEG bytes back to back, then the n + 1 byte offsets (int64) and n (int64):
one file per video (no millions of small files), random access to any frame, written whole and
renamed so a half-written file never looks finished. Pillow (a torchvision dependency) encodes
and decodes.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

FORMATS = ("jpeg", "npy")
SUFFIX = {"jpeg": ".jpgs", "npy": ".npy"}


def write_frames(path: Path, frames: np.ndarray, fmt: str, quality: int = 90) -> None:
    """Store (T, H, W, 3) uint8 frames at `path` in format `fmt`, atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        if fmt == "npy":
            np.save(f, frames)
        else:
            offsets = [0]
            for frame in frames:
                data = io.BytesIO()
                Image.fromarray(frame).save(data, format="JPEG", quality=quality)
                f.write(data.getbuffer())
                offsets.append(offsets[-1] + data.getbuffer().nbytes)
            f.write(np.asarray(offsets, dtype=np.int64).tobytes())
            f.write(np.int64(len(frames)).tobytes())
    os.replace(tmp, path)


class JpegFrames:
    """A packed JPEG file read like a (T, H, W, 3) uint8 array: `len`, indexing with an int, a
    slice or an index array (only those frames are decoded), `np.asarray` for all of them."""

    def __init__(self, path: Path):
        self.data = np.memmap(path, dtype=np.uint8, mode="r")
        n = int(self.data[-8:].view(np.int64)[0])
        start = len(self.data) - 8 - 8 * (n + 1)
        if n < 0 or start < 0:
            raise ValueError(f"{path} is not a packed JPEG frame file")
        self.offsets = np.frombuffer(self.data[start : start + 8 * (n + 1)].tobytes(), np.int64)
        if self.offsets[-1] != start:
            raise ValueError(f"{path} is not a packed JPEG frame file")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def _decode(self, i: int) -> np.ndarray:
        raw = io.BytesIO(self.data[self.offsets[i] : self.offsets[i + 1]])
        with Image.open(raw) as image:
            return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))

    def __getitem__(self, key: int | slice | np.ndarray) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._decode(range(len(self))[key])
        idx = np.arange(len(self))[key]
        if not len(idx):
            raise IndexError("no frames selected")
        out = np.stack([self._decode(int(i)) for i in idx.reshape(-1)])
        return out.reshape(*idx.shape, *out.shape[1:])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)


def open_frames(path: Path, fmt: str) -> np.ndarray | JpegFrames:
    """The frames of one stored video (memory-mapped or decoded on demand)."""
    if fmt == "npy":
        return np.load(path, mmap_mode="r")
    return JpegFrames(path)
