"""How a video's decoded frames sit on disk: uint8 arrays (`npy`) or one JPEG per frame packed in
one file (`jpeg`, about a tenth of the bytes at quality 90; docs/BENCHMARKS.md has the figures).

A packed file is the JPEG bytes back to back, then the n + 1 byte offsets (int64) and n (int64):
one file per video (no millions of small files), random access to any frame, written whole and
renamed so a half-written file never looks finished. Pillow (a torchvision dependency) encodes
and decodes. Every stored file's SHA-256 is taken as it is written, so a reader can check each
byte it loads against the index (trainer/frame_cache.py).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

FORMATS = ("jpeg", "npy")
SUFFIX = {"jpeg": ".jpgs", "npy": ".npy"}
TMP = ".tmp"  # suffix of a file being written, renamed over the final name when whole


def create(path: Path) -> BinaryIO:
    """A new file at `path` for writing: a stale file or symlink there is removed first and the
    file is created exclusively, so a planted symlink can never redirect the write elsewhere."""
    path.unlink(missing_ok=True)
    return open(path, "xb")


def sha256(path: Path) -> str:
    """Hex SHA-256 of a regular file (a FIFO or device is refused: it could be read forever;
    opened without blocking, so a FIFO with no writer cannot hold the open either)."""
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError(f"{path} is not a regular file")
        return hashlib.file_digest(f, "sha256").hexdigest()


class _Hashing:
    """A file opened for writing that hashes every byte written through it (np.save and the
    JPEG packer only call `write`), so a stored file's SHA-256 needs no second read."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.hash = f, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return self.f.write(data)


def write_frames(path: Path, frames: np.ndarray, fmt: str, quality: int = 90) -> str:
    """Store (T, H, W, 3) uint8 frames at `path` in format `fmt`, atomically; the file's
    SHA-256."""
    tmp = path.with_name(path.name + TMP)
    with create(tmp) as raw:
        f = _Hashing(raw)
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
    return f.hash.hexdigest()


class JpegFrames:
    """A packed JPEG file read like a (T, H, W, 3) uint8 array: `len`, indexing with an int, a
    slice or an index array (only those frames are decoded), `np.asarray` for all of them.

    The frame count and offsets at the file's end are checked against the file's size before
    any frame is read (a damaged tail must not slice outside the frames or allocate for a
    huge count); `frame_shape` (H, W), when given, is checked per frame before it is decoded."""

    def __init__(self, path: Path, frame_shape: tuple[int, int] | None = None):
        self.data = np.memmap(path, dtype=np.uint8, mode="r")
        self.frame_shape = frame_shape
        size = len(self.data)
        n = int(self.data[-8:].view(np.int64)[0]) if size >= 16 else -1
        if not 0 <= n <= (size - 16) // 8:
            raise ValueError(f"{path} is not a packed JPEG frame file")
        start = size - 8 - 8 * (n + 1)
        self.offsets = np.frombuffer(self.data[start : start + 8 * (n + 1)].tobytes(), np.int64)
        if self.offsets[0] != 0 or self.offsets[-1] != start or np.any(np.diff(self.offsets) < 1):
            raise ValueError(f"{path} is not a packed JPEG frame file")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def _decode(self, i: int) -> np.ndarray:
        raw = io.BytesIO(self.data[self.offsets[i] : self.offsets[i + 1]])
        with Image.open(raw) as image:
            if self.frame_shape and image.size[::-1] != tuple(self.frame_shape):
                raise ValueError(f"frame {i} is {image.size[1]}x{image.size[0]}")
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


def open_frames(
    path: Path, fmt: str, frame_shape: tuple[int, int] | None = None
) -> np.ndarray | JpegFrames:
    """The frames of one stored video (memory-mapped or decoded on demand); with `frame_shape`
    (H, W) an array of any other shape or type is refused."""
    if fmt == "jpeg":
        return JpegFrames(path, frame_shape)
    frames = np.load(path, mmap_mode="r")
    if frame_shape and (frames.dtype != np.uint8 or frames.shape[1:] != (*frame_shape, 3)):
        raise ValueError(f"{path} holds {frames.dtype} {frames.shape}, not uint8 frames")
    return frames
