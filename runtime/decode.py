"""Video decoding with PyAV at a target frame rate, frames chosen by timestamp."""

from __future__ import annotations

import queue
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import av
import numpy as np
from av.codec.hwaccel import HWAccel, hwdevices_available
from av.video.reformatter import VideoReformatter
from lofi.runtime import nvcodec
from lofi.runtime.errors import LofiError

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
READ_TIMEOUT = 10.0  # seconds without data before a source counts as stalled


MAX_CORRUPT_RUN = 250  # undecodable packets in a row before a source counts as broken


def _mp4_index_missing(path: Path) -> bool:
    """An MP4/MOV file (an `ftyp` box first) whose top-level boxes end without a `moov` box: the
    index was in the lost tail of a truncated file, so no frame can be located."""
    with open(path, "rb") as f:
        size = path.stat().st_size
        pos, first = 0, True
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(16)
            length, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if first and kind != b"ftyp":
                return False
            if kind == b"moov":
                return False
            first = False
            if length == 1 and len(head) == 16:
                length = int.from_bytes(head[8:16], "big")
            if length < 8:
                break
            pos += length
        return not first


DECODERS = ("cpu", "nvdec", "auto")


def _check_decode(decode: str) -> None:
    if decode not in DECODERS:
        raise LofiError(f"--decode must be one of {', '.join(DECODERS)}, not {decode!r}")


def _hwaccel(decode: str) -> HWAccel | None:
    """NVDEC through FFmpeg's CUDA hwaccel inside PyAV (for `nvdec` where PyNvVideoCodec is not
    used): the same demuxing, timestamps, fault handling and scaler as CPU decoding, frames
    downloaded to system memory. No silent fallback to the CPU: a machine without a usable
    NVIDIA GPU is refused. `auto` never asks FFmpeg for a device."""
    _check_decode(decode)
    if decode != "nvdec":
        return None
    if "cuda" not in hwdevices_available():
        raise LofiError("--decode nvdec: this FFmpeg (PyAV's) has no CUDA hwaccel")
    return HWAccel("cuda", allow_software_fallback=False)


def _opens(source: str, fmt: str | None, options: dict, timeout: tuple[float, float]) -> bool:
    """Whether the source opens with CPU decoding (so a failure with NVDEC was NVDEC's)."""
    try:
        av.open(source, format=fmt, options=options, timeout=timeout).close()
    except av.FFmpegError:
        return False
    return True


def _open(
    source: str,
    timeout: float = READ_TIMEOUT,
    open_timeout: float | None = None,
    decode: str = "cpu",
) -> av.container.InputContainer:
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
    path = None
    if not _URL.match(source) and fmt is None:
        path = Path(source)
        if not path.exists():
            raise LofiError(f"video not found: {source}")
        if path.is_file() and path.stat().st_size == 0:
            raise LofiError(f"video file is empty: {source}")
    opening = open_timeout if open_timeout is not None else timeout
    hwaccel = _hwaccel(decode)
    t0 = time.monotonic()
    try:
        return av.open(
            source, format=fmt, options=options, timeout=(opening, timeout), hwaccel=hwaccel
        )
    except av.FFmpegError as exc:
        if hwaccel is not None and _opens(source, fmt, options, (opening, timeout)):
            raise LofiError(
                f"--decode nvdec: FFmpeg could not create a CUDA device ({exc.strerror}): "
                "it needs an NVIDIA GPU and driver; use --decode cpu"
            ) from None
        # the interrupt that ends a slow open surfaces as AVERROR_EXIT or as the protocol's
        # own error (RTSP: invalid data), so the clock tells a timeout apart
        if isinstance(exc, av.ExitError) or time.monotonic() - t0 >= 0.95 * opening:
            raise LofiError(f"cannot open video {source}: no answer within {opening:g} s") from None
        if path is not None and path.is_file() and _mp4_index_missing(path):
            raise LofiError(
                f"cannot open video {source}: a truncated MP4 whose index (moov box) was in the "
                "lost tail, so no frame can be located (a file written with its index first, "
                "faststart, survives truncation)"
            ) from None
        raise LofiError(f"cannot open video {source}: {exc}") from None


class _NoFrames(LofiError):
    """No frame came out of the decoder."""


class _NvdecGaveNothing(LofiError):
    """NVDEC decoded no frame of a stream with frames (raised before any frame was yielded, so
    `auto` can start the source over on the CPU)."""

    def __init__(self, message: str, fmt: nvcodec.StreamFormat) -> None:
        super().__init__(message)
        self.fmt = fmt


_told: set = set()  # what `auto` has said it decodes on the CPU, once per process each


def _tell_once(key: object, line: str) -> None:
    if key not in _told:
        _told.add(key)
        warnings.warn(line, RuntimeWarning, stacklevel=3)


