"""THUMOS14's official temporal annotations -> the project's ActivityNet-format JSON.

The official release has one text file per class and split, `<Class>_val.txt` and
`<Class>_test.txt`, with lines `video_id start_s end_s`, plus `Ambiguous_val.txt` /
`Ambiguous_test.txt` for spans whose label is unclear. By the field's convention the validation
videos train and the test videos validate. Ambiguous spans are kept per video under
`"ambiguous"` so evaluation can ignore detections there (runtime/evaluation.py), as the official
evaluation does. Durations (and frame rates) come from the video files themselves.

A video id becomes a key of the output and the name looked up in the `--videos` folders, so it
must be one safe file name, short enough to name the frame cache's files later
(frame_cache.cache_name): an id such as `../x` or `/abs` is one line naming the file and line,
and the lookup never leaves those folders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
from lofi.runtime.bounds import WEEK
from lofi.runtime.errors import LofiError, shown
from lofi.trainer.frame_cache import VIDEO_EXTS, cache_name

SUBSETS = {"val": "training", "test": "validation"}
MAX_SECONDS = WEEK  # a time on a video's timeline: at most a week
AMBIGUOUS = "Ambiguous"
CLASSES = [
    "BaseballPitch",
    "BasketballDunk",
    "Billiards",
    "CleanAndJerk",
    "CliffDiving",
    "CricketBowling",
    "CricketShot",
    "Diving",
    "FrisbeeCatch",
    "GolfSwing",
    "HammerThrow",
    "HighJump",
    "JavelinThrow",
    "LongJump",
    "PoleVault",
    "Shotput",
    "SoccerPenalty",
    "TennisSwing",
    "ThrowDiscus",
    "VolleyballSpiking",
]


@dataclass
class Conversion:
    """The converted database and what was left out or changed, for the summary lines."""

    database: dict = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # videos with no readable file
    dropped: list[str] = field(default_factory=list)  # 'file:line' of empty segments
    clipped: int = 0  # segments cut at the video's end
    unknown: list[str] = field(default_factory=list)  # classes not among THUMOS14's 20


def read_annotation_file(path: Path) -> list[tuple[str, float, float]]:
    """The (video, start, end) lines of one official file; blank lines are allowed."""
    rows = []
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LofiError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path}:{n}"
        if len(parts) != 3:
            raise LofiError(f"{where}: expected 'video start end', got {shown(line.strip())}")
        cache_name(parts[0], "jpeg", where)  # the id names the video and, later, cache files
        try:
            start, end = float(parts[1]), float(parts[2])
        except ValueError:
            raise LofiError(
                f"{where}: start and end must be seconds, got {shown(line.strip())}"
            ) from None
        if not (0 <= start <= MAX_SECONDS and 0 <= end <= MAX_SECONDS):
            raise LofiError(
                f"{where}: start and end must be seconds in 0..{MAX_SECONDS:g}, "
                f"got {shown(line.strip())}"
            )
        rows.append((parts[0], start, end))
    return rows


def annotation_files(folder: Path) -> dict[tuple[str, str], Path]:
    """{(class, 'val' | 'test'): file} found anywhere under `folder` (the official archives
    nest them differently)."""
    if not folder.is_dir():
        raise LofiError(f"THUMOS14 annotation folder not found: {folder}")
    found: dict[tuple[str, str], Path] = {}
    for path in sorted(folder.rglob("*.txt")):
        name, _, split = path.stem.rpartition("_")
        if split not in SUBSETS or not name:
            continue
        if (name, split) in found:
            raise LofiError(f"{path}: a second file for class {name} ({split})")
        found[(name, split)] = path
    if not any(cls != AMBIGUOUS for cls, _ in found):
        raise LofiError(
            f"{folder}: no THUMOS14 annotation files (<Class>_val.txt, <Class>_test.txt)"
        )
    return found


def find_file(roots: list[Path], vid: str) -> Path | None:
    """ROOT/VIDEO_ID.<ext> in the first root that has it; `vid` is one file name (checked by
    read_annotation_file), so only entries of the roots are looked at."""
    for root in roots:
        for ext in VIDEO_EXTS:
            if (root / f"{vid}{ext}").is_file():
                return root / f"{vid}{ext}"
    return None


def probe(path: Path) -> tuple[float, float]:
    """(duration s, frame rate) from the container, or from its packets' timestamps when the
    header does not say; decoding is not needed."""
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise LofiError(f"{path}: no video stream")
            s = c.streams.video[0]
            rate = float(s.average_rate or 0)
            if s.duration and s.time_base:
                return float(s.duration * s.time_base), rate
            if c.duration:
                return c.duration / 1_000_000, rate
            end = 0.0
            for pkt in c.demux(s):
                if pkt.pts is not None and pkt.time_base:
                    end = max(end, float((pkt.pts + (pkt.duration or 0)) * pkt.time_base))
            return end, rate
    except (av.FFmpegError, OSError) as exc:
        raise LofiError(f"cannot read video {path}: {exc}") from None


def convert_thumos(
    folder: Path,
    video_roots: list[Path],
    on_missing: Callable[[str, str], None] | None = None,
) -> Conversion:
    """Every video named in a class file becomes one entry: subset from its split, segments of
    the listed classes, ambiguous spans aside, duration and fps from its file. A video whose
    file is missing or unreadable is left out (listed in `missing`, passed to `on_missing`)."""
    files = annotation_files(folder)
    classes = sorted({c for c, _ in files if c != AMBIGUOUS})
    out = Conversion(unknown=[c for c in classes if c not in CLASSES])
    for cls in classes:
        for split in SUBSETS:
            if (cls, split) not in files:
                raise LofiError(f"{folder}: class {cls} has no {cls}_{split}.txt")
    segments: dict[str, list] = {}
    subset: dict[str, str] = {}
    ambiguous: dict[str, list] = {}
    for (cls, split), path in sorted(files.items()):
        for n, (vid, start, end) in enumerate(read_annotation_file(path), 1):
            if cls != AMBIGUOUS and subset.setdefault(vid, SUBSETS[split]) != SUBSETS[split]:
                raise LofiError(
                    f"{path}:{n}: video {shown(vid)} is listed in both val and test files"
                )
            if end <= start:
                out.dropped.append(f"{path.name}:{n}")
                continue
            if cls == AMBIGUOUS:
                ambiguous.setdefault(vid, []).append((start, end))
            else:
                segments.setdefault(vid, []).append((start, end, cls))
    for vid in sorted(segments):
        file = find_file(video_roots, vid)
        try:
            if file is None:
                raise LofiError(
                    f"no video file {shown(vid)}.* under {', '.join(map(str, video_roots))}"
                )
            duration, fps = probe(file)
            if not duration > 0:
                raise LofiError(f"{file}: no duration")
        except LofiError as exc:
            out.missing.append(vid)
            if on_missing:
                on_missing(vid, str(exc))
            continue
        anns = []
        for start, end, cls in sorted(segments[vid]):
            if end > duration:
                out.clipped += 1
                end = duration
            if end > start:
                anns.append({"segment": [round(start, 3), round(end, 3)], "label": cls})
        entry = {
            "subset": subset[vid],
            "duration": round(duration, 3),
            "fps": round(fps, 3),
            "path": str(file.resolve()),
            "annotations": anns,
        }
        if ambiguous.get(vid):
            entry["ambiguous"] = [[round(s, 3), round(e, 3)] for s, e in sorted(ambiguous[vid])]
        out.database[vid] = entry
    return out
