"""`lofi-stream` and `lofi-eval`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from lofi.runtime.annotations import load_ground_truth, load_results, results_json
from lofi.runtime.bounds import COUNT, FRACTION, PLANNED, TIMEOUT, WORKERS, Number
from lofi.runtime.decode import DECODERS, READ_TIMEOUT, blocked_readers
from lofi.runtime.errors import cli_errors, working_on
from lofi.runtime.evaluation import evaluate, parse_tiou
from lofi.runtime.models import DEVICES
from lofi.runtime.outputs import check_outputs, json_writer, named, write_each
from lofi.runtime.pipeline import Options, distinct_ids, planned_models, stream_sources
from lofi.runtime.signals import graceful_stop
from lofi.runtime.sources import expand_sources, is_live

__all__ = ["eval_cli", "graceful_stop", "stream_cli"]


def planned_count(name: str, help: str):
    """A count option whose 0 leaves the choice to the runtime's plan (`pipeline.plan`)."""
    return click.option(name, type=Number(PLANNED), default=0, help=help)


def source_files(items: list[str]) -> list[tuple[str, str]]:
    """The source lists (`@LIST`) among the items: inputs no output may overwrite."""
    return [("source list", item[1:]) for item in items if item.startswith("@")]


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--bundle", required=True, type=click.Path(), help="Bundle folder from lofi-export.")
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True)
@click.option(
    "--results", "results_path", type=click.Path(), help="Write an ActivityNet results file."
)
@click.option(
    "--stats",
    "stats_path",
    type=click.Path(),
    help="Write stats (JSON): per-stage throughput, latency, queues, memory, per source.",
)
@planned_count(
    "--threads",
    "ONNX Runtime intra-op threads per encoder call (0: 1 on the CPU, calls running at once "
    "instead; ONNX Runtime's default on a GPU).",
)
@planned_count(
    "--workers",
    "Encoder calls running at once (0: on the CPU, one per core the decode threads leave, or "
    "one per core where the sources are at least as many; 1 on a GPU).",
)
@click.option(
    "--spin/--no-spin",
    default=False,
    show_default=True,
    help="Let ONNX Runtime's idle worker threads spin (off: they leave the cores to decoding).",
)
@click.option("--quiet", is_flag=True, help="Do not print event lines.")
@click.option(
    "--min-score",
    type=Number(FRACTION),
    default=0.0,
    show_default=True,
    help="Print only events scoring at least this (--results keeps every segment).",
)
@click.option(
    "--timeout",
    type=Number(TIMEOUT),
    default=READ_TIMEOUT,
    show_default=True,
    help="Seconds without data before a source counts as stalled (a live one is then "
    "reopened, see --reconnect; else it ends, cut short).",
)
@click.option(
    "--open-timeout",
    type=Number(TIMEOUT),
    default=None,
    help="Seconds to open a source before it fails (default: --timeout).",
)
@click.option(
    "--reconnect",
    type=Number(COUNT),
    default=5,
    show_default=True,
    help="Reopen tries when a live source drops (backoff 0.5 s doubling to 8 s); 0: never.",
)
@click.option(
    "--parallel",
    type=Number(WORKERS),
    default=1,
    show_default=True,
    help="Sources decoded and localized at once, their snippets sharing encoder calls.",
)
@planned_count(
    "--batch",
    "Snippets per encoder call at most (0: 4 on a CPU the decoders keep busy, where they "
    "stay in cache; 16 on a CPU with cores to spare, and on a GPU).",
)
@click.option(
    "--decode",
    type=click.Choice(DECODERS),
    default="cpu",
    show_default=True,
    help="Video decoding: cpu; nvdec (the GPU's NVDEC: files through PyNvVideoCodec when it "
    "is installed, else FFmpeg's CUDA hwaccel; never a silent CPU fallback); auto (files "
    "through PyNvVideoCodec when it is installed, CPU otherwise).",
)
@cli_errors
def stream_cli(
    sources,
    bundle,
    device,
    results_path,
    stats_path,
    threads,
    workers,
    spin,
    quiet,
    min_score,
    timeout,
    open_timeout,
    reconnect,
    parallel,
    batch,
    decode,
) -> None:
    """Localize actions in SOURCES: files, URLs FFmpeg can open, /dev/videoN or camera:N, a
    folder (its videos) or @LIST (a file naming one source per line).

    Prints one JSON line per action as soon as it is final. With --parallel N, N sources are
    decoded on their own threads at once and their snippets share encoder calls. Ctrl-C (or
    SIGTERM) ends the running sources there, flushes their events and writes the files (exit
    130); a second Ctrl-C aborts at once, writing nothing more.

    Sources fail alone: one that cannot be opened gets an `error:` line, one that stalls for
    --timeout seconds a `warning:` line (its events up to there are kept). Corrupt packets are
    skipped and a truncated file gives the events of its readable part, with a `warning:` line.
    A live source that drops is reopened (--reconnect). Exit status: 0 when every source ran to
    its end (damaged files included), 1 when one failed or was cut short (the stats' `sources`
    say which), 130 when stopped by a signal.

    A G-TAD bundle (whole-video head) reads each file to its end, then prints all its events
    (emitted_at = the video's duration); it refuses live sources (URLs, cameras).
    """
    items = expand_sources(list(sources))
    check_outputs(
        {"--results": results_path, "--stats": stats_path},
        [*source_files(list(sources)), *(("source", s) for s in items if not is_live(s))],
        [("bundle folder", bundle)],
    )
    distinct_ids(items)
    with working_on(f"the bundle {named(bundle)}"):
        models = planned_models(bundle, device, threads, spin, parallel)
    opts = Options(
        parallel=parallel,
        encoder_batch=batch,
        encoder_workers=workers,
        timeout=timeout,
        open_timeout=open_timeout,
        reconnect=reconnect,
        decode=decode,
    )
    with graceful_stop() as stop:
        results, stats = stream_sources(
            models,
            items,
            quiet,
            stop=stop,
            min_score=min_score,
            options=opts,
        )
    segments = [s for segs in results.values() for s in segs]
    unwritten = write_each(
        [
            ("results", results_path, json_writer(results_json(segments, list(results)))),
            ("stats", stats_path, json_writer(stats)),
        ]
    )
    if stats["videos"]:
        problems = [
            f"{stats[k]} {k.replace('_', ' ')}"
            for k in ("failed", "cut_short", "damaged")
            if stats[k]
        ]
        lat = stats["latency_seconds"]
        print(
            f"streamed {stats['videos']} video(s), {stats['video_seconds']:.1f} s at "
            f"{stats['realtime_factor']}x real time, {stats['events']} events"
            + (f" (latency p50 {lat['p50']:.2f} s, p95 {lat['p95']:.2f} s)" if lat["count"] else "")
            + (" (stopped early)" if stats["stopped_early"] else "")
            + (f"; {', '.join(problems)}" if problems else ""),
            file=sys.stderr,
        )
    failed = stats["failed"] or stats["cut_short"] or unwritten
    status = 130 if stats["stopped_early"] else 1 if failed else 0
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
    """Detection mAP as the field reports it (ActivityNet or THUMOS14 thresholds), per class too."""
    check_outputs(
        {"--json": json_path, "--plot": plot_path},
        [("ground truth", gt_path), ("predictions", pred_path)],
    )
    with working_on(f"the ground truth {named(gt_path)}"):
        gt = load_ground_truth(gt_path).subset(subset)
    with working_on(f"the predictions {named(pred_path)}"):
        preds = load_results(pred_path)
        report = evaluate(gt, preds, parse_tiou(tiou))
    click.echo(report.table())
    click.echo(report.class_table())

    def plot(tmp: Path) -> None:
        from lofi.runtime.plots import plot_timelines

        plot_timelines(gt, preds, tmp)

    if write_each(
        [("report", json_path, json_writer(report.as_json())), ("plot", plot_path, plot)]
    ):
        sys.exit(1)