def _header_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    """Seconds the file's header announces for the video (0 when it does not say)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / 1e6 if container.duration else 0.0


class VideoReader:
    """Iterates RGB uint8 frames (H, W, 3) sampled at `fps`: output frame n shows the source
    frame on screen at n/fps seconds, so variable-frame-rate input works. Frames are resized by
    FFmpeg's scaler inside PyAV, and only those that are shown at a sampled instant are converted.

    Faults, each told apart so callers can report it:
    - a corrupt packet is skipped and counted in `corrupt`; the frame before it stays on screen
      until the next good one, so time stays aligned;
    - a file that ends before its header says, or whose container cannot be read past some
      point (a truncated faststart MP4, MKV, MPEG-TS), ends with `truncated` set to the reason:
      everything readable is kept;
    - a source that stalls (no data for `timeout` seconds), a live source whose read fails, or
      `MAX_CORRUPT_RUN` undecodable packets in a row end with `cut_short` set to the reason.

    `decode`: `cpu`, `nvdec` or `auto` (files through PyNvVideoCodec when it is installed, else
    the CPU). Before a stream goes to NVDEC its codec, profile and pixel format are checked
    against `nvcodec.SUPPORTED`; a stream NVDEC cannot decode, or one it decodes nothing of, is
    refused in one line with `nvdec` and decoded on the CPU with `auto` (`fallback` says why; a
    `RuntimeWarning` says so once per stream format and process).

    `threads`: decoder threads (0: FFmpeg's frame threading with its own count; 1: decoding on
    the calling thread only, which leaves the other cores to inference). `keep(n)`: whether
    output frame n is needed; frames it rejects are yielded as None without being converted,
    except the last (snippets that run past a video's end repeat it), so one frame is held back
    until the next is known."""

    def __init__(
        self,
        source: str | Path,
        fps: float,
        size: tuple[int, int] | None = None,
        timeout: float = READ_TIMEOUT,
        open_timeout: float | None = None,
        decode: str = "cpu",
        threads: int = 0,
        keep: Callable[[int], bool] | None = None,
    ):
        self.source = str(source)
        self.decode = decode
        self.threads = threads
        self.keep = keep
        self.fps = float(fps)
        self.size = size
        self.timeout = float(timeout)
        self.open_timeout = open_timeout
        self.frames_out = 0
        self.ended = False
        self.cut_short: str | None = None
        self.truncated: str | None = None
        self.corrupt = 0
        self.fallback: str | None = None  # why `auto` decoded this source on the CPU
        self._fed = 0  # packets with data handed to the decoder
        self._reformatter = VideoReformatter()
        self.announced = 0.0  # seconds the header announces (0: not said, e.g. a live source)
        self.is_file = not _URL.match(self.source) and not re.match(
            r"^(camera:\d+|/dev/video)", self.source
        )

    @property
    def duration(self) -> float:
        """Seconds decoded so far (the whole video once iteration has finished)."""
        return self.frames_out / self.fps

    def _convert(self, frame: av.VideoFrame | np.ndarray) -> np.ndarray:
        """RGB at the reader's size by FFmpeg's scaler. One reformatter per reader keeps one
        scaler context: `frame.to_ndarray(width=, height=)` builds a new one per frame, which
        cost 20-40x more than the conversion itself (same pixels). NVDEC's RGB frames go
        through the same scaler."""
        if isinstance(frame, np.ndarray):
            frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
        h, w = self.size if self.size is not None else (frame.height, frame.width)
        return self._reformatter.reformat(frame, width=w, height=h, format="rgb24").to_ndarray()

    def _packets(
        self, container: av.container.InputContainer, stream: av.VideoStream
    ) -> Iterator[av.VideoFrame]:
        """Decoded frames; corrupt packets skipped and counted, read errors turned into
        `truncated` (files) or `cut_short` (live sources) once a frame has been seen."""
        run = 0
        seen = False
        try:
            for packet in container.demux(stream):
                self._fed += packet.size > 0
                try:
                    frames = packet.decode()
                except av.ExitError:
                    raise
                except av.FFmpegError:
                    self.corrupt += 1
                    run += 1
                    if run >= MAX_CORRUPT_RUN:
                        self.cut_short = f"decoding failed: {run} corrupt packets in a row"
                        return
                    continue
                run = 0
                for frame in frames:
                    seen = True
                    yield frame
        except av.ExitError:
            if not seen:
                raise LofiError(f"{self.source}: no video data within {self.timeout:g} s") from None
            self.cut_short = f"stalled: no data for {self.timeout:g} s"
        except av.FFmpegError as exc:
            if not seen:
                raise LofiError(f"cannot decode {self.source}: {exc}") from None
            reason = " ".join(str(exc).split())
            if self.is_file:
                self.truncated = f"unreadable past {self.duration:.1f} s ({reason})"
            else:
                self.cut_short = f"read failed: {reason}"

    def _pyav_frames(
        self, container: av.container.InputContainer, stream: av.VideoStream
    ) -> Iterator[tuple[float, float, av.VideoFrame]]:
        """(seconds, duration, frame) from PyAV's decoder (CPU, or FFmpeg's CUDA hwaccel)."""
        for frame in self._packets(container, stream):
            if frame.time is None:
                continue
            dur = float(frame.duration * stream.time_base) if frame.duration else 0.0
            if dur <= 0 and stream.average_rate:
                dur = 1.0 / float(stream.average_rate)
            yield frame.time, dur, frame

    def _nv_frames(self, nvc: ModuleType) -> Iterator[tuple[float, float, np.ndarray]]:
        """(seconds, duration, RGB frame) from PyNvVideoCodec's NVDEC decoder."""
        source = nvcodec.NvFrames(nvc, self.source)

        def broken(run: int) -> bool:  # after each rejected packet
            self.corrupt = source.corrupt
            if run >= MAX_CORRUPT_RUN:
                self.cut_short = f"decoding failed: {run} corrupt packets in a row"
                return True
            return False

        for t, rgb in source.frames(broken):
            yield t, source.frame_seconds, rgb
        self._fed = source.packets

    def __iter__(self) -> Iterator[np.ndarray | None]:
        _check_decode(self.decode)
        nvc = nvcodec.load() if self.decode != "cpu" and self.is_file else None
        # NVDEC through PyNvVideoCodec (files, where installed), else through FFmpeg's CUDA
        # hwaccel (`nvdec` only: `auto` without PyNvVideoCodec decodes on the CPU)
        nvdec = nvc is not None or self.decode == "nvdec"
        try:
            try:
                yield from self._decode(nvc, nvdec)
            except (_NvdecGaveNothing, nvcodec.NoDecoder) as exc:  # no frame yielded yet
                if self.decode == "nvdec":
                    no_gpu = isinstance(exc, nvcodec.NoDecoder)
                    hint = ": it needs an NVIDIA GPU and driver" if no_gpu else ""
                    raise LofiError(f"--decode nvdec: {exc}{hint}; use --decode cpu") from None
                self.fallback = f"{exc}; decoded on the CPU instead"
                key = ("nothing", exc.fmt) if isinstance(exc, _NvdecGaveNothing) else "no decoder"
                _tell_once(key, f"--decode auto: {self.fallback}")
                self.corrupt, self.cut_short, self.truncated = 0, None, None
                yield from self._decode(None, False)
        finally:
            self.ended = True

    def _decode(self, nvc: ModuleType | None, nvdec: bool) -> Iterator[np.ndarray | None]:
        """One pass over the source: with PyNvVideoCodec (`nvc`), FFmpeg's CUDA hwaccel (`nvdec`
        without `nvc`) or the CPU."""
        hwaccel = nvdec and nvc is None
        self._fed = 0
        container = _open(
            self.source, self.timeout, self.open_timeout, "nvdec" if hwaccel else "cpu"
        )
        try:
            if not container.streams.video:
                raise LofiError(f"no video stream in {self.source}")
            stream = container.streams.video[0]
            if self.threads == 1:
                stream.thread_count = 1
            else:
                stream.thread_type = "AUTO"
                stream.thread_count = self.threads
            self.announced = _header_duration(container, stream) if self.is_file else 0.0
            origin = None
            if stream.start_time is not None and stream.time_base is not None:
                origin = float(stream.start_time * stream.time_base)
            fmt = nvcodec.stream_format(stream.codec_context) if nvdec else None
            why = nvcodec.unsupported(fmt) if fmt else None
            if why and self.decode == "nvdec":
                raise LofiError(
                    f"--decode nvdec: NVDEC cannot decode {self.source} ({why}); use --decode cpu"
                )
            if why:  # auto: the container was opened for the CPU
                self.fallback = f"NVDEC cannot decode {why}; decoded on the CPU instead"
                _tell_once(
                    ("format", fmt), f"--decode auto: {self.fallback} (first: {self.source})"
                )
                nvc, nvdec = None, False
            listed = stream.frames  # frames the container announces (0: not said)
            size = f"{stream.codec_context.width}x{stream.codec_context.height}"
            if nvc is not None:
                container.close()  # only its header was needed: PyNvVideoCodec demuxes itself
                timed = self._nv_frames(nvc)
            else:
                timed = self._pyav_frames(container, stream)
            try:
                yield from self._converted(self._sample(timed, origin))
            except _NoFrames:
                if not nvdec or not (listed or self._fed):
                    raise
                # with the size: NVDEC also has a smallest coded size (the driver's decoder caps)
                raise _NvdecGaveNothing(
                    f"NVDEC decoded nothing from {self.source} ({self._fed} packets of "
                    f"{nvcodec.describe(fmt)} {size} fed, {self.corrupt} rejected)",
                    fmt,
                ) from None
        finally:
            container.close()

    def _sample(self, timed: Iterable[tuple[float, float, object]], origin: float | None):
        """The decoded frame (unconverted) on screen at each n/fps seconds after `origin`."""
        step = Fraction(1) / Fraction(self.fps).limit_denominator(1_000_000)
        prev = None
        prev_end = 0.0
        for time_, dur, frame in timed:
            if origin is None:
                origin = time_
            t = time_ - origin
            while prev is not None and float(self.frames_out * step) < t:
                self.frames_out += 1
                yield prev
            prev = frame
            prev_end = t + dur
        if prev is None:
            raise _NoFrames(f"no decodable video frames in {self.source}")
        while float(self.frames_out * step) < prev_end - 1e-9 or self.frames_out == 0:
            self.frames_out += 1
            yield prev
        said = self.announced
        if self.is_file and not self.truncated and said - prev_end > 0.5 + 2 / self.fps:
            self.truncated = f"ends at {prev_end:.1f} s of the {said:.1f} s announced"

    def _converted(self, shown: Iterator[object]) -> Iterator[np.ndarray | None]:
        """RGB frames, each decoded frame converted once however many instants show it; with
        `keep`, only the frames it asks for and the last."""
        last_src, last_rgb = None, None

        def rgb(src: object) -> np.ndarray:
            nonlocal last_src, last_rgb
            if src is not last_src:
                last_src, last_rgb = src, self._convert(src)
            return last_rgb

        if self.keep is None:
            for src in shown:
                yield rgb(src)
            return
        n, held = 0, None
        for src in shown:
            if held is not None:
                yield rgb(held) if self.keep(n) else None
                n += 1
            held = src
        if held is not None:
            yield rgb(held)


