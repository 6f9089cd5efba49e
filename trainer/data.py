"""The windows and clips the trainer samples from a frame cache (trainer/frame_cache.py)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch
from lofi.runtime.annotations import GroundTruth, load_ground_truth
from lofi.runtime.errors import LofiError
from lofi.runtime.snippets import SnippetGrid, resize_grid
from lofi.trainer.frame_cache import CacheReport as CacheReport
from lofi.trainer.frame_cache import FrameCache as FrameCache
from lofi.trainer.frame_cache import prepare_cache as prepare_cache
from lofi.trainer.schema import Config


@dataclass(frozen=True)
class SnippetSpec:
    """Snippet geometry and the temporal protocol (`window` or `resize`)."""

    k: int = 4
    frame_stride: int = 1
    hop: int = 4
    window: int = 64
    mode: str = "window"

    def grid(self, fps: float, n_frames: int, r_t: int = 1) -> tuple[SnippetGrid, int]:
        """Grid and window length at temporal reduction r_t (T-LoFi: hop x r_t, or L / r_t)."""
        length = self.window // r_t
        if self.mode == "resize":
            return resize_grid(fps, self.k, self.frame_stride, n_frames, length), length
        return SnippetGrid(fps, self.k, self.frame_stride, self.hop * r_t), length


@dataclass
class Window:
    """One training sample: `length` snippets from `first` on a grid of one video."""

    video: str
    first: int
    length: int
    grid: SnippetGrid
    n_frames: int
    n_snippets: int  # snippets the video has on this grid; later positions are padding
    segments: torch.Tensor  # (n, 3) start, end, class in window snippet coordinates

    def frame_index(self) -> np.ndarray:
        return self.grid.frame_indices(self.first, self.length, self.n_frames)

    def valid(self) -> torch.Tensor:
        return torch.arange(self.length) + self.first < self.n_snippets


def video_windows(
    gt: GroundTruth,
    cache: FrameCache,
    spec: SnippetSpec,
    r_t: int,
    labels: list[str],
    overlap: float = 0.5,
) -> list[Window]:
    """Windows covering every video (with overlap in `window` mode; one per video in `resize`)."""
    out = []
    for vid, info in gt.videos.items():
        n_frames = len(cache.frames(vid))
        grid, length = spec.grid(cache.fps, n_frames, r_t)
        total = length if spec.mode == "resize" else grid.count(n_frames)
        step = max(1, int(length * (1 - overlap)))
        starts = list(range(0, max(total - length, 0) + 1, step))
        if starts[-1] + length < total:
            starts.append(total - length)
        segs = [
            (float(grid.index(s.start)), float(grid.index(s.end)), labels.index(s.label))
            for s in info.segments
            if s.label in labels
        ]
        for first in starts:
            seg = torch.tensor(
                [
                    (a - first, b - first, c)
                    for a, b, c in segs
                    if b - first > 0 and a - first < length
                ],
                dtype=torch.float32,
            ).reshape(-1, 3)
            out.append(Window(vid, first, length, grid, n_frames, total, seg))
    return out


def gather_batch(cache: FrameCache, windows: list[Window]) -> tuple[torch.Tensor, torch.Tensor]:
    """The uint8 frames a batch needs (read once each) and (B, L, k) indices into them."""
    requests, index, base = [], [], 0
    for w in windows:
        idx = w.frame_index()
        uniq, inv = np.unique(idx, return_inverse=True)
        requests.append((w.video, uniq))
        index.append(torch.from_numpy(inv.reshape(idx.shape) + base))
        base += len(uniq)
    return torch.from_numpy(np.concatenate(cache.read(requests))), torch.stack(index)


@dataclass(frozen=True)
class Clip:
    """A labelled span of one cached video: a whole trimmed clip, or an action segment trimmed
    from an untrimmed video (ACP+)."""

    video: str
    first: int  # frame range [first, last)
    last: int
    label: int


def clip_starts(clips: list[Clip], span: int, rng: np.random.Generator) -> list[int]:
    """A random first frame per clip (drawn for a whole global batch, then sharded)."""
    return [int(rng.integers(c.first, max(c.first + 1, c.last - span + 1))) for c in clips]


def clip_batch(
    cache: FrameCache, clips: list[Clip], starts: list[int], k: int, frame_stride: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One snippet per clip from its start frame: (frames, (B, 1, k) index)."""
    requests, index, base = [], [], 0
    for clip, start in zip(clips, starts):
        n = len(cache.frames(clip.video))
        requests.append((clip.video, np.minimum(start + np.arange(k) * frame_stride, n - 1)))
        index.append(torch.arange(k)[None] + base)
        base += k
    return torch.from_numpy(np.concatenate(cache.read(requests))), torch.stack(index)


