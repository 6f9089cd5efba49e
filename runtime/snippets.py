"""The one time convention: which frames make snippet i, and which second it stands for."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SnippetGrid:
    """Snippet i covers frames [i*hop, i*hop + k*frame_stride); its time is that span's centre.

    `hop` may be fractional (the `resize` protocol spreads L snippets over a whole video);
    frame indices are then rounded down.
    """

    fps: float
    k: int
    frame_stride: int
    hop: float

    @property
    def span(self) -> int:
        return self.k * self.frame_stride

    def count(self, n_frames: int) -> int:
        """Snippets needed to cover n_frames; the last may run past the end (frames clamp)."""
        if n_frames <= 0:
            return 0
        return 1 + math.ceil(max(n_frames - self.span, 0) / self.hop - 1e-9)

    def frame_indices(self, first: int, count: int, n_frames: int) -> np.ndarray:
        """(count, k) frame indices of snippets first..first+count-1, clamped to the video."""
        starts = np.floor((first + np.arange(count)) * self.hop + 1e-9).astype(np.int64)
        idx = starts[:, None] + np.arange(self.k)[None, :] * self.frame_stride
        return np.minimum(idx, n_frames - 1)

    def time(self, index: np.ndarray | float) -> np.ndarray | float:
        """Seconds of a (fractional) snippet index."""
        return (np.asarray(index) * self.hop + self.span / 2) / self.fps

    def index(self, seconds: np.ndarray | float) -> np.ndarray | float:
        """Inverse of `time`: fractional snippet index of a time in seconds."""
        return (np.asarray(seconds) * self.fps - self.span / 2) / self.hop

    def uses(self, frame: int) -> bool:
        """Whether some snippet takes `frame` (not counting the clamp at a video's end): with
        a hop of 4 and a frame stride of 2, only the even frames."""
        for j in range(self.k):
            start = frame - j * self.frame_stride
            if start < 0:
                break
            i = int(start / self.hop + 1e-9)
            if any(math.floor(c * self.hop + 1e-9) == start for c in (i, i + 1) if c >= 0):
                return True
        return False

    def last_frame_needed(self, i: int) -> int:
        return int(math.floor(i * self.hop + 1e-9)) + self.span - 1


def resize_grid(fps: float, k: int, frame_stride: int, n_frames: int, length: int) -> SnippetGrid:
    """ActivityNet protocol: `length` snippets spread uniformly over the whole video."""
    hop = max(n_frames - k * frame_stride, 0) / max(length - 1, 1)
    return SnippetGrid(fps, k, frame_stride, max(hop, 1e-6))