def read_video(source: str | Path, fps: float, size: tuple[int, int] | None = None) -> np.ndarray:
    """All frames of a video as (T, H, W, 3) uint8. A video that cannot be decoded whole (cut
    short, truncated, corrupt packets) is an error here: a partial video passed off as whole would
    be silently wrong."""
    reader = VideoReader(source, fps, size)
    frames = np.stack(list(reader))
    problem = reader.cut_short or reader.truncated
    if not problem and reader.corrupt:
        problem = f"{reader.corrupt} corrupt packet(s)"
    if problem:
        raise LofiError(f"{source}: {problem} after {reader.duration:.1f} s")
    return frames


DONE = object()  # a Feed's last item after a source's end
_producers: list[threading.Thread] = []


def blocked_readers() -> int:
    """Background readers still alive, e.g. inside FFmpeg's read of a stalled source after a
    stop. A process must not run interpreter shutdown under one (it can crash there)."""
    _producers[:] = [t for t in _producers if t.is_alive()]
    return len(_producers)


class Feed:
    """One source decoded on its own thread into a bounded queue, so decoding overlaps inference
    and the main thread stays responsive to signals while a live source blocks inside FFmpeg.

    Items are `(frame, arrival)` (arrival: `time.perf_counter()` when the frame came out of the
    decoder), then `DONE`, or the exception that ended the reader. At most `depth` frames wait.
    `wake` is set after every item so one thread can wait on many feeds. The thread is a daemon:
    one stuck in a stalled read must not keep the process alive after a stop."""

    def __init__(
        self,
        frames: Iterable[np.ndarray],
        depth: int,
        wake: threading.Event,
        quit_: threading.Event | None = None,
        poll: float = 0.2,
    ) -> None:
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.wake, self.poll = wake, poll
        self.quit = quit_ or threading.Event()
        self.decode_seconds = 0.0
        self.frames = frames
        self.thread = threading.Thread(target=self._produce, daemon=True, name="lofi-decode")
        _producers.append(self.thread)
        self.thread.start()

    def _put(self, item: object) -> bool:
        """Hand one item over; False once the consumer has gone."""
        while not self.quit.is_set():
            try:
                self.queue.put(item, timeout=self.poll)
                self.wake.set()
                return True
            except queue.Full:
                pass
        return False

    def _produce(self) -> None:
        it = iter(self.frames)
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    frame = next(it)
                except StopIteration:
                    break
                t1 = time.perf_counter()
                self.decode_seconds += t1 - t0
                if not self._put((frame, t1)):
                    return
            self._put(DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
        finally:
            close = getattr(it, "close", None)
            if close:
                close()

    def close(self) -> None:
        """Stop the producer (it ends at its next frame, or stays blocked in a stalled read)."""
        self.quit.set()
        self.thread.join(timeout=2 * self.poll)
