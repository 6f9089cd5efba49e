"""ActivityNet-format annotations, results files and event lines: the one reader/writer of each."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lofi.runtime.bounds import DURATION, SCORE, TIMESTAMP, Bound
from lofi.runtime.documents import read_json
from lofi.runtime.errors import LofiError, shown

RESULTS_VERSION = "VERSION 1.3"


@dataclass(frozen=True)
class Segment:
    """One labelled temporal segment in seconds; `score` is 1.0 for ground truth."""

    video: str
    label: str
    start: float
    end: float
    score: float = 1.0


@dataclass
class VideoInfo:
    """One annotated video. `ambiguous` holds spans whose label is unclear (THUMOS14's
    `Ambiguous` files): evaluation ignores detections there instead of counting them wrong."""

    subset: str
    duration: float
    segments: list[Segment] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    ambiguous: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class GroundTruth:
    """Parsed annotation file: videos by id and the file's label list in first-seen order (a
    subset keeps the whole list: a class may have no instance in one subset)."""

    videos: dict[str, VideoInfo]
    labels: list[str]

    def subset(self, name: str | None) -> GroundTruth:
        if name is None:
            return self
        videos = {v: info for v, info in self.videos.items() if info.subset == name}
        if not videos:
            raise LofiError(f"no videos in subset '{name}'")
        return GroundTruth(videos, self.labels)

    def segments(self) -> list[Segment]:
        return [s for info in self.videos.values() for s in info.segments]


def _number(raw: Any, where: str, name: str, bound: Bound) -> float:
    """A finite number (JSON number or numeric string) inside its physical `bound`. NaN and
    infinities are refused: one of them silently changes every mAP it takes part in; so is a
    duration of 1e-300 s or a time of 1e300 s."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise LofiError(f"{where}: '{name}' must be a number, got {type(raw).__name__}")
    try:
        value = float(raw)
    except (ValueError, OverflowError):
        raise LofiError(f"{where}: '{name}' must be a number, got {shown(raw)}") from None
    if not math.isfinite(value):
        raise LofiError(f"{where}: '{name}' must be a finite number, got {shown(raw)}")
    if not bound.holds(value):
        raise LofiError(f"{where}: '{name}' must be {bound.expected()}, got {shown(raw)}")
    return value


def _label(raw: Any, where: str) -> str:
    """A class name; an integer (a class index) is taken as its digits, within sane length."""
    if isinstance(raw, int) and not isinstance(raw, bool) and raw.bit_length() <= 64:
        return str(raw)
    if not isinstance(raw, str):
        raise LofiError(f"{where}: 'label' must be a string, got {shown(raw)}")
    return raw


def _segment(raw: Any, where: str, empty_ok: bool = False) -> tuple[float, float]:
    """[start, end] with end > start; `empty_ok` (predictions) also takes end == start, which the
    official evaluation counts as a false positive (ground truth must have a length)."""
    if not isinstance(raw, (list, tuple)) or len(raw) != 2:
        raise LofiError(f"{where}: 'segment' must be [start, end]")
    start = _number(raw[0], where, "segment start", TIMESTAMP)
    end = _number(raw[1], where, "segment end", TIMESTAMP)
    if end < start or (end == start and not empty_ok):
        raise LofiError(f"{where}: segment end {end} <= start {start}")
    return start, end


