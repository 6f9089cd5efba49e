"""Timestamps are not trusted: the one rule that places decoded frames on a video's timeline.

A container's timestamps may jump by hours, go backwards, restart at 0 (concatenated MPEG-TS)
or, after a reconnect, repeat what was already shown. Sampling frames by timestamp would repeat
the frame before a forward jump for the whole jump (one 6.8 KB file became 80,000 frames) and
drop every frame after a backward one. So a jump beyond a bound is a discontinuity: the timeline
goes on right after the previous frame, nothing is filled across it, and the jump is counted so
the reader reports the source as damaged. A reconnected live source's frames at or before where
the last connection ended are dropped when they are a replay (its first frame is a key frame
whose pixels match the key frame shown at that time), and go on as a new connection when the
source restarted its clock (RTSP restarts at 0). Both `lofi-stream` and `lofi-data prepare` read
through `decode.VideoReader`, so both follow this rule.

Also the physical bounds of the numbers a container announces (sizes, rates, durations, time
bases): a header may lie, and nothing it says may set how much work is done."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# A frame more than this many seconds after the end of the one before is a discontinuity, not a
# frame held on screen: FFmpeg's own threshold (its `dts_delta_threshold`, 10 s).
MAX_GAP = 10.0
# key frames remembered per live source to recognise a replay (at one key frame every 0.5 s,
# the last 14 hours); older ones are forgotten, and a replay of them is shown again
MAX_KEYS = 100_000
# A decoder outputs frames in presentation order; a step back of more than a frame is broken.
JITTER = 1e-3

MAX_SIDE = 16384  # pixels a side (FFmpeg's decoders and scaler stop near here)
MAX_RATE = 10_000.0  # frames per second (high-speed cameras stay below)
MAX_SECONDS = 1e6  # a duration a header may announce (11.6 days)
MAX_TICK = 1000.0  # seconds in one time-base tick


@dataclass
class Jump:
    """A discontinuity: at `at` seconds of the output, the source's clock went from `before` to
    `after` seconds (the first frame's jump is from the stream's start time)."""

    at: float
    before: float
    after: float


class Shown:
    """What the connections to one live source have shown: the source time of the last frame
    placed, and a fingerprint of each key frame by its source time."""

    def __init__(self) -> None:
        self.last: float | None = None
        self.keys: OrderedDict[float, bytes] = OrderedDict()

    def remember(self, raw: float, fingerprint: bytes | None) -> None:
        self.last = raw
        if fingerprint is not None:
            self.keys[raw] = fingerprint
            if len(self.keys) > MAX_KEYS:
                self.keys.popitem(last=False)

    def replays(self, raw: float, fingerprint: bytes | None) -> bool:
        """Whether a frame at `raw` is the key frame already shown at that time."""
        return fingerprint is not None and self.keys.get(raw) == fingerprint


class Timeline:
    """Places frames given in source seconds onto the output timeline (seconds from 0).

    `origin`: the stream's start time (None: the first frame's time). `shown`: what earlier
    connections to the same live source showed; when this connection's first frame is one of
    them, every frame up to where they ended is dropped as a replay. `place` returns the frame's
    output time, or None for a dropped replay."""

    def __init__(self, origin: float | None = None, shown: Shown | None = None) -> None:
        self.origin = origin
        self.shown = shown
        self.checked = shown is None or shown.last is None  # whether the first frame was seen
        self.dropping = False
        self.shift = 0.0  # seconds taken out of the source's clock by discontinuities
        self.start: float | None = None  # output time of the last placed frame
        self.length = 0.0  # its duration
        self.last: float | None = None  # its source time
        self.jumps: list[Jump] = []
        self.replayed = 0

    @property
    def end(self) -> float:
        """Output time where the last placed frame leaves the screen."""
        return 0.0 if self.start is None else self.start + self.length

    def place(
        self,
        raw: float,
        duration: float,
        allowance: float = 0.0,
        fingerprint: Callable[[], bytes | None] = lambda: None,
    ) -> float | None:
        """Output time of a frame at source time `raw` lasting `duration` seconds. `allowance`:
        seconds a forward gap may also span because packets were skipped before this frame (a
        corrupt stretch keeps time aligned: the previous frame stays on screen over it).
        `fingerprint`: the frame's, for a key frame (None otherwise), asked only where needed."""
        shown = self.shown
        if not self.checked:
            self.checked = True
            self.dropping = raw <= shown.last and shown.replays(raw, fingerprint())
        if self.dropping and raw <= shown.last:
            self.replayed += 1
            return None
        self.dropping = False
        if self.origin is None:
            self.origin = raw
        t = raw - self.origin - self.shift
        if self.start is None:
            broken, to = abs(t) > MAX_GAP, 0.0
        else:
            back = t < self.start - max(self.length, JITTER)
            broken, to = back or t - self.end > MAX_GAP + allowance, self.end
        if broken:
            before = self.origin if self.last is None else self.last
            self.jumps.append(Jump(round(to, 3), before, raw))
            self.shift += t - to
            t = to
        self.start, self.length, self.last = t, duration, raw
        if shown is not None:
            shown.remember(raw, fingerprint())
        return t

    def describe(self) -> str | None:
        """The jumps as one clause of a warning line (None without any)."""
        return jumps_clause(len(self.jumps), self.jumps[0]) if self.jumps else None


def jumps_clause(count: int, first: Jump, of: str = "") -> str:
    """`count` discontinuities as one clause of a warning line, `first` described (`of` follows
    its output time, e.g. ' of a connection')."""
    return (
        f"timestamps jump {count} time(s) (first at {first.at:.1f} s{of}: from "
        f"{first.before:.1f} s to {first.after:.1f} s); the timeline goes on without "
        "filling the gap"
    )


def frame_seconds(seconds: float | None, rate: float | None) -> float:
    """A frame's duration: its own when it is within (0, MAX_GAP], else one period of the
    stream's rate when that is a physical rate, else 0 (the next frame's time decides)."""
    if seconds is not None and math.isfinite(seconds) and 0 < seconds <= MAX_GAP:
        return seconds
    if rate is not None and math.isfinite(rate) and 0 < rate <= MAX_RATE:
        return min(1.0 / rate, MAX_GAP)
    return 0.0


def header_problem(width: int, height: int, time_base: float | None) -> str | None:
    """Why a stream's header cannot be decoded as it is (one clause), or None. A size of 0 is
    one the header does not give (the decoder finds it)."""
    if not (0 <= width <= MAX_SIDE and 0 <= height <= MAX_SIDE):
        return f"frame size {width}x{height}: expected at most {MAX_SIDE} pixels a side"
    if time_base is None or not (0 < time_base <= MAX_TICK):
        return f"time base {time_base}: expected a positive tick of at most {MAX_TICK:g} s"
    return None


def announced_seconds(seconds: float) -> tuple[float, str | None]:
    """A header's announced duration, or 0 and why it is not believed."""
    if math.isfinite(seconds) and 0 <= seconds <= MAX_SECONDS:
        return seconds, None
    return 0.0, f"the header announces {seconds:.6g} s (at most {MAX_SECONDS:g} s): not believed"
