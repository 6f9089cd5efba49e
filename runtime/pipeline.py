"""Many sources in one process: each decoded on its own thread, their snippets batched into
shared encoder calls, each keeping its own head windows and finaliser.

The main thread drains the decode queues, gathers the snippets every stream has ready, encodes
them in one call (`encoder_batch` at most) when a batch is full, a stream has ended, or a ready
snippet has waited `max_delay` seconds (a live source is not held back for a full batch), then
hands each stream its features. With `encoder_workers` above 1 the calls run on a thread pool,
that many at once, and come back in the order they were made. A snippet's features depend
neither on what it is batched with nor on which call finished first, so every stream's segments
equal offline inference of that stream alone.
"""

from __future__ import annotations

import math
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

import av
import numpy as np
from lofi.runtime.annotations import Segment, event_line
from lofi.runtime.decode import DONE, READ_TIMEOUT, Feed, VideoReader
from lofi.runtime.errors import LofiError, shown
from lofi.runtime.models import BundleModels
from lofi.runtime.sources import ReconnectingReader, is_live, video_id
from lofi.runtime.stats import (
    ArrivalClock,
    Gauge,
    Reservoir,
    StageClock,
    StatusLine,
    bar,
    peak_rss_mib,
)
from lofi.runtime.streaming import StreamLocalizer, WholeVideoLocalizer, make_localizer

# seg, emitted_at (stream seconds), latency (wall seconds from its last frame's arrival)
EventSink = Callable[[Segment, float, float], None]
STAGE_UNITS = {
    "decode": "frames",
    "encoder": "snippets",
    "head": "snippets",
    "postprocess": "snippets",
    "whole_video": "snippets",
}


@dataclass
class Options:
    parallel: int = 1  # sources decoded and localized at once
    encoder_batch: int = 0  # snippets per encoder call at most (0: as `plan` says)
    queue_depth: int = 64  # decoded frames waiting per source at most
    timeout: float = READ_TIMEOUT  # seconds without data before a source counts as stalled
    open_timeout: float | None = None  # seconds to open a source (default: `timeout`)
    reconnect: int = 5  # reopen tries per drop of a live source
    max_delay: float = 0.5  # seconds a ready snippet waits for a fuller encoder batch
    decode: str = "cpu"  # cpu, nvdec or auto (see decode.DECODERS)
    decoder_threads: int | None = None  # per source (None: as `plan` says)
    encoder_workers: int = 0  # encoder calls in flight at once (0: as `plan` says)


@dataclass(frozen=True)
class Plan:
    """What `lofi-stream` uses where the user leaves a knob at 0 (or None)."""

    ort_threads: int  # ONNX Runtime intra-op threads (0: its default)
    decoder_threads: int  # per source (0: FFmpeg's frame threading, 1: single-threaded)
    encoder_batch: int  # snippets per encoder call at most
    encoder_workers: int = 1  # encoder calls in flight at once, each on `ort_threads`