def parse_ground_truth(data: Any, source: str = "annotations") -> GroundTruth:
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise LofiError(f"{source}: missing top-level 'database' object")
    videos: dict[str, VideoInfo] = {}
    labels: list[str] = []
    for vid, entry in data["database"].items():
        where = f"{source}: video {shown(vid)}"
        if not isinstance(entry, dict):
            raise LofiError(f"{where} is not an object")
        for key in ("subset", "duration", "annotations"):
            if key not in entry:
                raise LofiError(f"{where} has no '{key}'")
        duration = _number(entry["duration"], where, "duration", DURATION)
        if not isinstance(entry["annotations"], list):
            raise LofiError(f"{where}: 'annotations' must be a list")
        segments = []
        for i, ann in enumerate(entry["annotations"]):
            here = f"{where} annotation {i}"
            if not isinstance(ann, dict) or "segment" not in ann or "label" not in ann:
                raise LofiError(f"{here} needs 'segment' and 'label'")
            start, end = _segment(ann["segment"], here)
            label = _label(ann["label"], here)
            if label not in labels:
                labels.append(label)
            segments.append(Segment(vid, label, start, end))
        if not isinstance(entry["subset"], str):
            raise LofiError(f"{where}: 'subset' must be a string")
        if "path" in entry and not isinstance(entry["path"], str):
            raise LofiError(f"{where}: 'path' must be a string (the video file)")
        ambiguous = entry.get("ambiguous", [])
        if not isinstance(ambiguous, list):
            raise LofiError(f"{where}: 'ambiguous' must be a list of [start, end]")
        spans = [_segment(a, f"{where} ambiguous span {i}") for i, a in enumerate(ambiguous)]
        fixed = ("subset", "duration", "annotations", "ambiguous")
        extra = {k: v for k, v in entry.items() if k not in fixed}
        videos[vid] = VideoInfo(entry["subset"], duration, segments, extra, spans)
    return GroundTruth(videos, labels)


def load_ground_truth(path: str | Path) -> GroundTruth:
    return parse_ground_truth(read_json(path, "annotation file"), str(path))


def ground_truth_json(gt: GroundTruth) -> dict[str, Any]:
    database = {}
    for vid, info in gt.videos.items():
        database[vid] = {
            "subset": info.subset,
            "duration": round(info.duration, 6),
            "annotations": [
                {"segment": [round(s.start, 6), round(s.end, 6)], "label": s.label}
                for s in info.segments
            ],
            **info.extra,
        }
        if info.ambiguous:
            database[vid]["ambiguous"] = [[round(a, 6), round(b, 6)] for a, b in info.ambiguous]
    return {"version": RESULTS_VERSION, "database": database}


def parse_results(data: Any, source: str = "results") -> list[Segment]:
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise LofiError(f"{source}: missing top-level 'results' object")
    out = []
    for vid, preds in data["results"].items():
        if not isinstance(preds, list):
            raise LofiError(f"{source}: results for {shown(vid)} must be a list")
        for i, p in enumerate(preds):
            here = f"{source}: video {shown(vid)} prediction {i}"
            if not isinstance(p, dict) or not {"label", "score", "segment"} <= p.keys():
                raise LofiError(f"{here} needs 'label', 'score' and 'segment'")
            start, end = _segment(p["segment"], here, empty_ok=True)
            score = _number(p["score"], here, "score", SCORE)
            out.append(Segment(vid, _label(p["label"], here), start, end, score))
    return out


def load_results(path: str | Path) -> list[Segment]:
    return parse_results(read_json(path, "results file"), str(path))


def results_json(segments: list[Segment], videos: list[str] | None = None) -> dict[str, Any]:
    """ActivityNet results dict; `videos` lists ids that must appear even with no detection."""
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in videos or []}
    for s in segments:
        results.setdefault(s.video, []).append(
            {
                "label": s.label,
                "score": round(s.score, 6),
                "segment": [round(s.start, 3), round(s.end, 3)],
            }
        )
    return {"version": RESULTS_VERSION, "results": results, "external_data": {}}


def event_line(segment: Segment, emitted_at: float) -> str:
    """One JSON line per finished action, in the DESIGN.md event schema."""
    return json.dumps(
        {
            "video": segment.video,
            "label": segment.label,
            "score": round(segment.score, 6),
            "start": round(segment.start, 3),
            "end": round(segment.end, 3),
            "emitted_at": round(emitted_at, 3),
        }
    )
