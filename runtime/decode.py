"""Video decoding with PyAV at a target frame rate, frames chosen by timestamp."""

from __future__ import annotations

import hashlib
import os
import queue
import re
import select
import stat
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
from lofi.runtime.timeline import (
    Shown,
    Timeline,
    announced_seconds,
    frame_seconds,
    header_problem,
)

_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
READ_TIMEOUT = 10.0  # seconds without data before a source counts as stalled


MAX_CORRUPT_RUN = 250  # undecodable packets in a row before a source counts as broken
# a source that is not a regular file (a URL, camera, FIFO, device) is cut short after this many
# read timeouts without a decoded frame, however many bytes it sends
NO_FRAME_TIMEOUTS = 3


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


def stream_file(path: Path) -> bool:
    """A FIFO or character device given as a file: it may never end, and opening a FIFO with no
    writer blocks in the kernel where FFmpeg's timeouts cannot reach."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def _open_stream_file(path: Path, opening: float) -> int:
    """A descriptor of a FIFO or device opened without blocking, once it has data (or its writer
    has come and gone) within `opening` seconds. It stays non-blocking, so FFmpeg's reads of it
    (`pipe:FD`) wait in FFmpeg's retry loop, which honours the read timeout."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise LofiError(f"cannot open video {path}: {exc.strerror}") from None
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    if not poller.poll(opening * 1000):
        os.close(fd)
        raise LofiError(
            f"cannot open video {path}: no data within {opening:g} s (a FIFO or device: "
            "nothing is writing to it)"
        )
    return fd


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
) -> tuple[av.container.InputContainer, int | None]:
    """A file path, a URL FFmpeg can open, a camera (/dev/videoN or camera:N), or a FIFO or
    device given as a file (read through FFmpeg's `pipe:FD`, whose descriptor is returned too:
    the caller closes it after the container)."""
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
    fd = None
    name = source
    if path is not None and stream_file(path):
        fd = _open_stream_file(path, opening)
        name = f"pipe:{fd}"
    t0 = time.monotonic()
    try:
        container = av.open(
            name, format=fmt, options=options, timeout=(opening, timeout), hwaccel=hwaccel
        )
    except av.FFmpegError as exc:
        if fd is not None:
            os.close(fd)
        if hwaccel is not None and fd is None and _opens(source, fmt, options, (opening, timeout)):
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
    return container, fd


def _fingerprint(frame: object) -> bytes | None:
    """A key frame's decoded pixels as a digest (the same bytes decode to the same pixels), to
    recognise one a reconnected source sends again; None for other frames."""
    if not isinstance(frame, av.VideoFrame) or not frame.key_frame:
        return None
    try:
        pixels = frame.to_ndarray()  # without the planes' row padding, which is not pixels
    except ValueError:  # a pixel format PyAV does not convert: no replay is recognised
        return None
    return hashlib.blake2b(pixels.tobytes(), digest_size=16).digest()


