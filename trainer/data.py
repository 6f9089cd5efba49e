"""Frame cache (decoded uint8 frames on disk) and the windows/clips the trainer samples."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from lofi.runtime.annotations import GroundTruth, load_ground_truth
from lofi.runtime.decode import read_video
from lofi.runtime.errors import LofiError
from lofi.runtime.snippets import SnippetGrid, resize_grid

VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov")


def find_video(root: Path, vid: str, extra: dict) -> Path:
    if "path" in extra:
        p = Path(extra["path"])
        return p if p.is_absolute() else root / p
    for ext in VIDEO_EXTS:
        if (root / f"{vid}{ext}").is_file():
            return root / f"{vid}{ext}"
    raise LofiError(f"video for '{vid}' not found under {root}")


@dataclass
class CacheReport:
    """What one `prepare_cache` run did: videos decoded now, found already done (resumed), and
    skipped with the reason (missing, unreadable, cut short)."""

    folder: Path
    decoded: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _write_index(out: Path, index: dict) -> None:
    """Replace index.json in one step: an interrupted write never leaves a damaged index."""
    tmp = out / "index.json.tmp"
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, out / "index.json")


def _open_index(out: Path, fps: float, size: tuple[int, int]) -> dict:
    """The index a previous run left (to resume), or a new one. A cache decoded at another fps
    or size is refused rather than mixed."""
    fresh = {"fps": fps, "height": size[0], "width": size[1], "videos": {}, "skipped": {}}
    path = out / "index.json"
    if not path.is_file():
        return fresh
    index = _read_index(path)
    old = (float(index["fps"]), int(index["height"]), int(index["width"]))
    if old != (float(fps), size[0], size[1]):
        raise LofiError(
            f"frame cache {out} was decoded at {old[0]:g} fps, {old[1]}x{old[2]}; "
            f"asked for {fps:g} fps, {size[0]}x{size[1]}: use another folder"
        )
    index.setdefault("skipped", {})
    return index


def prepare_cache(
    annotations: Path,
    video_root: Path,
    out: Path,
    fps: float,
    size: tuple[int, int],
    progress: Callable[[int, int], None] | None = None,
    skip_bad: bool = False,
    on_skip: Callable[[str, str], None] | None = None,
) -> CacheReport:
    """Decode every annotated video once to uint8 .npy files (memory-mapped when training).

    Resumable: each video is written to a temporary file and renamed, and the index is
    rewritten after each one (and on any exit), so a second run skips what a first one
    finished. A missing, unreadable or partly decodable video raises, or with `skip_bad` is
    left out, listed in the index's `skipped` and passed to `on_skip(video, reason)`."""
    gt = load_ground_truth(annotations)
    out.mkdir(parents=True, exist_ok=True)
    index = _open_index(out, fps, size)
    report = CacheReport(out)
    try:
        for i, (vid, info) in enumerate(gt.videos.items()):
            done = index["videos"].get(vid)
            if done and (out / done["file"]).is_file():
                report.resumed.append(vid)
            else:
                try:
                    frames = read_video(find_video(video_root, vid, info.extra), fps, size)
                except (LofiError, OSError) as exc:
                    reason = " ".join(str(exc).split())
                    if not skip_bad:
                        raise LofiError(f"video '{vid}': {reason}") from None
                    index["skipped"][vid] = reason
                    report.skipped[vid] = reason
                    if on_skip:
                        on_skip(vid, reason)
                else:
                    with open(out / f"{vid}.npy.tmp", "wb") as f:
                        np.save(f, frames)
                    os.replace(out / f"{vid}.npy.tmp", out / f"{vid}.npy")
                    index["videos"][vid] = {"file": f"{vid}.npy", "frames": len(frames)}
                    index["skipped"].pop(vid, None)
                    report.decoded.append(vid)
                _write_index(out, index)
            if progress:
                progress(i + 1, len(gt.videos))
    finally:
        _write_index(out, index)
    return report


