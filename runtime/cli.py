"""`lofi-stream` and `lofi-eval`."""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import click
from lofi.runtime.annotations import (
    Segment,
    event_line,
    load_ground_truth,
    load_results,
    results_json,
    write_json,
)
from lofi.runtime.decode import READ_TIMEOUT, VideoReader, blocked_readers, prefetch
from lofi.runtime.errors import LofiError, cli_errors
from lofi.runtime.evaluation import evaluate, parse_tiou
from lofi.runtime.models import DEVICES, BundleModels
from lofi.runtime.streaming import make_localizer


def _video_id(source: str) -> str:
    return Path(source).stem if "://" not in source else source.rstrip("/").rsplit("/", 1)[-1]


def is_live(source: str) -> bool:
    """A URL (rtsp://, http://, ...) or a camera: a source that need not end. Only local files
    (and file:// URLs) are known to be whole videos."""
    if re.fullmatch(r"camera:\d+", source) or source.startswith("/dev/video"):
        return True
    return bool(re.match(r"^[a-z][a-z0-9+.-]*://", source, re.IGNORECASE)) and not (
        source.lower().startswith("file://")
    )


def check_sources(models: BundleModels, sources: list[str]) -> None:
    """G-TAD bundles need the whole video before the first snippet is known: refuse a live
    source up front (one line) rather than buffering an endless stream."""
    if models.manifest.head_type != "gtad":
        return
    for source in sources:
        if is_live(source):
            raise LofiError(
                f"{source}: a G-TAD bundle needs the whole video (resize protocol) and cannot "
                "run on a live source; stream it with a pyramid-head bundle"
            )


@contextmanager
def graceful_stop() -> Iterator[Callable[[], bool]]:
    """The first SIGINT/SIGTERM asks the stream to end as if the video had ended there, so a live
    stream stopped by Ctrl-C or a service manager still flushes its events and writes its files;
    a second one aborts at once (exit 130).

    Python runs signal handlers only between bytecodes, which never come while the main thread
    waits inside FFmpeg or an inference call. So the signals are also counted by a thread woken
    through `signal.set_wakeup_fd`, written by the C-level handler the moment a signal lands."""
    requested = threading.Event()
    r, w = socket.socketpair()
    w.setblocking(False)

    def handler(signum: int, frame: object) -> None:
        requested.set()

    def watch() -> None:
        count = 0
        while True:
            try:
                got = r.recv(16)
            except OSError:
                return
            if not got:
                return
            count += len(got)
            if count == 1:
                requested.set()
                print("stopping: finishing the current video (again to abort)", file=sys.stderr)
            else:
                print("error: aborted", file=sys.stderr, flush=True)
                os._exit(130)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    old_fd = signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
    watcher = threading.Thread(target=watch, daemon=True, name="lofi-signals")
    watcher.start()
    try:
        yield requested.is_set
    finally:
        signal.set_wakeup_fd(old_fd)
        for sig, h in previous.items():
            signal.signal(sig, h)
        w.close()
        watcher.join(timeout=1.0)
        r.close()