def usable_cores() -> int:
    """The cores this process may run on (taskset, a container's cpuset), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity outside Linux
        return os.cpu_count() or 1


def plan(device: str, parallel: int, cores: int | None = None) -> Plan:
    """Each source decodes on its own thread while the encoder runs, so the two share the cores.

    Measured on the 2-core dev machine (bench/runtime.py, docs/BENCHMARKS.md): one ONNX Runtime
    thread and single-threaded decoding streamed a 10-minute video in 2.28 s, two ONNX Runtime
    threads in 2.84 s and both libraries' defaults (a thread per core each, batches of 16) in
    2.78 s, oversubscribed; on the CPU a batch of 4 snippets keeps the encoder's activations in
    cache (1.60 against 1.73 ms a snippet at 16). Where the sources are at least half the cores,
    each decodes single-threaded and the encoder runs one-thread calls at once, as many as the
    cores the decoders leave, or as the cores where the sources are at least as many (decoders
    then wait on full queues): four streams on 2 cores took 9.85 s this way against 10.57 s as
    one call at a time on two ONNX Runtime threads, whose threads wait on each other.

    With cores to spare, decoders get FFmpeg's frame threading and the encoder runs one-thread
    calls at once, as many as there are cores the sources leave, in batches of 16. On the GPU
    machine's 16 cores one 10-minute stream took 1.32 s this way (batches of 4) against 1.72 s
    as one call at a time on 15 ONNX Runtime threads, and 1.21 s with batches of 16 (fewer
    calls for the main thread to make); four streams at once took 6.29 s against 7.60 s one
    call at a time. On a GPU ONNX Runtime keeps its default and the encoder gets batches of 16,
    one call at a time."""
    cores = cores or usable_cores()
    decoder = 1 if cores <= 2 * parallel else 0
    if device != "cpu":
        return Plan(0, decoder, 16)
    if decoder:
        return Plan(1, decoder, 4, cores - parallel if parallel < cores else cores)
    return Plan(1, decoder, 16, cores - parallel)


def planned_models(
    bundle: str | Path, device: str = "cpu", threads: int = 0, spin: bool = False, parallel: int = 1
) -> BundleModels:
    """A bundle's models for streaming `parallel` sources: `threads` 0 takes the plan's (per
    encoder call)."""
    return BundleModels(bundle, device, threads or plan(device, parallel).ort_threads, spin)


@dataclass
class _Stream:
    source: str
    video: str
    record: dict
    reader: VideoReader | ReconnectingReader
    feed: Feed
    loc: StreamLocalizer | WholeVideoLocalizer
    arrivals: ArrivalClock = field(default_factory=ArrivalClock)
    frames: int = 0
    events: int = 0
    ended: bool = False


@dataclass
class _Call:
    """One encoder call: its (features, seconds) to come, whose snippets it holds, and the
    snippets themselves (a failed call shared by streams is retried one stream at a time)."""

    result: Future
    owners: list[tuple[_Stream, int]]
    snippets: np.ndarray


def _reason(exc: BaseException, source: str) -> str:
    """One line naming the source, whatever the error's own message says."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if source in msg else f"{source}: {msg}"


FAULTS = (LofiError, OSError, av.FFmpegError)


def distinct_ids(sources: list[str]) -> None:
    """Events, results and stats key each source by its id (a file's stem, a URL's last path
    part): two sources with one id (the same name in two folders, two cameras' `/live`, or one
    source given twice) would merge or drop silently, so they are refused before any work.
    Renaming is the user's call: an id made up here would match no ground truth."""
    first: dict[str, str] = {}
    for source in sources:
        vid = video_id(source)
        if vid in first:
            raise LofiError(
                f"sources {shown(first[vid])} and {shown(source)} have the same video id "
                f"{shown(vid)}: events and results are keyed by id, so give each source a "
                "distinct name (a file's stem, a URL's last path part), or stream them apart"
            )
        first[vid] = source


