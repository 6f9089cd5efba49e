"""The training frame cache: every annotated video decoded once at a fixed fps and size, stored
compactly (trainer/frame_store.py), listed in `index.json`, read back by the data loader.

`prepare_cache` decodes with worker processes, writes the index as it goes (a second run resumes)
and leaves out missing or unreadable videos with their reason instead of aborting.

Video ids come from the user's annotation file and name the cache's files, so each must be one
safe file name (lofi.runtime.paths.file_name): nothing is ever written or read outside the cache
folder. A video's `path` in an annotation is a read the user asked for: an absolute path is taken
as given (convert-thumos writes those), a relative one must stay inside VIDEO_ROOT, and either
must be a regular file (a FIFO or device would block a worker forever). The index records each
file's size and SHA-256; a reader checks both before it loads a byte, and every number in the
index against its physical bounds.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lofi.runtime.annotations import GroundTruth, load_ground_truth
from lofi.runtime.bounds import FPS, FRAME_SIDE, QUALITY, Bound
from lofi.runtime.decode import read_video
from lofi.runtime.documents import read_json
from lofi.runtime.errors import LofiError, shown
from lofi.runtime.paths import MAX_NAME_BYTES, file_name, inside
from lofi.trainer.frame_store import (
    FORMATS,
    SUFFIX,
    TMP,
    JpegFrames,
    create,
    open_frames,
    sha256,
    write_frames,
)
from lofi.trainer.frame_workers import DecodePool, worker_pool

VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
INDEX_EVERY = 1.0  # seconds between index rewrites (each is O(videos); always on exit)
OPEN_VIDEOS = 128  # stored videos kept open (memory maps hold a file descriptor each)
PROCESS_MIN_FRAMES = 512  # JPEG frames in one read worth starting decoding processes for
# bounds of the numbers a cache's index records beside runtime/bounds.py's fps and frame sides
FRAMES = Bound(1, 10**8, integer=True)  # frames of one video (115 days at 10 fps)
FILE_BYTES = Bound(1, 2**50, integer=True)
HEX64 = re.compile(r"[0-9a-f]{64}")


def cache_name(vid: object, fmt: str, where: str) -> str:
    """The cache file of video `vid`: the id must be one safe file name, short enough that the
    file's temporary name (`.tmp` added while writing) fits too, and valid Unicode."""
    name = file_name(vid, f"{where}: video id") + SUFFIX[fmt]
    try:
        size = len((name + TMP).encode("utf-8"))
    except UnicodeEncodeError:
        raise LofiError(
            f"{where}: video id {shown(vid)} cannot name a file: expected valid Unicode text"
        ) from None
    if size > MAX_NAME_BYTES:
        longest = MAX_NAME_BYTES - len(SUFFIX[fmt] + TMP)
        raise LofiError(
            f"{where}: video id {shown(vid)} is too long to name a cache file: expected at most "
            f"{longest} bytes"
        )
    return name


def check_geometry(fps: object, size: tuple[object, object], where: str) -> None:
    """A cache's fps and frame size within physical bounds (runtime/bounds.py)."""
    FPS.check(fps, f"{where} fps")
    for name, side in zip(("height", "width"), size):
        FRAME_SIDE.check(side, f"{where} {name}")


def find_video(root: Path, vid: str, extra: dict) -> Path:
    """The entry's `path`, else ROOT/VIDEO_ID.<ext>, else ROOT/v_VIDEO_ID.<ext> (how copies of
    ActivityNet name the files of its YouTube ids). `vid` is a checked file name (cache_name),
    so the lookup names entries of ROOT only; a relative `path` must stay inside ROOT."""
    if "path" in extra:
        given = extra["path"]
        where = f"video {shown(vid)}: 'path'"
        p = Path(given) if Path(given).is_absolute() else inside(root, given, where)
        if not p.is_file():
            raise LofiError(f"{where} {shown(given)} is not a video file")
        return p
    for name in (vid, f"v_{vid}"):
        for ext in VIDEO_EXTS:
            if (root / f"{name}{ext}").is_file():
                return root / f"{name}{ext}"
    raise LofiError(f"video for {shown(vid)} not found under {root}")


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
    tmp = out / f"index.json{TMP}"
    with create(tmp) as f:
        f.write(json.dumps(index, indent=1).encode())
    os.replace(tmp, out / "index.json")