def _read_index(path: Path) -> dict:
    try:
        index = json.loads(path.read_text())
        for key, kind in (("fps", (int, float)), ("height", int), ("width", int)):
            if not isinstance(index[key], kind) or isinstance(index[key], bool):
                raise ValueError(f"'{key}' is {index[key]!r}")
        if not isinstance(index["videos"], dict):
            raise ValueError("'videos' is not an object")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise LofiError(
            f"frame cache index {path} is damaged ({exc}): run lofi-data prepare again"
        ) from None
    return index


class FrameCache:
    def __init__(self, folder: Path):
        path = Path(folder) / "index.json"
        if not path.is_file():
            raise LofiError(f"no frame cache at {folder} (run lofi-data prepare)")
        self.folder = Path(folder)
        self.index = _read_index(path)
        self.fps = float(self.index["fps"])
        self.size = (int(self.index["height"]), int(self.index["width"]))
        self._arrays: dict[str, np.ndarray] = {}

    def __contains__(self, vid: str) -> bool:
        return vid in self.index["videos"]

    def frames(self, vid: str) -> np.ndarray:
        if vid not in self._arrays:
            if vid not in self:
                raise LofiError(f"video '{vid}' is not in the frame cache {self.folder}")
            self._arrays[vid] = np.load(
                self.folder / self.index["videos"][vid]["file"], mmap_mode="r"
            )
        return self._arrays[vid]


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
    chunks, index, base = [], [], 0
    for w in windows:
        idx = w.frame_index()
        uniq, inv = np.unique(idx, return_inverse=True)
        chunks.append(np.asarray(cache.frames(w.video)[uniq]))
        index.append(torch.from_numpy(inv.reshape(idx.shape) + base))
        base += len(uniq)
    return torch.from_numpy(np.concatenate(chunks)), torch.stack(index)


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
    chunks, index, base = [], [], 0
    for clip, start in zip(clips, starts):
        frames = cache.frames(clip.video)
        idx = np.minimum(start + np.arange(k) * frame_stride, len(frames) - 1)
        chunks.append(np.asarray(frames[idx]))
        index.append(torch.arange(k)[None] + base)
        base += k
    return torch.from_numpy(np.concatenate(chunks)), torch.stack(index)


def trimmed_clips(gt: GroundTruth, cache: FrameCache, subset: str) -> list[Clip]:
    """Each video of a trimmed-clip set as one clip, labelled by its (first) segment."""
    return [
        Clip(v, 0, len(cache.frames(v)), gt.labels.index(i.segments[0].label))
        for v, i in gt.videos.items()
        if i.subset == subset and i.segments
    ]


def segment_clips(gt: GroundTruth, cache: FrameCache, subset: str) -> list[Clip]:
    """Every action instance of an untrimmed set as a clip of its own frames (ACP+)."""
    out = []
    for v, info in gt.videos.items():
        if info.subset != subset:
            continue
        n = len(cache.frames(v))
        for s in info.segments:
            first = min(n - 1, max(0, int(round(s.start * cache.fps))))
            last = min(n, max(first + 1, int(round(s.end * cache.fps))))
            out.append(Clip(v, first, last, gt.labels.index(s.label)))
    return out


def snippet_spec(cfg: dict) -> SnippetSpec:
    d = cfg["data"]
    if d["mode"] not in ("window", "resize"):
        raise LofiError("data.mode must be 'window' or 'resize'")
    levels = cfg["model"]["levels"]
    spec = SnippetSpec(d["k"], d["frame_stride"], d["hop"], d["window"], d["mode"])
    if cfg["model"]["head"] == "gtad":
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


def untrimmed(cfg: dict) -> tuple[GroundTruth, GroundTruth, FrameCache, list[str]]:
    """Training and validation subsets of the untrimmed set, its frame cache and labels."""
    for key in ("annotations", "cache"):
        if not cfg["data"].get(key):
            raise LofiError(f"config needs data.{key}")
    gt = load_ground_truth(cfg["data"]["annotations"])
    cache = FrameCache(cfg["data"]["cache"])
    return gt.subset("training"), gt.subset("validation"), cache, gt.labels


def window_targets(windows: list[Window], strides: list[int], num_classes: int) -> list:
    from lofi.trainer.losses import assign

    return [
        assign(w.segments, strides, [w.length // s for s in strides], num_classes) for w in windows
    ]