def trimmed_clips(gt: GroundTruth, cache: FrameCache, subset: str) -> list[Clip]:
    """Each cached video of a trimmed-clip set as one clip, labelled by its (first) segment."""
    return [
        Clip(v, 0, len(cache.frames(v)), gt.labels.index(i.segments[0].label))
        for v, i in gt.videos.items()
        if i.subset == subset and i.segments and v in cache
    ]


def segment_clips(gt: GroundTruth, cache: FrameCache, subset: str) -> list[Clip]:
    """Every action instance of a cached untrimmed video as a clip of its own frames (ACP+)."""
    out = []
    for v, info in gt.videos.items():
        if info.subset != subset or v not in cache:
            continue
        n = len(cache.frames(v))
        for s in info.segments:
            first = min(n - 1, max(0, int(round(s.start * cache.fps))))
            last = min(n, max(first + 1, int(round(s.end * cache.fps))))
            out.append(Clip(v, first, last, gt.labels.index(s.label)))
    return out


def snippet_spec(cfg: Config) -> SnippetSpec:
    d = cfg.data
    if d.mode not in ("window", "resize"):
        raise LofiError("data.mode must be 'window' or 'resize'")
    levels = cfg.model.levels
    spec = SnippetSpec(d.k, d.frame_stride, d.hop, d.window, d.mode)
    if cfg.model.head == "gtad":
        if spec.mode != "resize":
            raise LofiError("model.head=gtad needs data.mode=resize (snippets over whole videos)")
        if spec.window < 8:
            raise LofiError("data.window must be at least 8 snippets for model.head=gtad")
        return spec
    if spec.window % (2 ** (levels - 1) * 4):
        raise LofiError(
            f"data.window must be a multiple of {2 ** (levels - 1) * 4} (largest stride x r_t)"
        )
    return spec


def crop_boxes(
    n: int, h: int, w: int, scale: list[float] | None, rng: np.random.Generator
) -> torch.Tensor:
    """Random square-ish crops (scale of the side) for augmentation; the full frame without."""
    if not scale:
        return torch.tensor([[0.0, 0.0, w, h]] * n)
    s = rng.uniform(scale[0], scale[1], n)
    x0 = rng.uniform(0, 1, n) * (1 - s) * w
    y0 = rng.uniform(0, 1, n) * (1 - s) * h
    return torch.tensor(np.stack([x0, y0, x0 + s * w, y0 + s * h], 1), dtype=torch.float32)


def untrimmed(cfg: Config) -> tuple[GroundTruth, GroundTruth, FrameCache, list[str]]:
    """Training and validation subsets of the untrimmed set, its frame cache and labels."""
    d = cfg.data
    for key, value in (("annotations", d.annotations), ("cache", d.cache)):
        if not value:
            raise LofiError(f"config needs data.{key}")
    gt = load_ground_truth(d.annotations)
    cache = FrameCache(d.cache, d.workers)
    used = {v: i for v, i in gt.videos.items() if i.subset in ("training", "validation")}
    gt = cached_only(GroundTruth(used, gt.labels), cache)
    return gt.subset("training"), gt.subset("validation"), cache, gt.labels


def cached_only(gt: GroundTruth, cache: FrameCache) -> GroundTruth:
    """The videos the cache holds. Copies of ActivityNet routinely lack some videos (prepare
    listed them as skipped): they are left out of training and validation with one warning
    line giving the count per subset, rather than failing the run."""
    missing = [v for v in gt.videos if v not in cache]
    if not missing:
        return gt
    per = {}
    for v in missing:
        per[gt.videos[v].subset] = per.get(gt.videos[v].subset, 0) + 1
    counts = ", ".join(f"{n} {subset}" for subset, n in sorted(per.items()))
    print(
        f"warning: {len(missing)} of {len(gt.videos)} annotated videos are not in the frame "
        f"cache {cache.folder} and are left out ({counts}; e.g. '{missing[0]}')",
        file=sys.stderr,
    )
    kept = {v: info for v, info in gt.videos.items() if v in cache}
    return GroundTruth(kept, gt.labels)


def window_targets(windows: list[Window], strides: list[int], num_classes: int) -> list:
    from lofi.trainer.losses import assign

    return [
        assign(w.segments, strides, [w.length // s for s in strides], num_classes) for w in windows
    ]