def _read_index(path: Path) -> dict:
    """index.json through the one JSON reader, its header (fps, size, format) within bounds;
    each video's entry is checked by `_entry_problem`."""
    index = read_json(path, "frame cache index")
    try:
        if not isinstance(index, dict):
            raise LofiError("expected an object")
        for key in ("fps", "height", "width", "videos"):
            if key not in index:
                raise LofiError(f"no '{key}'")
        check_geometry(index["fps"], (index["height"], index["width"]), "index")
        index.setdefault("format", "npy")  # caches written before the format was recorded
        if index["format"] not in FORMATS:
            raise LofiError(f"'format' is {shown(index['format'])}, expected one of {FORMATS}")
        if "quality" in index:
            QUALITY.check(index["quality"], "index quality")
        index.setdefault("skipped", {})
        for key in ("videos", "skipped"):
            if not isinstance(index[key], dict):
                raise LofiError(f"'{key}' is not an object")
    except LofiError as exc:
        raise LofiError(
            f"frame cache index {path} is damaged ({exc}): prepare the cache in a new folder"
        ) from None
    return index


def _entry_problem(vid: str, entry: object, fmt: str) -> str | None:
    """Why one video's index entry cannot be trusted, or None: its file must be the id's own
    cache file name, its frame count and size within bounds, its SHA-256 recorded."""
    if not isinstance(entry, dict):
        return "not an object"
    try:
        name = cache_name(vid, fmt, "index")
    except LofiError as exc:
        return str(exc)
    if entry.get("file") != name:
        return f"'file' is {shown(entry.get('file'))}, expected {shown(name)}"
    for key, bound in (("frames", FRAMES), ("bytes", FILE_BYTES)):
        if not bound.holds(entry.get(key)):
            return f"'{key}' is {shown(entry.get(key))}, expected {bound.expected()}"
    if "sha256" not in entry:
        return "no SHA-256 (written before the cache recorded them)"
    if not isinstance(entry["sha256"], str) or not HEX64.fullmatch(entry["sha256"]):
        return f"'sha256' is {shown(entry['sha256'])}, expected 64 hex digits"
    return None


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
    if not path.exists():
        return fresh
    index = _read_index(path)
    old = (float(index["fps"]), int(index["height"]), int(index["width"]), index["format"])
    if old != (float(fps), size[0], size[1], fmt):
        raise LofiError(
            f"frame cache {out} was decoded at {old[0]:g} fps, {old[1]}x{old[2]}, {old[3]}; "
            f"asked for {fps:g} fps, {size[0]}x{size[1]}, {fmt}: use another folder"
        )
    # an entry that cannot be trusted is dropped: its video is decoded again
    videos = index["videos"]
    index["videos"] = {v: e for v, e in videos.items() if _entry_problem(v, e, fmt) is None}
    return index


