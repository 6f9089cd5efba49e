"""`lofi-demo`: the whole pipeline on Synth-TAL, CPU by default.

It lives in `export` because that package sits at the top of the dependency graph (it may import
both `trainer` and `runtime`), and the demo needs all of them.
"""

from __future__ import annotations

import json
import sys
import time
from importlib.resources import files
from pathlib import Path

import click
from lofi.runtime.annotations import Segment, load_ground_truth, results_json
from lofi.runtime.bounds import SEED, Number
from lofi.runtime.decode import read_video
from lofi.runtime.errors import cli_errors
from lofi.runtime.evaluation import TIOU_PRESETS, evaluate
from lofi.runtime.outputs import write_json
from lofi.runtime.pipeline import planned_models, stream_sources
from lofi.runtime.plots import plot_timelines
from lofi.runtime.streaming import localize_offline
from lofi.trainer.config import overrides_once

CONFIG = Path(str(files("lofi.configs") / "demo.yaml"))


def whole_video_baseline(gt) -> list[Segment]:
    """One segment covering the whole video per class per video (score 0.5): the trivial floor."""
    return [
        Segment(v, lab, 0.0, info.duration, 0.5)
        for v, info in gt.videos.items()
        for lab in gt.labels
    ]


def _step(name: str, t0: float) -> None:
    click.echo(f"[{time.perf_counter() - t0:6.1f}s] {name}", err=True)


@click.command()
@click.option("--out", default="lofi-demo-out", show_default=True, type=click.Path(file_okay=False))
@click.option(
    "--config",
    "config_path",
    type=click.Path(),
    help="Training config (default: configs/demo.yaml).",
)
@click.option("--seed", type=Number(SEED), default=0, show_default=True)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    callback=overrides_once,
    help="Config override, e.g. --set lofi.epochs=2 (each key once; applied after --small's).",
)
@click.option("--small", is_flag=True, help="A tiny benchmark and short training (smoke test).")
@cli_errors
def main(out, config_path, seed, overrides, small) -> None:
    """Synth-TAL -> pretrain -> LoFi (long cycle) -> head -> export -> stream -> evaluate."""
    from lofi.export.bundle_writer import export_bundle
    from lofi.trainer.config import load_config
    from lofi.trainer.data import prepare_cache
    from lofi.trainer.progress import progress
    from lofi.trainer.stages import RUNNERS
    from lofi.trainer.synth import SynthConfig, generate

    t0 = time.perf_counter()
    out = Path(out)
    syn = out / "synth"
    sc = SynthConfig(seed=seed)
    if small:
        sc = SynthConfig(
            train_videos=6,
            val_videos=3,
            clips_per_class=6,
            min_duration=12,
            max_duration=20,
            seed=seed,
        )
    if not (syn / "annotations.json").is_file():
        _step("rendering Synth-TAL", t0)
        with progress("synth") as update:
            generate(syn, sc, update)
        _step("decoding to the frame cache", t0)
        size = (sc.height, sc.width)
        with progress("decode videos") as update:
            prepare_cache(
                syn / "annotations.json", syn / "videos", syn / "cache", sc.fps, size, update
            )
        with progress("decode clips") as update:
            prepare_cache(
                syn / "clips.json", syn / "clips", syn / "clip_cache", sc.fps, size, update
            )
    paths = [
        f"data.annotations={syn / 'annotations.json'}",
        f"data.cache={syn / 'cache'}",
        f"data.clips={syn / 'clips.json'}",
        f"data.clip_cache={syn / 'clip_cache'}",
        f"seed={seed}",
    ]
    runs = out / "runs"
    chain = [
        f"lofi.init={runs / 'pretrain' / 'checkpoint.pt'}",
        f"head.init={runs / 'lofi' / 'checkpoint.pt'}",
    ]
    # enough head epochs for detections to pass the score threshold, so stream vs offline is tested
    quick = ["pretrain.epochs=1", "lofi.epochs=1", "head.epochs=30"] if small else []
    cfg = load_config(config_path or CONFIG, paths + chain + quick + list(overrides))
    for stage in ("pretrain", "lofi", "head"):
        _step(f"training stage '{stage}'", t0)
        RUNNERS[stage](cfg, runs / stage)
    _step("exporting the bundle (ONNX + parity check)", t0)
    bundle, parity = export_bundle(runs / "head" / "checkpoint.pt", out / "bundle")
    _step("streaming the validation videos through the bundle", t0)
    gt = load_ground_truth(syn / "annotations.json")
    val = gt.subset("validation")
    sources = [str(syn / "videos" / f"{v}.mp4") for v in val.videos]
    models = planned_models(bundle)
    with open(out / "events.jsonl", "w") as events:
        results, stats = stream_sources(models, sources, out=events)
    preds = [s for segs in results.values() for s in segs]
    _step("whole-video (offline) inference of the same bundle, for comparison", t0)
    m = models.manifest
    offline = [
        seg
        for v, src in zip(val.videos, sources)
        for seg in localize_offline(models, read_video(src, m.grid.fps, (m.height, m.width)), v)[0]
    ]
    write_json(out / "results.json", "results", results_json(preds, list(results)))
    write_json(out / "stream_stats.json", "stream stats", stats)
    baseline = whole_video_baseline(val)
    write_json(out / "baseline_results.json", "baseline results", results_json(baseline))
    tious = TIOU_PRESETS["anet"]
    model_report = evaluate(val, preds, tious)
    base_report = evaluate(val, baseline, tious)
    offline_report = evaluate(val, offline, tious)
    train_report = json.loads((runs / "head" / "metrics.json").read_text()).get("validation")
    write_json(
        out / "report.json",
        "report",
        {
            "model": model_report.as_json(),
            "baseline": base_report.as_json(),
            "bundle_offline": offline_report.as_json(),
            "pytorch_offline": train_report,
            "stream": stats,
            "parity": parity,
        },
    )
    plot_timelines(val, preds, out / "timeline.png")
    _step("done", t0)
    click.echo("\nSynth-TAL validation, ActivityNet protocol (mAP %):")
    click.echo(model_report.table("LoFi stream"))
    click.echo(offline_report.table("offline").split("\n", 1)[1])
    click.echo(base_report.table("baseline").split("\n", 1)[1])
    click.echo(
        f"\nstreamed {stats['video_seconds']:.0f} s of video at {stats['realtime_factor']}x real time on "
        f"the CPU; {stats['events']} events"
    )
    click.echo(
        f"outputs in {out}/: bundle/, runs/{{pretrain,lofi,head}}/, results.json, events.jsonl, "
        f"report.json, timeline.png"
    )
    sys.stdout.flush()
