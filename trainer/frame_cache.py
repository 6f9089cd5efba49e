"""The training frame cache: every annotated video decoded once at a fixed fps and size, stored
compactly (trainer/frame_store.py), listed in `index.json`, read back by the data loader.

`prepare_cache` decodes with worker processes, writes the index as it goes (a second run resumes)
and leaves out missing or unreadable videos with their reason instead of aborting.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lofi.runtime.annotations import GroundTruth, load_ground_truth
from lofi.runtime.decode import read_video
from lofi.runtime.errors import LofiError
from lofi.trainer.frame_store import FORMATS, SUFFIX, JpegFrames, open_frames, write_frames
from lofi.trainer.frame_workers import DecodePool, worker_pool

VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
INDEX_EVERY = 1.0  # seconds between index rewrites (each is O(videos); always on exit)
OPEN_VIDEOS = 128  # stored videos kept open (memory maps hold a file descriptor each)
PROCESS_MIN_FRAMES = 512  # JPEG frames in one read worth starting decoding processes for


def find_video(root: Path, vid: str, extra: dict) -> Path:
    """The entry's `path`, else ROOT/VIDEO_ID.<ext>, else ROOT/v_VIDEO_ID.<ext> (how copies of
    ActivityNet name the files of its YouTube ids)."""
    if "path" in extra:
        p = Path(extra["path"])
        return p if p.is_absolute() else root / p
    for name in (vid, f"v_{vid}"):
        for ext in VIDEO_EXTS:
            if (root / f"{name}{ext}").is_file():
                return root / f"{name}{ext}"
    raise LofiError(f"video for '{vid}' not found under {root}")


@dataclass
class CacheReport:
    """What one `prepare_cache` run did: videos decoded now, found already done (resumed), and
    skipped with the reason (missing, unreadable, cut short)."""

    folder: Path
    decoded: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    frames: int = 0  # frames in the whole cache
    bytes: int = 0  # bytes of the whole cache's frame files


def _write_index(out: Path, index: dict) -> None:
    """Replace index.json in one step: an interrupted write never leaves a damaged index."""
    tmp = out / "index.json.tmp"
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, out / "index.json")


def _read_index(path: Path) -> dict:
    try:
        index = json.loads(path.read_text())
        for key, kind in (("fps", (int, float)), ("height", int), ("width", int)):
            if not isinstance(index[key], kind) or isinstance(index[key], bool):
                raise ValueError(f"'{key}' is {index[key]!r}")
        if not isinstance(index["videos"], dict):
            raise ValueError("'videos' is not an object")
        index.setdefault("format", "npy")  # caches written before the format was recorded
        if index["format"] not in FORMATS:
            raise ValueError(f"'format' is {index['format']!r}")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise LofiError(
            f"frame cache index {path} is damaged ({exc}): run lofi-data prepare again"
        ) from None
    return index


def _open_index(out: Path, fps: float, size: tuple[int, int], fmt: str, quality: int) -> dict:
    """The index a previous run left (to resume), or a new one. A cache decoded at another fps,
    size or format is refused rather than mixed."""
    fresh = {
        "fps": fps,
        "height": size[0],
        "width": size[1],
        "format": fmt,
        "quality": quality,
        "videos": {},
        "skipped": {},
    }
    path = out / "index.json"
    if not path.is_file():
        return fresh
    index = _read_index(path)
    old = (float(index["fps"]), int(index["height"]), int(index["width"]), index["format"])
    if old != (float(fps), size[0], size[1], fmt):
        raise LofiError(
            f"frame cache {out} was decoded at {old[0]:g} fps, {old[1]}x{old[2]}, {old[3]}; "
            f"asked for {fps:g} fps, {size[0]}x{size[1]}, {fmt}: use another folder"
        )
    index.setdefault("skipped", {})
    return index


@dataclass(frozen=True)
class _Job:
    vid: str
    root: Path
    extra: dict
    dest: Path
    fps: float
    size: tuple[int, int]
    fmt: str
    quality: int


def _decode(job: _Job) -> tuple[str, int, str]:
    """Decode and store one video (in a worker process): (video, frames, "") or the reason it
    was left out (frames 0). Only counts travel back, never frames."""
    try:
        frames = read_video(find_video(job.root, job.vid, job.extra), job.fps, job.size)
        write_frames(job.dest, frames, job.fmt, job.quality)
    except (LofiError, OSError, ValueError) as exc:
        return job.vid, 0, " ".join(str(exc).split())
    return job.vid, len(frames), ""


def _results(jobs: list[_Job], workers: int) -> Iterator[tuple[str, int, str]]:
    """Each job's result in job order; `workers` > 1 decodes that many videos at once."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_decode, jobs)
        return
    with worker_pool(workers) as pool:
        try:
            yield from pool.map(_decode, jobs)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def prepare_cache(
    annotations: Path,
    video_root: Path,
    out: Path,
    fps: float,
    size: tuple[int, int],
    progress: Callable[[int, int], None] | None = None,
    skip_bad: bool = False,
    on_skip: Callable[[str, str], None] | None = None,
    fmt: str = "npy",
    quality: int = 90,
    workers: int = 1,
    subsets: tuple[str, ...] = (),
) -> CacheReport:
    """Decode every annotated video once into `out` (format `fmt`, see frame_store.py; `npy`
    here keeps library callers such as the demo bit-exact, `lofi-data prepare` defaults to
    the compact `jpeg`).

    Resumable: each video's file is written whole and renamed, and the index is rewritten as
    videos finish (at least every INDEX_EVERY seconds, and on any exit), so a second run skips
    what a first one finished. A missing, unreadable or partly decodable video raises, or with
    `skip_bad` is left out, listed in the index's `skipped` and passed to `on_skip`. `subsets`
    (e.g. training, validation) limits the work to those: ActivityNet's unannotated `testing`
    quarter need not be decoded."""
    if fmt not in FORMATS:
        raise LofiError(f"frame cache format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if not 1 <= quality <= 100:
        raise LofiError(f"JPEG quality must be 1..100, not {quality}")
    gt = load_ground_truth(annotations)
    if subsets:
        known = {info.subset for info in gt.videos.values()}
        unknown = sorted(set(subsets) - known)
        if unknown:
            raise LofiError(
                f"{annotations}: no subset {', '.join(unknown)} (it has {', '.join(sorted(known))})"
            )
        gt = GroundTruth({v: i for v, i in gt.videos.items() if i.subset in subsets}, gt.labels)
    out.mkdir(parents=True, exist_ok=True)
    index = _open_index(out, fps, size, fmt, quality)
    report = CacheReport(out)
    todo = []
    for vid, info in gt.videos.items():
        done = index["videos"].get(vid)
        if done and (out / done["file"]).is_file():
            report.resumed.append(vid)
        else:
            dest = out / f"{vid}{SUFFIX[fmt]}"
            todo.append(_Job(vid, video_root, info.extra, dest, fps, size, fmt, quality))
    written = time.monotonic()
    try:
        for i, (vid, n, reason) in enumerate(_results(todo, workers)):
            if reason:
                if not skip_bad:
                    raise LofiError(f"video '{vid}': {reason}")
                index["skipped"][vid] = reason
                report.skipped[vid] = reason
                if on_skip:
                    on_skip(vid, reason)
            else:
                name = f"{vid}{SUFFIX[fmt]}"
                size_b = (out / name).stat().st_size
                index["videos"][vid] = {"file": name, "frames": n, "bytes": size_b}
                index["skipped"].pop(vid, None)
                report.decoded.append(vid)
            if time.monotonic() - written >= INDEX_EVERY:
                _write_index(out, index)
                written = time.monotonic()
            if progress:
                progress(len(report.resumed) + i + 1, len(gt.videos))
    finally:
        _write_index(out, index)
    listed = [index["videos"][v] for v in gt.videos if v in index["videos"]]
    report.frames = sum(v["frames"] for v in listed)
    report.bytes = sum(v.get("bytes", 0) for v in listed)
    return report


class FrameCache:
    """A prepared cache: `frames(vid)` reads like a (T, H, W, 3) uint8 array; `read` fetches the
    frames a batch needs with `workers` processes (JPEG) or threads (arrays) at once."""

    def __init__(self, folder: Path, workers: int | None = None):
        path = Path(folder) / "index.json"
        if not path.is_file():
            raise LofiError(f"no frame cache at {folder} (run lofi-data prepare)")
        self.folder = Path(folder)
        self.index = _read_index(path)
        self.fps = float(self.index["fps"])
        self.size = (int(self.index["height"]), int(self.index["width"]))
        self.format = self.index["format"]
        self.workers = workers or min(8, os.cpu_count() or 1)
        self._open: OrderedDict[str, np.ndarray | JpegFrames] = OrderedDict()
        self._threads: ThreadPoolExecutor | None = None
        self._decoders: DecodePool | None = None

    def __contains__(self, vid: str) -> bool:
        return vid in self.index["videos"]

    def frames(self, vid: str) -> np.ndarray | JpegFrames:
        if vid in self._open:
            self._open.move_to_end(vid)
            return self._open[vid]
        if vid not in self:
            raise LofiError(f"video '{vid}' is not in the frame cache {self.folder}")
        file = self.folder / self.index["videos"][vid]["file"]
        try:
            frames = open_frames(file, self.format)
        except (OSError, ValueError) as exc:
            raise LofiError(
                f"frame cache {self.folder}: cannot read video '{vid}' ({exc}): "
                "run lofi-data prepare again"
            ) from None
        self._open[vid] = frames
        if len(self._open) > OPEN_VIDEOS:
            self._open.popitem(last=False)
        return frames

    def read(self, requests: list[tuple[str, np.ndarray]]) -> list[np.ndarray]:
        """The frames `idx` of each (video, idx) request. JPEG batches of PROCESS_MIN_FRAMES
        or more are decoded by `workers` processes, arrays are copied by `workers` threads (a
        copy leaves Python's lock); small batches stay in this process (no start-up cost)."""
        stores = [self.frames(vid) for vid, _ in requests]
        total = sum(len(idx) for _, idx in requests)
        if self.workers <= 1 or len(requests) <= 1:
            return [np.asarray(s[idx]) for s, (_, idx) in zip(stores, requests)]
        if self.format == "jpeg":
            if total < PROCESS_MIN_FRAMES:
                return [np.asarray(s[idx]) for s, (_, idx) in zip(stores, requests)]
            if self._decoders is None:
                self._decoders = DecodePool(self.workers)
            files = [self.folder / self.index["videos"][vid]["file"] for vid, _ in requests]
            jobs = [(f, idx) for f, (_, idx) in zip(files, requests)]
            return self._decoders.read(jobs, (*self.size, 3))
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="lofi-frames")
        jobs = [(s, idx) for s, (_, idx) in zip(stores, requests)]
        return list(self._threads.map(lambda j: np.asarray(j[0][j[1]]), jobs))