def _stored(path: Path, entry: dict) -> bool:
    """Whether a finished run's file is still there: a regular file (not a symlink) of the
    recorded size. Its bytes are hashed when read (FrameCache), not here: that reads them all."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == entry["bytes"]


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


@dataclass(frozen=True)
class _Done:
    vid: str
    reason: str = ""  # why it was left out, "" when stored
    entry: dict = field(default_factory=dict)  # its index entry when stored


def _decode(job: _Job) -> _Done:
    """Decode and store one video (in a worker process): its index entry or the reason it was
    left out. Only counts and the hash travel back, never frames."""
    try:
        frames = read_video(find_video(job.root, job.vid, job.extra), job.fps, job.size)
        if not len(frames):
            raise LofiError("no frames decoded")
        digest = write_frames(job.dest, frames, job.fmt, job.quality)
        size = job.dest.stat().st_size
    except (LofiError, OSError, ValueError) as exc:
        return _Done(job.vid, " ".join(str(exc).split()))
    entry = {"file": job.dest.name, "frames": len(frames), "bytes": size, "sha256": digest}
    return _Done(job.vid, entry=entry)


def _results(jobs: list[_Job], workers: int) -> Iterator[_Done]:
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
    QUALITY.check(quality, "JPEG quality")
    check_geometry(fps, size, "frame cache")
    gt = load_ground_truth(annotations)
    if subsets:
        known = {info.subset for info in gt.videos.values()}
        unknown = sorted(set(subsets) - known)
        if unknown:
            raise LofiError(
                f"{annotations}: no subset {', '.join(unknown)} (it has {', '.join(sorted(known))})"
            )
        gt = GroundTruth({v: i for v, i in gt.videos.items() if i.subset in subsets}, gt.labels)
    names, refused = {}, {}
    for vid in gt.videos:  # every id is checked before any work
        try:
            names[vid] = cache_name(vid, fmt, str(annotations))
        except LofiError as exc:
            if not skip_bad:
                raise
            refused[vid] = str(exc)
    out.mkdir(parents=True, exist_ok=True)
    index = _open_index(out, fps, size, fmt, quality)
    report = CacheReport(out)
    todo = []
    for vid, name in names.items():
        done = index["videos"].get(vid)
        if done and _stored(out / name, done):
            report.resumed.append(vid)
        else:
            index["videos"].pop(vid, None)
            extra = gt.videos[vid].extra
            todo.append(_Job(vid, video_root, extra, out / name, fps, size, fmt, quality))
    written = time.monotonic()
    try:
        for vid, reason in refused.items():
            _skip(index, report, vid, reason, on_skip)
        for i, done in enumerate(_results(todo, workers)):
            if done.reason:
                if not skip_bad:
                    raise LofiError(f"video {shown(done.vid)}: {done.reason}")
                _skip(index, report, done.vid, done.reason, on_skip)
            else:
                index["videos"][done.vid] = done.entry
                index["skipped"].pop(done.vid, None)
                report.decoded.append(done.vid)
            if time.monotonic() - written >= INDEX_EVERY:
                _write_index(out, index)
                written = time.monotonic()
            if progress:
                progress(len(report.resumed) + len(refused) + i + 1, len(gt.videos))
    finally:
        _write_index(out, index)
    listed = [index["videos"][v] for v in gt.videos if v in index["videos"]]
    report.frames = sum(v["frames"] for v in listed)
    report.bytes = sum(v["bytes"] for v in listed)
    return report


def _skip(
    index: dict,
    report: CacheReport,
    vid: str,
    reason: str,
    on_skip: Callable[[str, str], None] | None,
) -> None:
    index["skipped"][vid] = reason
    report.skipped[vid] = reason
    if on_skip:
        on_skip(vid, reason)


class FrameCache:
    """A prepared cache: `frames(vid)` reads like a (T, H, W, 3) uint8 array; `read` fetches the
    frames a batch needs with `workers` processes (JPEG) or threads (arrays) at once."""

    def __init__(self, folder: Path, workers: int | None = None):
        path = Path(folder) / "index.json"
        if not path.exists():
            raise LofiError(f"no frame cache at {folder} (run lofi-data prepare)")
        self.folder = Path(folder)
        self.index = _read_index(path)
        self.fps = float(self.index["fps"])
        self.size = (int(self.index["height"]), int(self.index["width"]))
        self.format = self.index["format"]
        for vid, entry in self.index["videos"].items():
            why = _entry_problem(vid, entry, self.format)
            if why:
                raise LofiError(
                    f"frame cache index {path} is damaged (video {shown(vid)}: {why}): "
                    "run lofi-data prepare again (it decodes that video again)"
                )
        self.workers = workers or min(8, os.cpu_count() or 1)
        self._open: OrderedDict[str, np.ndarray | JpegFrames] = OrderedDict()
        self._verified: set[str] = set()  # videos whose file's SHA-256 matched in this process
        self._threads: ThreadPoolExecutor | None = None
        self._decoders: DecodePool | None = None

    def __contains__(self, vid: str) -> bool:
        return vid in self.index["videos"]

    def frames(self, vid: str) -> np.ndarray | JpegFrames:
        if vid in self._open:
            self._open.move_to_end(vid)
            return self._open[vid]
        if vid not in self:
            raise LofiError(f"video {shown(vid)} is not in the frame cache {self.folder}")
        entry = self.index["videos"][vid]
        file = inside(self.folder, entry["file"], f"frame cache {self.folder}: file")
        try:
            frames = self._load(file, entry, vid)
        except (OSError, ValueError) as exc:
            raise LofiError(
                f"frame cache {self.folder}: cannot read video {shown(vid)} ({exc}): "
                f"delete {file.name} and run lofi-data prepare again"
            ) from None
        self._open[vid] = frames
        if len(self._open) > OPEN_VIDEOS:
            self._open.popitem(last=False)
        return frames

    def _load(self, file: Path, entry: dict, vid: str) -> np.ndarray | JpegFrames:
        """One video's frames, once its file is the recorded size and (first time in this
        process) the recorded SHA-256: no byte is loaded that the index does not vouch for."""
        st = file.stat()
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry["bytes"]:
            raise ValueError(f"{st.st_size} bytes, the index says {entry['bytes']}")
        if vid not in self._verified:
            if sha256(file) != entry["sha256"]:
                raise ValueError("its SHA-256 differs from the index: the file changed")
            self._verified.add(vid)
        frames = open_frames(file, self.format, self.size)
        if len(frames) != entry["frames"]:
            raise ValueError(f"{len(frames)} frames, the index says {entry['frames']}")
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
