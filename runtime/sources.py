"""What a source is: naming it, telling live from file, expanding folders and lists, and
reopening a live source that drops."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from lofi.runtime.decode import READ_TIMEOUT, VideoReader, concealed_clause
from lofi.runtime.errors import LofiError
from lofi.runtime.timeline import Jump, Shown, jumps_clause

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".mpg", ".mpeg"}
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def video_id(source: str) -> str:
    """The id a source's events and results carry: a file's stem, a URL's last path part."""
    return Path(source).stem if "://" not in source else source.rstrip("/").rsplit("/", 1)[-1]


def is_live(source: str) -> bool:
    """A URL (rtsp://, http://, ...) or a camera: a source that need not end. Only local files
    (and file:// URLs) are known to be whole videos."""
    if re.fullmatch(r"camera:\d+", source) or source.startswith("/dev/video"):
        return True
    return bool(_URL.match(source)) and not source.lower().startswith("file://")


def expand_sources(items: list[str]) -> list[str]:
    """Each item as given, except a folder (its video files, sorted by name) and `@LIST` (one
    source per line of the file LIST; blank lines and `#` comments skipped; relative paths are
    relative to LIST's folder)."""
    out: list[str] = []
    for item in items:
        if item.startswith("@"):
            path = Path(item[1:])
            if not path.is_file():
                raise LofiError(f"source list not found: {path}")
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise LofiError(
                    f"source list {path} is not UTF-8 text (byte {exc.start})"
                ) from None
            for line in text.splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                local = not is_live(line) and not Path(line).is_absolute()
                out.append(str(path.parent / line) if local else line)
        elif Path(item).is_dir():
            videos = sorted(
                str(p) for p in Path(item).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES
            )
            if not videos:
                raise LofiError(
                    f"{item}: a folder source holds no video files ({', '.join(sorted(VIDEO_SUFFIXES))})"
                )
            out += videos
        else:
            out.append(item)
    if not out:
        raise LofiError("no sources: the lists given are empty")
    return out


class ReconnectingReader:
    """A live source's frames across drops: when a read fails or stalls after frames have come,
    the source is reopened after a backoff (0.5 s doubling up to `max_backoff`), up to
    `reconnect` tries per drop; each gap is recorded in `gaps` (where in the stream, how long in
    wall-clock seconds, why). Frames keep counting across a gap, so stream time is the time of
    frames received. A reopened source that sends again what it already sent (HLS reopens a few
    segments back, a server restarts its file) has those frames dropped (`timeline.Shown`): no
    frame is shown twice, the timeline never goes back; the gap says how many. A source that cannot be opened at first fails at once (no retry): an
    unreachable source is an error within the open timeout."""

    def __init__(
        self,
        source: str,
        fps: float,
        size: tuple[int, int] | None,
        timeout: float = READ_TIMEOUT,
        open_timeout: float | None = None,
        reconnect: int = 5,
        max_backoff: float = 8.0,
        cancel: threading.Event | None = None,
        decode: str = "cpu",
        threads: int = 0,
    ) -> None:
        self.decode, self.threads = decode, threads
        self.source, self.fps, self.size = source, fps, size
        self.timeout, self.open_timeout = timeout, open_timeout
        self.reconnect, self.max_backoff = reconnect, max_backoff
        self.cancel = cancel or threading.Event()
        self.frames_out = 0
        self.corrupt = 0
        self.concealed = 0
        self.first_jump: Jump | None = None  # of the discontinuities within connections
        self.jump_count = 0
        self.reconnects = 0
        self.gaps: list[dict] = []
        self.cut_short: str | None = None
        self.truncated: str | None = None
        self.announced = 0.0

    def __iter__(self) -> Iterator[np.ndarray]:
        tries, drop = 0, None  # drop: (wall time, stream seconds, reason) of the open gap
        shown = Shown()  # what the connections have shown, to tell a replay
        while True:
            reader = VideoReader(
                self.source,
                self.fps,
                self.size,
                self.timeout,
                self.open_timeout,
                self.decode,
                self.threads,
                shown=shown,
            )
            reason = None
            try:
                for frame in reader:
                    if drop is not None:
                        self._record_gap(drop, tries, reader.replayed)
                        tries, drop = 0, None
                    self.frames_out += 1
                    yield frame
                reason = reader.cut_short
            except LofiError as exc:
                if self.frames_out == 0:
                    raise
                reason = str(exc)
            finally:
                self.corrupt += reader.corrupt
                self.concealed += reader.concealed
                self.jump_count += len(reader.timeline.jumps)
                if self.first_jump is None and reader.timeline.jumps:
                    self.first_jump = reader.timeline.jumps[0]
            if reason is None:
                return  # the source ended cleanly
            if drop is None:
                drop = (time.monotonic(), self.frames_out / self.fps, reason)
            if tries >= self.reconnect:
                self.cut_short = reason
                if tries:
                    self.gaps.append({"at": round(drop[1], 3), "seconds": None, "reason": drop[2]})
                return
            if self.cancel.wait(min(0.5 * 2**tries, self.max_backoff)):
                self.cut_short = reason
                return
            tries += 1
            self.reconnects += 1

    @property
    def damage(self) -> list[str]:
        """What was wrong within the connections (as `VideoReader.damage`), one clause each."""
        out = []
        if self.concealed:
            out.append(concealed_clause(self.concealed))
        if self.first_jump is not None:
            out.append(jumps_clause(self.jump_count, self.first_jump, " of a connection"))
        return out

    def _record_gap(self, drop: tuple[float, float, str], tries: int, replayed: int) -> None:
        reason = drop[2]
        if replayed:
            reason += f"; {replayed} frame(s) it sent again dropped"
        self.gaps.append(
            {
                "at": round(drop[1], 3),
                "seconds": round(time.monotonic() - drop[0], 3),
                "reason": reason,
                "reopen_tries": tries,
                "replayed_frames": replayed,
            }
        )