class Pipeline:
    """Streams `sources` (files, URLs, cameras) `options.parallel` at a time. Drive it with
    `step()` until it returns False (or `run()`); `results` maps each video to its segments
    (the per-video top `max_segments`, as offline inference keeps) and `stats()` reports.

    `stop()` turning true ends every running source there (as if its video ended; events
    flushed) and starts no other. Sources fail alone: a failure gets `error` called with one
    line, and the others go on."""

    def __init__(
        self,
        models: BundleModels,
        sources: list[str],
        on_event: EventSink | None = None,
        options: Options | None = None,
        stop: Callable[[], bool] = lambda: False,
        error: Callable[[str], None] = lambda line: None,
        warn: Callable[[str], None] = lambda line: None,
        status: TextIO | None = None,
    ) -> None:
        self.models, self.m = models, models.manifest
        o = options or Options()
        if o.parallel < 1 or o.queue_depth < 1 or min(o.encoder_batch, o.encoder_workers) < 0:
            raise LofiError(
                "--parallel and the queue depth must be at least 1, --batch and --workers at least 0"
            )
        chosen = plan(models.device, o.parallel)
        workers = o.encoder_workers or chosen.encoder_workers
        self.opts = replace(
            o,
            encoder_batch=o.encoder_batch or chosen.encoder_batch,
            decoder_threads=chosen.decoder_threads
            if o.decoder_threads is None
            else o.decoder_threads,
            encoder_workers=workers if models.concurrent else 1,
        )
        self.on_event, self.stop, self.error = on_event, stop, error
        self.warnings = 0

        def counted(line: str) -> None:
            self.warnings += 1
            warn(line)

        self.warn = counted
        distinct_ids(sources)
        if self.m.head_type == "gtad":
            for source in sources:
                if is_live(source):
                    raise LofiError(
                        f"{source}: a G-TAD bundle needs the whole video (resize protocol) and "
                        "cannot run on a live source; stream it with a pyramid-head bundle"
                    )
        self.pending = deque(sources)
        self.total = len(sources)
        self.active: list[_Stream] = []
        self.results: dict[str, list[Segment]] = {}
        self.records: list[dict] = []
        self.clock = StageClock()
        self.latency = Reservoir()
        self.queues = Gauge()
        self.batches = Gauge()
        self.wake = threading.Event()
        self.stopping = False
        self.stopped_early = False
        self.ready_since: float | None = None
        self.inflight: deque[_Call] = deque()  # encoder calls, oldest first
        self.pool = (
            ThreadPoolExecutor(self.opts.encoder_workers, thread_name_prefix="lofi-encoder")
            if self.opts.encoder_workers > 1
            else None
        )
        self.decode_seconds = 0.0
        self.done_seconds = 0.0  # video seconds of finished sources
        self.done_sources = 0
        self.frames = 0
        self.events = 0
        self.t0 = time.perf_counter()
        self.wall = 0.0
        self.status = StatusLine(status) if status is not None else None

    # ---- sources in and out
    def _start(self, source: str) -> None:
        vid = video_id(source)
        record: dict = {"source": source, "video": vid, "status": "ok"}
        self.records.append(record)
        size = (self.m.height, self.m.width)
        fps, o = self.m.grid.fps, self.opts
        quit_ = threading.Event()  # ends the decode thread, and a reconnect's backoff
        threads = o.decoder_threads
        if is_live(source):
            reader: VideoReader | ReconnectingReader = ReconnectingReader(
                source,
                fps,
                size,
                o.timeout,
                o.open_timeout,
                o.reconnect,
                cancel=quit_,
                decode=o.decode,
                threads=threads,
            )
        else:
            # snippets take only some frames (window protocol): the rest are not converted
            keep = self.m.grid.uses if self.m.protocol == "window" else None
            reader = VideoReader(
                source, fps, size, o.timeout, o.open_timeout, o.decode, threads, keep
            )
        st: _Stream | None = None

        def on_event(seg: Segment, now: float) -> None:
            frame = min(int(math.ceil(seg.end * fps - 1e-9)), st.frames) - 1
            latency = time.perf_counter() - st.arrivals.time_of(max(frame, 0))
            self.latency.add(latency)
            st.events += 1
            self.events += 1
            if self.status:
                self.status.clear()
            if self.on_event:
                self.on_event(seg, now, latency)

        try:
            loc = make_localizer(
                self.models, vid, self.opts.encoder_batch, on_event=on_event, clock=self.clock
            )
        except FAULTS as exc:
            self._fail_record(record, exc, 0)
            return
        feed = Feed(reader, o.queue_depth, self.wake, quit_)
        st = _Stream(source, vid, record, reader, feed, loc)
        self.active.append(st)

    def _fail_record(self, record: dict, exc: BaseException, events: int) -> None:
        record.update(
            status="failed", reason=_reason(exc, record["source"]), seconds=0.0, events=events
        )
        self.error(record["reason"])

    def _fail(self, st: _Stream, exc: BaseException) -> None:
        st.feed.close()
        self.active.remove(st)
        self._fail_record(st.record, exc, st.events)

    def _close(self, st: _Stream) -> None:
        """A stream whose every snippet was encoded: last windows, events, its record."""
        try:
            if st.loc.shares_encoder:
                st.loc.close()
            else:
                st.loc.finish()
        except FAULTS as exc:
            self._fail(st, exc)
            return
        st.feed.close()
        self.active.remove(st)
        self.decode_seconds += st.feed.decode_seconds
        r, rec = st.reader, st.record
        seconds = st.frames / self.m.grid.fps
        fields: dict = {"seconds": round(seconds, 3), "events": st.events}
        if r.corrupt:
            fields["corrupt_packets"] = r.corrupt
        if r.concealed:
            fields["concealed_frames"] = r.concealed
        if isinstance(r, ReconnectingReader):
            fields.update(reconnects=r.reconnects, gaps=r.gaps)
        rec.update(fields)
        if rec["status"] == "ok" and r.cut_short:
            rec.update(status="cut_short", reason=r.cut_short)
            self.warn(
                f"{st.source}: cut short after {seconds:.1f} s ({r.cut_short}); "
                "its events up to there are kept"
            )
        elif rec["status"] == "ok" and (r.truncated or r.corrupt or r.damage):
            parts = [f"truncated: {r.truncated}"] if r.truncated else []
            if r.corrupt:
                parts.append(f"{r.corrupt} corrupt packet(s) skipped")
            parts += r.damage
            rec.update(status="damaged", reason="; ".join(parts))
            self.warn(f"{st.source}: {rec['reason']}; the events of its readable parts are kept")
        for gap in getattr(r, "gaps", []):
            if gap["seconds"] is not None:
                self.warn(
                    f"{st.source}: reconnected after a {gap['seconds']:.1f} s gap at "
                    f"{gap['at']:.1f} s ({gap['reason']})"
                )
        self.results[st.video] = st.loc.results()
        self.frames += st.frames
        self.done_seconds += seconds
        self.done_sources += 1

    # ---- the loop
    def _drain(self, st: _Stream) -> bool:
        """Frames waiting in one stream's queue into its localizer; True when any came."""
        got = False
        for _ in range(4 * self.opts.encoder_batch):
            try:
                item = st.feed.queue.get_nowait()
            except queue.Empty:
                break
            got = True
            if item is DONE:
                st.ended = True
                break
            if isinstance(item, BaseException):
                if not isinstance(item, FAULTS):
                    raise item
                self._fail(st, item)
                break
            frame, arrival = item
            st.loc.add_frame(frame)
            st.arrivals.add(arrival)
            st.frames += 1
            if self.stop():
                self.stopping = True
                break
        return got

    def _ready(self) -> list[tuple[_Stream, int]]:
        return [(s, s.loc.ready(s.ended)) for s in self.active if s.loc.shares_encoder]

    def _encode(self, flush: bool) -> bool:
        """Encode the snippets the streams have ready, in shared calls (up to `encoder_workers`
        at once); True when any call ran or came back."""
        batch = self.opts.encoder_batch
        ran = self._collect(wait=False)
        while True:
            ready = [(s, r) for s, r in self._ready() if r]
            total = sum(r for _, r in ready)
            if total == 0:
                self.ready_since = None
                return ran
            now = time.perf_counter()
            if self.ready_since is None:
                self.ready_since = now
            due = (
                flush
                or total >= batch
                or any(s.ended for s, _ in ready)
                or now - self.ready_since >= self.opts.max_delay
            )
            if not due:
                return ran
            clips, owners, room = [], [], batch
            for s, r in ready:
                count = min(r, room)
                if count:
                    clips.append(s.loc.take(count, s.ended))
                    owners.append((s, count))
                    room -= count
            self.batches.add(batch - room)
            self.ready_since = now if total > batch - room else None
            ran = True
            x = np.concatenate(clips) if len(clips) > 1 else clips[0]
            if self.pool is None:
                result: Future = Future()
                try:
                    result.set_result(self._timed_encode(x))
                except FAULTS as exc:
                    result.set_exception(exc)
            else:
                while len(self.inflight) >= self.opts.encoder_workers:
                    self._collect(wait=True)
                result = self.pool.submit(self._timed_encode, x)
                result.add_done_callback(lambda _: self.wake.set())
            self.inflight.append(_Call(result, owners, x))
            self._collect(wait=False)

    def _timed_encode(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        return self.models.encode(x), time.perf_counter() - t0

    def _encoding(self, st: _Stream) -> bool:
        """Whether an encoder call not handed back yet holds snippets of `st`."""
        return any(s is st for call in self.inflight for s, _ in call.owners)

    def _collect(self, wait: bool) -> bool:
        """Hand finished encoder calls' features to their streams in the order the calls were
        made (so each stream's arrive in order), waiting for the oldest if `wait`; True when
        any came back."""
        got = False
        while self.inflight and (wait or self.inflight[0].result.done()):
            call, wait, got = self.inflight.popleft(), False, True
            try:
                feats, seconds = call.result.result()
            except FAULTS as exc:
                self._retry_alone(call, exc)
            else:
                self.clock.add("encoder", seconds, len(feats))
                at = 0
                for s, count in call.owners:
                    self._give(s, feats[at : at + count])
                    at += count
        return got

    def _retry_alone(self, call: _Call, exc: BaseException) -> None:
        """A failed call fails only the streams whose own snippets fail: one shared by several
        is made again for each stream alone (a snippet's features do not depend on its batch
        mates), so one stream's failed call leaves the others running and exact."""
        alone = len(call.owners) == 1
        at = 0
        for s, count in call.owners:
            part = call.snippets[at : at + count]
            at += count
            if s not in self.active:  # a stream fails once, whatever its other calls hold
                continue
            try:
                if alone:
                    raise exc
                feats, seconds = self._timed_encode(part)
            except FAULTS as again:
                self._fail(s, again)
            else:
                self.clock.add("encoder", seconds, len(feats))
                self._give(s, feats)

    def _give(self, st: _Stream, feats: np.ndarray) -> None:
        """Hand `st` its features, or fail it alone if its localizer fails on them."""
        if st in self.active:
            try:
                st.loc.add_features(feats)
            except FAULTS as exc:
                self._fail(st, exc)

    def step(self) -> bool:
        """One round: start sources, drain queues, encode, close ended streams. False when all
        sources are done."""
        while not self.stopping and self.pending and len(self.active) < self.opts.parallel:
            if self.stop():
                self.stopping = True
                break
            self._start(self.pending.popleft())
        if not self.active:
            if self.stopping and self.pending:
                self.stopped_early = True
            self.close()
            self.wall = time.perf_counter() - self.t0
            if self.status:
                self.status.clear()
            return False
        progressed = False
        for st in list(self.active):
            self.queues.add(st.feed.queue.qsize())  # what waited since the last round
            progressed |= self._drain(st)
            if self.stopping:
                break
        if self.stopping:
            self.stopped_early = True
            for st in self.active:
                st.ended = True
                st.record["status"] = "stopped"
                st.feed.quit.set()
        progressed |= self._encode(flush=self.stopping)
        for st in [s for s in self.active if s.ended]:
            if not st.loc.shares_encoder or (st.loc.ready(True) == 0 and not self._encoding(st)):
                self._close(st)
                progressed = True
        if self.status and self.status.enabled:
            self.status.show(self.status_text())
        if not progressed:
            self.wake.wait(0.2)
            self.wake.clear()
            if self.stop():
                self.stopping = True
        return True

    def run(self) -> Pipeline:
        while self.step():
            pass
        return self

    def close(self) -> None:
        """Stop every decode thread and the encoder workers (a consumer that gives up early,
        e.g. a closed generator)."""
        for st in self.active:
            st.feed.close()
        self.active.clear()
        self.pending.clear()
        self.inflight.clear()
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)  # waits for the calls running, a batch each

    # ---- reporting
    def video_seconds(self) -> float:
        return self.done_seconds + sum(s.frames for s in self.active) / self.m.grid.fps

    def status_text(self) -> str:
        wall = max(time.perf_counter() - self.t0, 1e-9)
        seconds = self.video_seconds()
        depth = max((s.feed.queue.qsize() for s in self.active), default=0)
        text = f"{self.done_sources}/{self.total} videos"
        files = [s for s in self.active if getattr(s.reader, "announced", 0)]
        if not any(is_live(s.source) for s in self.active):
            part = sum(min(s.frames / self.m.grid.fps / s.reader.announced, 1.0) for s in files)
            text += " " + bar((self.done_sources + part) / max(self.total, 1))
        return (
            f"{text} | {seconds:.0f} s of video, {seconds / wall:.1f}x real time | "
            f"{self.events} events | queue {depth}/{self.opts.queue_depth}"
        )

    def stats(self) -> dict:
        """Throughput, per-stage time, latency, queues and the per-source records (JSON-ready)."""
        wall = self.wall or time.perf_counter() - self.t0
        seconds = self.done_seconds
        decode = self.decode_seconds + sum(s.feed.decode_seconds for s in self.active)
        clock = StageClock()
        clock.seconds, clock.items, clock.calls = (
            dict(self.clock.seconds),
            dict(self.clock.items),
            dict(self.clock.calls),
        )
        if self.frames:
            clock.add("decode", decode, self.frames, calls=len(self.records))
        records = self.records
        return {
            "videos": self.done_sources,
            "frames": self.frames,
            "video_seconds": round(seconds, 3),
            "wall_seconds": round(wall, 3),
            "realtime_factor": round(seconds / max(wall, 1e-9), 2),
            "events": self.events,
            "stopped_early": self.stopped_early,
            "failed": sum(r["status"] == "failed" for r in records),
            "cut_short": sum(r["status"] == "cut_short" for r in records),
            "damaged": sum(r["status"] == "damaged" for r in records),
            "warnings": self.warnings,
            "corrupt_packets": sum(r.get("corrupt_packets", 0) for r in records),
            "reconnects": sum(r.get("reconnects", 0) for r in records),
            "parallel": self.opts.parallel,
            "stages": clock.report(STAGE_UNITS),
            "encoder_batch": {"size": self.opts.encoder_batch, **self.batches.summary()},
            "encoder_workers": self.opts.encoder_workers,
            "latency_seconds": self.latency.summary(),
            "queue_depth": {"capacity": self.opts.queue_depth, **self.queues.summary()},
            "peak_rss_mib": peak_rss_mib(),
            "sources": records,
        }


def stream_sources(
    models: BundleModels,
    sources: list[str],
    quiet: bool = False,
    out: TextIO | None = None,
    stop: Callable[[], bool] = lambda: False,
    min_score: float = 0.0,
    timeout: float = READ_TIMEOUT,
    err: TextIO | None = None,
    options: Options | None = None,
) -> tuple[dict[str, list[Segment]], dict]:
    """Stream `sources`, printing one event line per segment (score >= `min_score`; the results
    keep all) to `out` as it becomes final, and `error:` / `warning:` lines to `err`. Returns
    the results per video and the stats. What `lofi-stream` and `lofi-demo` run."""
    out = out or sys.stdout
    err = err or sys.stderr
    opts = options or Options(timeout=timeout)

    def on_event(seg: Segment, now: float, latency: float) -> None:
        if not quiet and seg.score >= min_score:
            print(event_line(seg, now), file=out, flush=True)

    pipe = Pipeline(
        models,
        sources,
        on_event,
        opts,
        stop,
        error=lambda line: print(f"error: {line}", file=err, flush=True),
        warn=lambda line: print(f"warning: {line}", file=err, flush=True),
        status=err,
    )
    try:
        pipe.run()
    finally:
        pipe.close()
    return pipe.results, pipe.stats()
