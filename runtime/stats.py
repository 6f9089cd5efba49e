"""What a streaming run reports: time per stage, event latency, queue depths, a status line.

Everything here is bounded: a stream that runs for weeks keeps a fixed-size sample of its event
latencies and a fixed-size ring of frame arrival times, never a list that grows with the video.
"""

from __future__ import annotations

import math
import random
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import numpy as np


class StageClock:
    """Seconds and item counts per pipeline stage (encoder, head, postprocess, ...)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.items: dict[str, int] = {}
        self.calls: dict[str, int] = {}

    @contextmanager
    def stage(self, name: str, items: int = 1) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0, items)

    def add(self, name: str, seconds: float, items: int, calls: int = 1) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.items[name] = self.items.get(name, 0) + items
        self.calls[name] = self.calls.get(name, 0) + calls

    def report(self, units: dict[str, str]) -> dict:
        """Per stage: busy seconds, calls, items and items per busy second."""
        return {
            name: {
                "seconds": round(sec, 3),
                "calls": self.calls[name],
                units.get(name, "items"): self.items[name],
                f"{units.get(name, 'items')}_per_second": round(self.items[name] / sec, 1)
                if sec > 0
                else None,
            }
            for name, sec in self.seconds.items()
        }


class Reservoir:
    """A uniform sample of at most `size` values (fixed seed) and the exact maximum and count:
    percentiles of an endless stream in constant memory."""

    def __init__(self, size: int = 10000, seed: int = 0) -> None:
        self.size, self.values, self.count, self.max = size, [], 0, -math.inf
        self.rng = random.Random(seed)

    def add(self, x: float) -> None:
        self.count += 1
        self.max = max(self.max, x)
        if len(self.values) < self.size:
            self.values.append(x)
        else:
            j = self.rng.randrange(self.count)
            if j < self.size:
                self.values[j] = x

    def summary(self) -> dict:
        if not self.values:
            return {"count": 0, "p50": None, "p95": None, "max": None}
        p50, p95 = np.percentile(self.values, [50, 95])
        return {
            "count": self.count,
            "p50": round(float(p50), 4),
            "p95": round(float(p95), 4),
            "max": round(self.max, 4),
        }


class ArrivalClock:
    """Wall-clock arrival time of each frame of one stream, in a ring of `size` frames. A frame
    older than the ring reports the oldest time kept (an event's latency is then a lower bound)."""

    def __init__(self, size: int = 1 << 16) -> None:
        self.times = np.zeros(size)
        self.n = 0

    def add(self, t: float) -> None:
        self.times[self.n % len(self.times)] = t
        self.n += 1

    def time_of(self, frame: int) -> float:
        frame = min(max(frame, self.n - len(self.times), 0), self.n - 1)
        return float(self.times[frame % len(self.times)])


class Gauge:
    """Mean and maximum of a sampled level (a queue's depth)."""

    def __init__(self) -> None:
        self.total, self.samples, self.max = 0.0, 0, 0

    def add(self, x: int) -> None:
        self.total += x
        self.samples += 1
        self.max = max(self.max, x)

    def summary(self) -> dict:
        mean = self.total / self.samples if self.samples else 0.0
        return {"mean": round(mean, 2), "max": self.max}


def peak_rss_mib() -> float:
    """This process's peak resident memory. Linux's VmHWM belongs to the process's own address
    space; `ru_maxrss` would also count a parent's memory held when it forked this process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class StatusLine:
    """One line rewritten in place on a terminal (never on a pipe or a log file, which would fill
    with carriage returns), at most every `every` seconds."""

    def __init__(self, out: TextIO, every: float = 0.5) -> None:
        isatty = getattr(out, "isatty", None)
        self.out, self.every = out, every
        self.enabled = bool(isatty and isatty())
        self.last, self.width = 0.0, 0

    def show(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < self.every):
            return
        self.last = now
        pad = max(self.width - len(text), 0)
        self.width = len(text)
        self.out.write("\r" + text + " " * pad)
        self.out.flush()

    def clear(self) -> None:
        if self.enabled and self.width:
            self.out.write("\r" + " " * self.width + "\r")
            self.out.flush()
            self.width = 0


def bar(fraction: float, width: int = 20) -> str:
    done = int(round(min(max(fraction, 0.0), 1.0) * width))
    return "[" + "#" * done + "-" * (width - done) + f"] {100 * fraction:3.0f}%"