def concealed_clause(count: int) -> str:
    """`count` frames repaired by the decoder's error concealment, as one clause of a warning."""
    return (
        f"{count} frame(s) decoded with errors the decoder concealed "
        "(damaged data shown as repaired pixels)"
    )


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
    - a frame the decoder repaired by error concealment (FFmpeg marks it corrupt, raises
      nothing) is kept and counted in `concealed`;
    - timestamps that jump beyond `timeline.MAX_GAP`, go backwards or restart are
      discontinuities (`timeline.Timeline`): nothing is filled across them, they are counted;
    - a file that ends before its header says, or whose container cannot be read past some
      point (a truncated faststart MP4, MKV, MPEG-TS), ends with `truncated` set to the reason:
      everything readable is kept;
    - a source that stalls (no data for `timeout` seconds), a live source whose read fails,
      `MAX_CORRUPT_RUN` undecodable packets in a row, or a source that is not a regular file
      sending data but no decodable frame for `NO_FRAME_TIMEOUTS` timeouts end with
      `cut_short` set to the reason.
    `damage` lists what is wrong besides truncation and corrupt packets, one clause each.

    `decode`: `cpu`, `nvdec` or `auto` (files through PyNvVideoCodec when it is installed, else
    the CPU). Before a stream goes to NVDEC its codec, profile and pixel format are checked
    against `nvcodec.SUPPORTED`; a stream NVDEC cannot decode, or one it decodes nothing of, is
    refused in one line with `nvdec` and decoded on the CPU with `auto` (`fallback` says why; a
    `RuntimeWarning` says so once per stream format and process).

    `threads`: decoder threads (0: FFmpeg's frame threading with its own count; 1: decoding on
    the calling thread only, which leaves the other cores to inference). `keep(n)`: whether
    output frame n is needed; frames it rejects are yielded as None without being converted,
    except the last (snippets that run past a video's end repeat it), so one frame is held back
    until the next is known. `shown`: what the connections to this live source have shown so
    far (`timeline.Shown`, kept by `sources.ReconnectingReader`): a reconnection that replays
    it has those frames dropped."""

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
        shown: Shown | None = None,
    ):
        self.source = str(source)
        self.decode = decode
        self.threads = threads
        self.keep = keep
        self.fps = float(fps)
        self.size = size
        self.timeout = float(timeout)
        self.open_timeout = open_timeout
        self.shown = shown
        self.frames_out = 0
        self.ended = False
        self.fallback: str | None = None  # why `auto` decoded this source on the CPU
        self._reformatter = VideoReformatter()
        self.announced = 0.0  # seconds the header announces (0: not said, e.g. a live source)
        local = not _URL.match(self.source) and not re.match(
            r"^(camera:\d+|/dev/video)", self.source
        )
        self.is_file = local and not stream_file(Path(self.source))
        self._reset()

    def _reset(self) -> None:
        """Fault records of one pass (`auto` starts over on the CPU after NVDEC gave nothing)."""
        self.cut_short: str | None = None
        self.truncated: str | None = None
        self.corrupt = 0
        self.concealed = 0
        self.notes: list[str] = []  # header numbers not believed
        self.timeline = Timeline()
        self._fed = 0  # packets with data handed to the decoder

    @property
    def duration(self) -> float:
        """Seconds decoded so far (the whole video once iteration has finished)."""
        return self.frames_out / self.fps

    @property
    def replayed(self) -> int:
        """Frames dropped because an earlier connection had already shown them."""
        return self.timeline.replayed

    @property
    def damage(self) -> list[str]:
        """What is wrong with the source besides `truncated` and `corrupt`, one clause each."""
        out = list(self.notes)
        if self.concealed:
            out.append(concealed_clause(self.concealed))
        jumps = self.timeline.describe()
        if jumps:
            out.append(jumps)
        return out

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
        `truncated` (files) or `cut_short` (live sources) once a frame has been seen. A source
        that is not a regular file is demuxed whole (its other streams' packets also arrive
        without a frame) and cut short when `NO_FRAME_TIMEOUTS` timeouts pass without a frame:
        data that keeps coming resets the read timeout, not this clock."""
        run = 0
        seen = False
        limit = NO_FRAME_TIMEOUTS * self.timeout
        waited = (0, 0)  # packets and bytes since the last frame
        clock = time.monotonic()
        try:
            for packet in container.demux() if not self.is_file else container.demux(stream):
                waited = (waited[0] + 1, waited[1] + packet.size)
                if not self.is_file and time.monotonic() - clock > limit:
                    reason = (
                        f"no decodable frame for {limit:g} s while data kept coming "
                        f"({waited[0]} packets, {waited[1]} bytes)"
                    )
                    if not seen:
                        raise LofiError(f"{self.source}: {reason}")
                    self.cut_short = reason
                    return
                if not self.is_file and packet.stream.index != stream.index:
                    continue  # a file is demuxed for its video stream alone
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
                    waited, clock = (0, 0), time.monotonic()  # the consumer's time is not ours
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
        rate = float(stream.average_rate) if stream.average_rate else None
        for frame in self._packets(container, stream):
            if frame.time is None:
                continue
            self.concealed += frame.is_corrupt
            own = float(frame.duration * stream.time_base) if frame.duration else None
            yield frame.time, frame_seconds(own, rate), frame

    def _nv_frames(self, nvc: ModuleType) -> Iterator[tuple[float, float, np.ndarray]]:
        """(seconds, duration, RGB frame) from PyNvVideoCodec's NVDEC decoder."""
        source = nvcodec.NvFrames(nvc, self.source)

        def broken(run: int) -> bool:  # after each rejected packet
            self.corrupt = source.corrupt
            if run >= MAX_CORRUPT_RUN:
                self.cut_short = f"decoding failed: {run} corrupt packets in a row"
                return True
            return False

        seconds = frame_seconds(None, source.rate)
        for t, rgb in source.frames(broken):
            self._fed = source.packets
            yield t, seconds, rgb
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
                self._reset()
                yield from self._decode(None, False)
        finally:
            self.ended = True

    def _read_header(self, container: av.container.InputContainer, stream: av.VideoStream):
        """The numbers the header gives, each within physical bounds: a size or time base no
        decoder could use is refused in one line, an announced duration that is not believed
        is noted and set to 0 (nothing depends on it but the truncation check)."""
        ctx = stream.codec_context
        tb = float(stream.time_base) if stream.time_base else None
        problem = header_problem(ctx.width, ctx.height, tb)
        if problem:
            raise LofiError(f"{self.source}: the video stream's header gives a {problem}")
        if self.is_file:
            self.announced, note = announced_seconds(_header_duration(container, stream))
            if note:
                self.notes.append(note)
        if self.shown is not None and self.shown.last is not None:
            return Timeline(None, self.shown)  # a reconnect: its first frame starts its timeline
        origin = None
        if stream.start_time is not None:
            origin = float(stream.start_time * stream.time_base)
        return Timeline(origin, self.shown)

    def _decode(self, nvc: ModuleType | None, nvdec: bool) -> Iterator[np.ndarray | None]:
        """One pass over the source: with PyNvVideoCodec (`nvc`), FFmpeg's CUDA hwaccel (`nvdec`
        without `nvc`) or the CPU."""
        hwaccel = nvdec and nvc is None
        self._fed = 0
        container, fd = _open(
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
            self.timeline = self._read_header(container, stream)
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
                yield from self._converted(self._sample(timed))
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
            if fd is not None:
                os.close(fd)

    def _sample(self, timed: Iterable[tuple[float, float, object]]):
        """The decoded frame (unconverted) on screen at each n/fps seconds, frames placed by
        the timeline rule (`self.timeline`): a frame held over a gap no longer than
        `timeline.MAX_GAP` (plus the time of packets skipped as corrupt) is repeated, nothing
        is repeated across a longer one, and replays after a reconnect are dropped."""
        step = Fraction(1) / Fraction(self.fps).limit_denominator(1_000_000)
        line = self.timeline
        prev = None
        fed = 0  # packets fed up to the previous frame
        for time_, dur, frame in timed:
            t = line.place(
                time_, dur, max(self._fed - fed - 1, 0) * dur, lambda f=frame: _fingerprint(f)
            )
            fed = self._fed
            if t is None:
                continue
            while prev is not None and float(self.frames_out * step) < t:
                self.frames_out += 1
                yield prev
            prev = frame
        if prev is None:
            if line.replayed:
                return  # the whole connection replayed what was already shown
            raise _NoFrames(f"no decodable video frames in {self.source}")
        while float(self.frames_out * step) < line.end - 1e-9 or self.frames_out == 0:
            self.frames_out += 1
            yield prev
        # after a discontinuity the header's duration counts on a clock that jumped
        said, broken = self.announced, self.truncated or line.jumps
        if self.is_file and not broken and said - line.end > 0.5 + 2 / self.fps:
            self.truncated = f"ends at {line.end:.1f} s of the {said:.1f} s announced"

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
    short, truncated, corrupt packets, concealed errors, timestamp discontinuities) is an error
    here: a damaged video passed off as whole would be silently wrong."""
    reader = VideoReader(source, fps, size)
    frames = np.stack(list(reader))
    problem = reader.cut_short or reader.truncated
    if not problem and reader.corrupt:
        problem = f"{reader.corrupt} corrupt packet(s)"
    if not problem and reader.damage:
        problem = "; ".join(reader.damage)
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
