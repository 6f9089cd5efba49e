"""`lofi-stream` and `lofi-eval`."""

from __future__ import annotations

import re
import resource
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from lofi.runtime.annotations import (
    Segment,
    event_line,
    load_ground_truth,
    load_results,
    results_json,
    write_json,
)
from lofi.runtime.decode import VideoReader
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
    a second one aborts."""
    requested: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if requested:
            raise KeyboardInterrupt
        requested.append(signum)
        print("stopping: finishing the current video (again to abort)", file=sys.stderr)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(requested)
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def stream_sources(
    models: BundleModels,
    sources: list[str],
    quiet: bool = False,
    out=sys.stdout,
    stop: Callable[[], bool] = lambda: False,
    min_score: float = 0.0,
) -> tuple[dict[str, list[Segment]], dict]:
    """Stream each source in turn, printing events (score >= `min_score`; the results keep all)
    as they become final. When `stop()` turns true the current source ends there (its pending
    events are flushed) and no other starts. A G-TAD bundle localizes each whole video when it
    ends and prints its events then (emitted_at = the video's duration)."""
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
    }
    t0 = time.perf_counter()
    for source in sources:
        if stop():
            stats["stopped_early"] = True
            break
        vid = _video_id(source)

        def on_event(seg: Segment, now: float) -> None:
            stats["events"] += 1
            if not quiet and seg.score >= min_score:
                print(event_line(seg, now), file=out, flush=True)

        reader = VideoReader(source, m.grid.fps, (m.height, m.width))
        loc = make_localizer(models, vid, on_event=on_event)
        for frame in reader:
            loc.push(frame)
            if stop():
                stats["stopped_early"] = True
                break
        loc.finish()
        results[vid] = loc.results()
        stats["videos"] += 1
        stats["frames"] += reader.frames_out
        stats["video_seconds"] += reader.duration
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
@cli_errors
def stream_cli(
    sources, bundle, device, results_path, stats_path, threads, quiet, min_score
) -> None:
    """Localize actions in SOURCES (files, URLs FFmpeg can open, /dev/videoN or camera:N).

    Prints one JSON line per action as soon as it is final. Ctrl-C (or SIGTERM) ends the current
    source there, flushes its events and writes the files (exit 130); a second Ctrl-C aborts.

    A G-TAD bundle (whole-video head) reads each file to its end, then prints all its events
    (emitted_at = the video's duration); it refuses live sources (URLs, cameras).
    """
    models = BundleModels(bundle, device, threads)
    with graceful_stop() as stop:
        results, stats = stream_sources(
            models, list(sources), quiet, stop=stop, min_score=min_score
        )
    if results_path:
        write_json(
            results_path,
            results_json([s for segs in results.values() for s in segs], list(results)),
        )
    if stats_path:
        write_json(stats_path, stats)
    print(
        f"streamed {stats['videos']} video(s), {stats['video_seconds']:.1f} s at "
        f"{stats['realtime_factor']}x real time, {stats['events']} events"
        + (" (stopped early)" if stats["stopped_early"] else ""),
        file=sys.stderr,
    )
    if stats["stopped_early"]:
        sys.exit(130)


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