def _reason(exc: BaseException, source: str) -> str:
    """One line naming the source, whatever the error's own message says."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if source in msg else f"{source}: {msg}"


def stream_sources(
    models: BundleModels,
    sources: list[str],
    quiet: bool = False,
    out=sys.stdout,
    stop: Callable[[], bool] = lambda: False,
    min_score: float = 0.0,
    timeout: float = READ_TIMEOUT,
    err=sys.stderr,
) -> tuple[dict[str, list[Segment]], dict]:
    """Stream each source in turn, printing events (score >= `min_score`; the results keep all)
    as they become final. When `stop()` turns true the current source ends there (its pending
    events are flushed) and no other starts. A G-TAD bundle localizes each whole video when it
    ends and prints its events then (emitted_at = the video's duration).

    Sources fail alone: one that cannot be opened (or fails in the localizer) gets an `error:`
    line on `err` and no results; one that stalls for `timeout` seconds or stops decoding
    part-way gets a `warning:` line and keeps the events it had, marked `cut_short`. Both are
    listed in the stats' `sources`, and the other sources run as usual."""
    m = models.manifest
    check_sources(models, sources)
    results: dict[str, list[Segment]] = {}
    stats = {
        "videos": 0,
        "frames": 0,
        "video_seconds": 0.0,
        "wall_seconds": 0.0,
        "events": 0,
        "stopped_early": False,  # set when stop() ends the run before the sources do
        "failed": 0,  # sources that could not be opened or failed in the localizer
        "cut_short": 0,  # sources that stalled or stopped decoding before their end
        "sources": [],  # per source: status ok | cut_short | stopped | failed, and why
    }
    t0 = time.perf_counter()
    for source in sources:
        if stop():
            stats["stopped_early"] = True
            break
        vid = _video_id(source)
        record: dict = {"source": source, "video": vid, "status": "ok"}
        stats["sources"].append(record)
        events = 0

        def on_event(seg: Segment, now: float) -> None:
            nonlocal events
            events += 1
            if not quiet and seg.score >= min_score:
                print(event_line(seg, now), file=out, flush=True)

        reader = VideoReader(source, m.grid.fps, (m.height, m.width), timeout)
        frames = prefetch(reader, stop) if is_live(source) else reader
        n_frames, stopped = 0, False
        try:
            loc = make_localizer(models, vid, on_event=on_event)
            for frame in frames:
                loc.push(frame)
                n_frames += 1
                if stop():
                    stopped = True
                    break
            if stopped or (frames is not reader and stop()):
                stats["stopped_early"] = True
                record["status"] = "stopped"
            loc.finish()
        except (LofiError, OSError, av.FFmpegError) as exc:
            record.update(status="failed", reason=_reason(exc, source), seconds=0.0, events=events)
            stats["failed"] += 1
            stats["events"] += events
            print(f"error: {record['reason']}", file=err, flush=True)
            continue
        seconds = n_frames / m.grid.fps
        if reader.cut_short and record["status"] == "ok":
            record.update(status="cut_short", reason=reader.cut_short)
            stats["cut_short"] += 1
            print(
                f"warning: {source}: cut short after {seconds:.1f} s ({reader.cut_short}); "
                "its events up to there are kept",
                file=err,
                flush=True,
            )
        record.update(seconds=round(seconds, 3), events=events)
        results[vid] = loc.results()
        stats["videos"] += 1
        stats["events"] += events
        stats["frames"] += n_frames
        stats["video_seconds"] += seconds
    wall = time.perf_counter() - t0
    stats["wall_seconds"] = round(wall, 3)
    stats["realtime_factor"] = round(stats["video_seconds"] / max(wall, 1e-9), 2)
    stats["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return results, stats


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--bundle", required=True, type=click.Path(), help="Bundle folder from lofi-export.")
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True)
@click.option(
    "--results", "results_path", type=click.Path(), help="Write an ActivityNet results file."
)
@click.option(
    "--stats", "stats_path", type=click.Path(), help="Write throughput/memory stats (JSON)."
)
@click.option("--threads", type=int, default=0, help="Intra-op threads (0: library default).")
@click.option("--quiet", is_flag=True, help="Do not print event lines.")
@click.option(
    "--min-score",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Print only events scoring at least this (--results keeps every segment).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=READ_TIMEOUT,
    show_default=True,
    help="Seconds without data before a source counts as stalled (it then ends, cut short).",
)
@cli_errors
def stream_cli(
    sources, bundle, device, results_path, stats_path, threads, quiet, min_score, timeout
) -> None:
    """Localize actions in SOURCES (files, URLs FFmpeg can open, /dev/videoN or camera:N).

    Prints one JSON line per action as soon as it is final. Ctrl-C (or SIGTERM) ends the current
    source there, flushes its events and writes the files (exit 130); a second Ctrl-C aborts at
    once, writing nothing more.

    Sources fail alone: one that cannot be opened gets an `error:` line, one that stalls for
    --timeout seconds or stops decoding part-way a `warning:` line (its events up to there are
    kept); the others' events, results and stats are still written. Exit status: 0 when every
    source ran to its end, 1 when one failed or was cut short (the stats' `sources` say which),
    130 when stopped by a signal.

    A G-TAD bundle (whole-video head) reads each file to its end, then prints all its events
    (emitted_at = the video's duration); it refuses live sources (URLs, cameras).
    """
    models = BundleModels(bundle, device, threads)
    with graceful_stop() as stop:
        results, stats = stream_sources(
            models, list(sources), quiet, stop=stop, min_score=min_score, timeout=timeout
        )
    if results_path:
        write_json(
            results_path,
            results_json([s for segs in results.values() for s in segs], list(results)),
        )
    if stats_path:
        write_json(stats_path, stats)
    if stats["videos"]:
        problems = [
            f"{stats[k]} {k.replace('_', ' ')}" for k in ("failed", "cut_short") if stats[k]
        ]
        print(
            f"streamed {stats['videos']} video(s), {stats['video_seconds']:.1f} s at "
            f"{stats['realtime_factor']}x real time, {stats['events']} events"
            + (" (stopped early)" if stats["stopped_early"] else "")
            + (f"; {', '.join(problems)}" if problems else ""),
            file=sys.stderr,
        )
    status = 130 if stats["stopped_early"] else 1 if stats["failed"] or stats["cut_short"] else 0
    if blocked_readers():
        # a reader thread still waits inside FFmpeg on a stalled source: leave without the
        # interpreter's shutdown, which would tear modules down under it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


@click.command()
@click.option(
    "--ground-truth", "gt_path", required=True, type=click.Path(), help="ActivityNet JSON."
)
@click.option("--predictions", "pred_path", required=True, type=click.Path(), help="Results JSON.")
@click.option(
    "--tiou", default="anet", show_default=True, help="'anet', 'thumos' or e.g. 0.3,0.5,0.7."
)
@click.option("--subset", default="validation", show_default=True)
@click.option("--json", "json_path", type=click.Path(), help="Write the mAP report as JSON.")
@click.option("--plot", "plot_path", type=click.Path(), help="Write a timeline plot (PNG).")
@cli_errors
def eval_cli(gt_path, pred_path, tiou, subset, json_path, plot_path) -> None:
    """Detection mAP with the ActivityNet protocol."""
    gt = load_ground_truth(gt_path).subset(subset)
    preds = load_results(pred_path)
    report = evaluate(gt, preds, parse_tiou(tiou))
    click.echo(report.table())
    for label, aps in report.per_class.items():
        click.echo(f"  {label:<20} avg AP {100 * sum(aps) / len(aps):6.2f}")
    if json_path:
        write_json(json_path, report.as_json())
    if plot_path:
        from lofi.runtime.plots import plot_timelines

        plot_timelines(gt, preds, Path(plot_path))
