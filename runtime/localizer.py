"""The Python API: `Localizer(bundle).stream(source)` / `.run(source)`, the same pipeline as
`lofi-stream` (a decode thread, batched encoder calls, the exact finaliser) without the CLI."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lofi.runtime.annotations import Segment
from lofi.runtime.decode import READ_TIMEOUT
from lofi.runtime.errors import LofiError
from lofi.runtime.pipeline import Options, Pipeline, planned_models


@dataclass(frozen=True)
class Event:
    """One finished action: times in seconds of the stream; `emitted_at` is the stream time
    when it became final, `latency` the wall-clock seconds from its last frame's arrival."""

    video: str
    label: str
    score: float
    start: float
    end: float
    emitted_at: float
    latency: float


class Localizer:
    """A bundle loaded once, run on any number of sources (files, URLs, cameras).

    `device`: cpu, cuda, ort-trt or trt, as `lofi-stream --device`; `decode`: cpu, nvdec or
    auto, as `lofi-stream --decode`. A source that cannot be opened or fails raises `LofiError`;
    a damaged or cut-short one warns (`RuntimeWarning`) and keeps what could be read. `threads`
    and `encoder_batch` at 0 are chosen for the device (`pipeline.plan`). `stats` holds the last
    run's stats (as `lofi-stream --stats`)."""

    def __init__(
        self,
        bundle: str | Path,
        device: str = "cpu",
        threads: int = 0,
        encoder_batch: int = 0,
        timeout: float = READ_TIMEOUT,
        decode: str = "cpu",
    ) -> None:
        self.models = planned_models(bundle, device, threads)
        self.options = Options(encoder_batch=encoder_batch, timeout=timeout, decode=decode)
        self.stats: dict = {}

    @property
    def labels(self) -> list[str]:
        return list(self.models.manifest.labels)

    def stream(self, source: str | Path) -> Iterator[Event]:
        """Events of `source` as they become final (before the video ends, for pyramid heads)."""
        pending: list[Event] = []
        failure: list[str] = []

        def on_event(seg: Segment, now: float, latency: float) -> None:
            pending.append(Event(seg.video, seg.label, seg.score, seg.start, seg.end, now, latency))

        pipe = Pipeline(
            self.models,
            [str(source)],
            on_event,
            self.options,
            error=failure.append,
            warn=lambda line: warnings.warn(line, RuntimeWarning, stacklevel=3),
        )
        try:
            while pipe.step():
                yield from pending
                pending.clear()
            yield from pending
        finally:
            pipe.close()
            self.stats = pipe.stats()
        if failure:
            raise LofiError(failure[0])

    def run(self, source: str | Path) -> list[Segment]:
        """All segments of `source`: the per-video top `max_segments`, as offline inference
        keeps (exactly equal to it)."""
        pending: list[str] = []
        pipe = Pipeline(
            self.models,
            [str(source)],
            options=self.options,
            error=pending.append,
            warn=lambda line: warnings.warn(line, RuntimeWarning, stacklevel=3),
        )
        try:
            pipe.run()
        finally:
            pipe.close()
            self.stats = pipe.stats()
        if pending:
            raise LofiError(pending[0])
        (segments,) = pipe.results.values()
        return segments
