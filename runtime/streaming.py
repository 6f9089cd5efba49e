"""Streaming localization with memory that does not grow with the video.

Frames -> snippets -> encoder (batched) -> a bounded feature buffer -> the head on windows with
`context` snippets of margin each side (outputs away from a window's edge equal whole-video
outputs exactly) -> candidates -> StreamingFinalizer -> events as soon as they are final.

G-TAD bundles (the `resize` protocol) cannot stream: their `length` snippets are spread over the
whole video, so nothing is known before it ends. `WholeVideoLocalizer` keeps the frames, runs
one whole-video pass when the video ends and emits every event then (emitted_at = duration).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
from lofi.runtime.annotations import Segment
from lofi.runtime.errors import LofiError
from lofi.runtime.gtad_decode import gtad_detect
from lofi.runtime.models import BundleModels, GTADArrays
from lofi.runtime.postprocess import (
    Candidates,
    LevelOutputs,
    StreamingFinalizer,
    decode_outputs,
    final_segments,
    to_segments,
)
from lofi.runtime.stats import StageClock


class StreamLocalizer:
    """Push frames, receive final segments. `record` keeps per-position head outputs (tests).

    Two ways to drive it: `push` (it encodes its own snippets, `encoder_batch` at a time) or, to
    share encoder calls between streams, `add_frame` + `take` (the snippets ready) + `add_features`
    (their features) + `close` once the stream has ended and every snippet was taken."""

    def __init__(
        self,
        models: BundleModels,
        video: str,
        encoder_batch: int = 16,
        on_event: Callable[[Segment, float], None] | None = None,
        record: bool = False,
        clock: StageClock | None = None,
    ):
        self.models, self.video, self.batch = models, video, encoder_batch
        self.m = models.manifest
        if self.m.head_type != "pyramid":
            raise LofiError(
                f"a {self.m.head_type} bundle does not stream (it needs the whole video): "
                "use WholeVideoLocalizer"
            )
        self.on_event = on_event
        self.clock = clock or StageClock()
        self.finalizer = StreamingFinalizer(self.m.post)
        self.frames: list[np.ndarray] = []
        self.frame_base = 0  # global index of frames[0]
        self.n_frames = 0
        self.next_snippet = 0  # first snippet not taken for encoding yet
        self.complete = 0  # snippets whose frames have all arrived
        self.feats: list[np.ndarray] = []
        self.feat_base = 0  # global snippet index of feats[0]
        self.window_start = 0  # first output position (snippets) of the next head window
        self.emitted: list[Segment] = []
        self.record = record
        self.recorded: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in self.m.strides]
        self.head_calls = 0

    shares_encoder = True

    # ---- frames -> snippets -> features
    def add_frame(self, frame: np.ndarray) -> None:
        self.frames.append(frame)
        self.n_frames += 1
        g = self.m.grid
        while g.last_frame_needed(self.complete) < self.n_frames:
            self.complete += 1

    def ready(self, ended: bool = False) -> int:
        """Snippets not taken yet whose frames are all here (all the rest once it has ended)."""
        last = self.m.grid.count(self.n_frames) if ended else self.complete
        return max(last - self.next_snippet, 0)

    def take(self, count: int, ended: bool = False) -> np.ndarray:
        """The next `count` ready snippets as (count, k, H, W, 3) uint8; frames no later snippet
        needs are dropped. Taking a snippet before its frames are here (or, once the stream has
        `ended`, one past its end) is a caller's bug: it would encode clamped frames silently."""
        if not 0 <= count <= self.ready(ended):
            raise ValueError(f"{self.video}: {count} snippets asked, {self.ready(ended)} ready")
        g = self.m.grid
        idx = g.frame_indices(self.next_snippet, count, self.n_frames) - self.frame_base
        clip = _gather(self.frames, idx)
        self.next_snippet += count
        keep_from = int(np.floor(self.next_snippet * g.hop + 1e-9))
        drop = max(0, min(keep_from, self.n_frames - 1) - self.frame_base)
        del self.frames[:drop]
        self.frame_base += drop
        return clip

    def add_features(self, feats: np.ndarray) -> list[Segment]:
        """Features of the snippets taken, in order; returns the segments final now."""
        self.feats.extend(feats)
        return self._run_heads(ended=False)

    def _encode(self, count: int, ended: bool) -> None:
        with self.clock.stage("encoder", count):
            self.feats.extend(self.models.encode(self.take(count, ended)))

    # ---- features -> head windows -> events
    def _run_heads(self, ended: bool) -> list[Segment]:
        m = self.m
        out: list[Segment] = []
        n = self.feat_base + len(self.feats)
        total = self.models.padded_length(n) if ended else None
        while True:
            a, b = self.window_start, self.window_start + m.window
            if ended:
                if a >= total:
                    break
            elif n < b + m.context:
                break
            lo = max(0, a - m.context)
            hi = min(b + m.context, total) if ended else b + m.context
            x = np.zeros((hi - lo, m.feature_dim), dtype=np.float32)
            have = np.asarray(self.feats[lo - self.feat_base : min(hi, n) - self.feat_base])
            x[: len(have)] = have
            with self.clock.stage("head", b - a):
                outputs = self.models.head(x)
            self.head_calls += 1
            with self.clock.stage("postprocess", b - a):
                cropped = [
                    (c[:, (a - lo) // s :], r[:, (a - lo) // s :])
                    for (c, r), s in zip(outputs, m.strides)
                ]
                cands, kept = decode_outputs(cropped, m, a, b, n if ended else b)
                if self.record:
                    for level, pair in enumerate(kept):
                        self.recorded[level].append(pair)
                # windows left after the stream ended still come one by one: only the last may
                # close all
                if ended and b >= total:
                    safe, duration = float("inf"), self.n_frames / m.grid.fps
                else:
                    safe, duration = float(m.grid.time(b - m.max_reach)), None
                out += self._emit(self.finalizer.push(cands, safe, duration), ended)
            self.window_start = b
            drop = max(0, self.window_start - m.context - self.feat_base)
            del self.feats[:drop]
            self.feat_base += drop
        return out

    def _emit(self, c: Candidates, ended: bool) -> list[Segment]:
        segs = to_segments(c, self.video, self.m.labels)
        # stream time of the last frame the head has seen (frames decoded ahead do not count)
        seen = self.feat_base + len(self.feats)
        frames = self.n_frames if ended else self.m.grid.last_frame_needed(seen - 1) + 1
        now = min(frames, self.n_frames) / self.m.grid.fps
        for s in segs:
            if self.on_event:
                self.on_event(s, now)
        self.emitted += segs
        # only the top `cap` can reach the results file: memory stays flat on an endless stream
        cap = self.m.post.max_segments
        if len(self.emitted) > 2 * cap:
            self.emitted = self._ranked()[:cap]
        return segs

    def push(self, frame: np.ndarray) -> list[Segment]:
        self.add_frame(frame)
        while self.ready() >= self.batch:
            self._encode(self.batch, ended=False)
        return self._run_heads(ended=False)

    def finish(self) -> list[Segment]:
        """The stream has ended: encode what is left, run the last windows, flush every event."""
        while self.n_frames and (rest := self.ready(ended=True)):
            self._encode(min(rest, self.batch), ended=True)
        return self.close()

    def close(self) -> list[Segment]:
        """After the last snippet's features were added: the last windows and every event."""
        if self.n_frames == 0:
            return []
        return self._run_heads(ended=True)

    def _ranked(self) -> list[Segment]:
        labels = self.m.labels
        return sorted(self.emitted, key=lambda s: (-s.score, s.start, s.end, labels.index(s.label)))

    def results(self) -> list[Segment]:
        """The per-video top `max_segments`, exactly what offline inference keeps."""
        return self._ranked()[: self.m.post.max_segments]

    def recorded_outputs(self) -> LevelOutputs:
        return [
            (np.concatenate([c for c, _ in lv], 1), np.concatenate([r for _, r in lv], 1))
            for lv in self.recorded
        ]


def _gather(frames: Sequence[np.ndarray] | np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(n, k) frame indices -> (n, k, H, W, 3) uint8 snippets from an array or a list of frames
    (where frames no snippet takes may be None)."""
    if isinstance(frames, np.ndarray):
        return frames[idx]
    parts = [frames[i] for i in idx.ravel()]
    return np.stack(parts).reshape(*idx.shape, *parts[0].shape)


def localize_gtad(
    models: BundleModels,
    frames: Sequence[np.ndarray] | np.ndarray,
    video: str,
    encoder_batch: int = 16,
) -> tuple[list[Segment], GTADArrays]:
    """A G-TAD bundle on a whole video: the `length` snippets of its resize grid -> encoder ->
    one head call -> `gtad_detect` (soft-NMS, top `max_segments`). Also returns the outputs."""
    m = models.manifest
    n_frames = len(frames)
    if n_frames == 0:
        raise LofiError(f"{video}: no frames to localize")
    grid = m.video_grid(n_frames)
    idx = grid.frame_indices(0, m.length, n_frames)
    feats = np.concatenate(
        [
            models.encode(_gather(frames, idx[i : i + encoder_batch]))
            for i in range(0, m.length, encoder_batch)
        ]
    )
    outputs = models.gtad_head(feats)
    return gtad_detect(outputs, grid, n_frames / grid.fps, m.labels, m.post, video), outputs


def localize_offline(
    models: BundleModels,
    frames: Sequence[np.ndarray] | np.ndarray,
    video: str,
    encoder_batch: int = 16,
) -> tuple[list[Segment], LevelOutputs | GTADArrays]:
    """Whole-video inference. Pyramid bundles: all features, one head call on the zero-padded
    sequence, NMS (returns the per-level outputs). G-TAD bundles: `localize_gtad`."""
    m = models.manifest
    if m.head_type == "gtad":
        return localize_gtad(models, frames, video, encoder_batch)
    frames = np.asarray(frames)
    g = m.grid
    n_frames = len(frames)
    n = g.count(n_frames)
    idx = g.frame_indices(0, n, n_frames)
    feats = np.concatenate(
        [models.encode(frames[idx[i : i + encoder_batch]]) for i in range(0, n, encoder_batch)]
    )
    x = np.zeros((models.padded_length(n), m.feature_dim), dtype=np.float32)
    x[:n] = feats
    cands, kept = decode_outputs(models.head(x), m, 0, n, n)
    return final_segments(cands, m, n_frames / g.fps, video), kept


class WholeVideoLocalizer:
    """`StreamLocalizer`'s interface for bundles that need the whole video (G-TAD, `resize`
    protocol): `push` keeps the frame and returns nothing; `finish` runs `localize_gtad` on every
    frame pushed and emits all the video's events at once, with emitted_at = the video's
    duration. Memory grows with the video (its frames at the bundle's input size)."""

    shares_encoder = False  # its snippets are known only at the end: it encodes them itself

    def __init__(
        self,
        models: BundleModels,
        video: str,
        encoder_batch: int = 16,
        on_event: Callable[[Segment, float], None] | None = None,
        clock: StageClock | None = None,
    ):
        self.models, self.video, self.batch = models, video, encoder_batch
        self.m = models.manifest
        self.on_event = on_event
        self.clock = clock or StageClock()
        self.frames: list[np.ndarray] = []
        self.n_frames = 0
        self.emitted: list[Segment] = []
        self.outputs: GTADArrays | None = None

    def add_frame(self, frame: np.ndarray) -> None:
        self.frames.append(frame)
        self.n_frames += 1

    def push(self, frame: np.ndarray) -> list[Segment]:
        self.add_frame(frame)
        return []

    def finish(self) -> list[Segment]:
        if self.n_frames == 0:
            return []
        with self.clock.stage("whole_video", self.m.length):
            segs, self.outputs = localize_gtad(self.models, self.frames, self.video, self.batch)
        self.frames = []
        now = self.n_frames / self.m.grid.fps
        for s in segs:
            if self.on_event:
                self.on_event(s, now)
        self.emitted = segs
        return segs

    def results(self) -> list[Segment]:
        """The video's segments (already the top `max_segments`), as `localize_offline` gives."""
        return list(self.emitted)


def make_localizer(
    models: BundleModels,
    video: str,
    encoder_batch: int = 16,
    on_event: Callable[[Segment, float], None] | None = None,
    clock: StageClock | None = None,
) -> StreamLocalizer | WholeVideoLocalizer:
    """The localizer a bundle needs: streaming (pyramid) or whole-video (G-TAD)."""
    if models.manifest.head_type == "gtad":
        return WholeVideoLocalizer(models, video, encoder_batch, on_event, clock)
    return StreamLocalizer(models, video, encoder_batch, on_event, clock=clock)


def stream_frames(
    models: BundleModels,
    frames: Iterable[np.ndarray],
    video: str,
    on_event: Callable[[Segment, float], None] | None = None,
    record: bool = False,
) -> StreamLocalizer:
    loc = StreamLocalizer(models, video, on_event=on_event, record=record)
    for f in frames:
        loc.push(f)
    loc.finish()
    return loc
