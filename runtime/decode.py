"""Video decoding with PyAV at a target frame rate, frames chosen by timestamp."""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from lofi.runtime.errors import LofiError

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
READ_TIMEOUT = 10.0  # seconds without data before a source counts as stalled


def _open(source: str, timeout: float = READ_TIMEOUT) -> av.container.InputContainer:
    """A file path, a URL FFmpeg can open, or a camera (/dev/videoN or camera:N)."""
    options: dict = {}
    fmt = None
    cam = re.fullmatch(r"camera:(\d+)", source)
    if cam:
        source, fmt = f"/dev/video{cam.group(1)}", "v4l2"
    elif source.startswith("/dev/video"):
        fmt = "v4l2"
    elif source.startswith("rtsp://"):
        options = {"rtsp_transport": "tcp"}
    if not _URL.match(source) and fmt is None:
        path = Path(source)
        if not path.exists():
            raise LofiError(f"video not found: {source}")
        if path.is_file() and path.stat().st_size == 0:
            raise LofiError(f"video file is empty: {source}")
    try:
        return av.open(source, format=fmt, options=options, timeout=timeout)
    except av.FFmpegError as exc:
        raise LofiError(f"cannot open video {source}: {exc}") from None


class VideoReader:
    """Iterates RGB uint8 frames (H, W, 3) sampled at `fps`: output frame n shows the source
    frame on screen at n/fps seconds, so variable-frame-rate input works.

    A source that stalls (no data for `timeout` seconds) or stops decoding part-way ends
    iteration with `cut_short` set to the reason, so callers can tell it from a normal end."""

    def __init__(
        self,
        source: str | Path,
        fps: float,
        size: tuple[int, int] | None = None,
        timeout: float = READ_TIMEOUT,
    ):
        self.source = str(source)
        self.fps = float(fps)
        self.size = size
        self.timeout = float(timeout)
        self.frames_out = 0
        self.ended = False
        self.cut_short: str | None = None

    @property
    def duration(self) -> float:
        """Seconds decoded so far (the whole video once iteration has finished)."""
        return self.frames_out / self.fps

    def _convert(self, frame: av.VideoFrame) -> np.ndarray:
        if self.size is None:
            return frame.to_ndarray(format="rgb24")
        h, w = self.size
        return frame.to_ndarray(width=w, height=h, format="rgb24")

    def __iter__(self) -> Iterator[np.ndarray]:
        container = _open(self.source, self.timeout)
        try:
            if not container.streams.video:
                raise LofiError(f"no video stream in {self.source}")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            origin = None
            if stream.start_time is not None and stream.time_base is not None:
                origin = float(stream.start_time * stream.time_base)
            step = Fraction(1) / Fraction(self.fps).limit_denominator(1_000_000)
            prev: np.ndarray | None = None
            prev_end = 0.0
            try:
                for frame in container.decode(stream):
                    if frame.time is None:
                        continue
                    if origin is None:
                        origin = frame.time
                    t = frame.time - origin
                    if prev is not None:
                        while float(self.frames_out * step) < t:
                            self.frames_out += 1
                            yield prev
                    prev = self._convert(frame)
                    dur = float(frame.duration * stream.time_base) if frame.duration else 0.0
                    if dur <= 0 and stream.average_rate:
                        dur = 1.0 / float(stream.average_rate)
                    prev_end = t + dur
            except av.ExitError:
                if prev is None:
                    raise LofiError(
                        f"{self.source}: no video data within {self.timeout:g} s"
                    ) from None
                self.cut_short = f"stalled: no data for {self.timeout:g} s"
            except av.FFmpegError as exc:
                if prev is None:
                    raise LofiError(f"cannot decode {self.source}: {exc}") from None
                self.cut_short = f"decoding failed: {exc}"
            if prev is None:
                raise LofiError(f"no decodable video frames in {self.source}")
            while float(self.frames_out * step) < prev_end - 1e-9 or self.frames_out == 0:
                self.frames_out += 1
                yield prev
        finally:
            container.close()
            self.ended = True


def read_video(source: str | Path, fps: float, size: tuple[int, int] | None = None) -> np.ndarray:
    """All frames of a video as (T, H, W, 3) uint8. A video that cannot be decoded to its end is
    an error here: a partial video passed off as whole would be silently wrong."""
    reader = VideoReader(source, fps, size)
    frames = np.stack(list(reader))
    if reader.cut_short:
        raise LofiError(f"{source}: {reader.cut_short} after {reader.duration:.1f} s")
    return frames


_DONE = object()
_producers: list[threading.Thread] = []


def blocked_readers() -> int:
    """Background readers still alive, e.g. inside FFmpeg's read of a stalled source after a
    stop. A process must not run interpreter shutdown under one (it can crash there)."""
    _producers[:] = [t for t in _producers if t.is_alive()]
    return len(_producers)


def prefetch(
    items: Iterable[np.ndarray], stop: Callable[[], bool], poll: float = 0.2, depth: int = 64
) -> Iterator[np.ndarray]:
    """`items` produced by a background thread, so the main thread stays responsive to signals
    while a live source blocks inside FFmpeg: iteration ends early once `stop()` turns true.
    An exception in the producer is raised here. At most `depth` items wait in memory."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    quit_ = threading.Event()

    def put(item: object) -> bool:
        """Hand one item over; False once the consumer has gone."""
        while not quit_.is_set():
            try:
                q.put(item, timeout=poll)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        it = iter(items)
        try:
            for item in it:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)
        finally:
            close = getattr(it, "close", None)
            if close:
                close()

    # a daemon: a producer stuck in a stalled read must not keep the process alive after a stop
    thread = threading.Thread(target=produce, daemon=True, name="lofi-prefetch")
    _producers.append(thread)
    thread.start()
    try:
        while True:
            try:
                item = q.get(timeout=poll)
            except queue.Empty:
                if stop():
                    return
                continue
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        quit_.set()
        thread.join(timeout=2 * poll)
