"""`lofi-data` (synth, prepare) and `lofi-train` (pretrain, lofi, head)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from lofi.runtime.bounds import (
    COUNT,
    DURATION,
    FPS,
    FRACTION,
    FRAME_SIDE,
    QUALITY,
    SEED,
    WORKERS,
    Number,
    Pair,
)
from lofi.runtime.errors import LofiError, cli_errors, shown, working_on
from lofi.runtime.outputs import check_outputs, named, write_text
from lofi.runtime.signals import stop_workers_on_signal
from lofi.trainer.config import load_config, overrides_once
from lofi.trainer.data import prepare_cache
from lofi.trainer.frame_store import FORMATS
from lofi.trainer.progress import progress
from lofi.trainer.synth import SynthConfig, generate

SIZE = Pair("x", FRAME_SIDE, "HEIGHTxWIDTH")


@click.group()
def data_cli() -> None:
    """Build Synth-TAL or decode a dataset into the training frame cache."""


@data_cli.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--train-videos", type=Number(COUNT), default=64, show_default=True)
@click.option("--val-videos", type=Number(COUNT), default=24, show_default=True)
@click.option(
    "--classes",
    type=Number(COUNT),
    default=6,
    show_default=True,
    help="Untrimmed classes (pairs first).",
)
@click.option("--clip-classes", type=Number(COUNT), default=8, show_default=True)
@click.option("--clips-per-class", type=Number(COUNT), default=80, show_default=True)
@click.option("--size", type=SIZE, default="64x64", show_default=True, help="HEIGHTxWIDTH (even).")
@click.option("--fps", type=Number(FPS), default=8.0, show_default=True)
@click.option(
    "--duration",
    type=Pair(":", DURATION, "MIN:MAX"),
    default="20:50",
    show_default=True,
    help="MIN:MAX video seconds.",
)
@click.option("--seed", type=Number(SEED), default=0, show_default=True)
@click.option(
    "--difficulty",
    type=Number(FRACTION),
    default=0.5,
    show_default=True,
    help="0 (easy) .. 1 (hard).",
)
@cli_errors
def synth_cmd(
    out,
    train_videos,
    val_videos,
    classes,
    clip_classes,
    clips_per_class,
    size,
    fps,
    duration,
    seed,
    difficulty,
) -> None:
    """Write the Synth-TAL benchmark to OUT (videos/, annotations.json, clips/, clips.json)."""
    h, w = _pair(size, "x")
    lo, hi = _pair(duration, ":", float)
    cfg = SynthConfig(
        train_videos,
        val_videos,
        classes,
        clip_classes,
        clips_per_class,
        h,
        w,
        fps,
        lo,
        hi,
        seed=seed,
        difficulty=difficulty,
    )
    with progress("synth") as update, working_on(f"the benchmark folder {named(out)}"):
        paths = generate(Path(out), cfg, update)
    click.echo(f"wrote {paths['annotations']} and {paths['clips_json']}")


def _pair(text: str, sep: str, kind=int):
    """The two numbers of a value a `Pair` option type has already checked."""
    a, b = text.split(sep)
    return kind(a), kind(b)


@data_cli.command("prepare")
@click.argument("annotations", type=click.Path())
@click.argument("video_root", type=click.Path())
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--fps", type=Number(FPS), default=8.0, show_default=True)
@click.option(
    "--size",
    type=SIZE,
    default="64x64",
    show_default=True,
    help="HEIGHTxWIDTH frames are resized to.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="jpeg",
    show_default=True,
    help="jpeg: one JPEG per frame packed per video (compact); npy: raw uint8 arrays.",
)
@click.option("--quality", type=Number(QUALITY), default=90, show_default=True)
@click.option(
    "--workers",
    type=Number(WORKERS),
    default=min(8, os.cpu_count() or 1),
    show_default=True,
    help="Videos decoded at once, each in its own process.",
)
@click.option(
    "--subset",
    "subsets",
    multiple=True,
    help="Only this subset (repeat for more), e.g. --subset training --subset validation.",
)
@cli_errors
def prepare_cmd(annotations, video_root, out, fps, size, fmt, quality, workers, subsets) -> None:
    """Decode every video of ANNOTATIONS (found in VIDEO_ROOT) into the frame cache OUT.

    Frames are stored as one JPEG each, packed in one file per video (about a tenth of raw
    uint8 arrays at quality 90; --format npy keeps the arrays), and decoded by --workers
    processes at once. The last line gives the cache's size and hours of video.

    A missing, unreadable or partly decodable video gets an `error:` line and is left out (the
    index lists it under `skipped`); the others are still cached. The index is written as the
    work goes, so running the command again continues where it stopped. Exit status 1 when a
    video was left out.
    """
    h, w = _pair(size, "x")
    # the cache's index (and its temp file) must not be the annotation file
    index = Path(out) / "index.json"
    check_outputs(
        {"OUT's index": index, "OUT's index (temp)": index.with_suffix(".json.tmp")},
        [("annotation file", annotations)],
    )

    def on_skip(vid: str, reason: str) -> None:
        click.echo(f"error: skipped video {shown(vid)}: {reason}", err=True)

    with (
        stop_workers_on_signal(),
        progress("decode") as update,
        working_on(f"the frame cache {named(out)}"),
    ):
        report = prepare_cache(
            Path(annotations),
            Path(video_root),
            Path(out),
            fps,
            (h, w),
            update,
            True,
            on_skip,
            fmt,
            quality,
            workers,
            tuple(subsets),
        )
    hours = report.frames / fps / 3600
    click.echo(
        f"frame cache written to {out}: {len(report.decoded)} decoded, "
        f"{len(report.resumed)} already there, {len(report.skipped)} skipped; "
        f"{report.bytes / 2**30:.2f} GiB for {hours:.2f} h of video"
    )
    if report.skipped:
        sys.exit(1)


@data_cli.command("convert-thumos")
@click.argument("annotation_dir", type=click.Path())
@click.argument("out", type=click.Path(dir_okay=False))
@click.option(
    "--videos",
    "video_dirs",
    multiple=True,
    required=True,
    type=click.Path(),
    help="Folder of the videos (give it twice: validation and test videos); durations come "
    "from the files.",
)
@cli_errors
def convert_thumos_cmd(annotation_dir, out, video_dirs) -> None:
    """THUMOS14's official annotation files -> ActivityNet-format JSON OUT.

    ANNOTATION_DIR holds (at any depth) `<Class>_val.txt` and `<Class>_test.txt` (lines
    `video start end`) and `Ambiguous_val.txt` / `Ambiguous_test.txt`. Validation videos become
    the `training` subset and test videos `validation` (the field's convention); ambiguous spans
    are kept per video so lofi-eval ignores detections there. A video without a readable file
    gets a `warning:` line and is left out; the last line counts them.
    """
    from lofi.runtime.outputs import write_json
    from lofi.trainer.thumos import VIDEO_EXTS, convert_thumos

    readable = [("annotation file", p) for p in Path(annotation_dir).rglob("*.txt")] + [
        ("video", p)
        for d in video_dirs
        if Path(d).is_dir()
        for p in Path(d).iterdir()
        if p.suffix in VIDEO_EXTS
    ]
    check_outputs({"OUT": out}, readable)

    def on_missing(vid: str, reason: str) -> None:
        click.echo(f"warning: left out video '{vid}': {reason}", err=True)

    conv = convert_thumos(Path(annotation_dir), [Path(d) for d in video_dirs], on_missing)
    for name in conv.dropped:
        click.echo(f"warning: {name}: segment with end <= start left out", err=True)
    if conv.unknown:
        click.echo(f"warning: not THUMOS14 classes: {', '.join(conv.unknown)}", err=True)
    if not conv.database:
        raise LofiError(f"no video of {annotation_dir} was found under {', '.join(video_dirs)}")
    write_json(out, "annotation file", {"version": "THUMOS14", "database": conv.database})
    per = {
        s: sum(e["subset"] == s for e in conv.database.values()) for s in ("training", "validation")
    }
    segments = sum(len(e["annotations"]) for e in conv.database.values())
    ambiguous = sum(len(e.get("ambiguous", [])) for e in conv.database.values())
    click.echo(
        f"wrote {out}: {per['training']} training (val) and {per['validation']} validation "
        f"(test) videos, {segments} segments, {ambiguous} ambiguous spans; "
        f"{len(conv.missing)} videos missing, {conv.clipped} segments cut at the video's end"
    )


@click.group()
def train_cli() -> None:
    """Train a stage (pretrain, lofi, head) or plan the memory of one (plan).

    Under torchrun (`torchrun --nproc-per-node N -m lofi.trainer.cli lofi ...` or the
    lofi-train script) every process trains its shard of each batch; rank 0 writes the run.
    """


OPTIONS_HELP = """\b
Memory and scale options (config `train:` section or --set train.KEY=VALUE):
  precision=fp32|bf16|fp16   checkpointing=none|stages|chunks:N
  accumulate=N (micro-batches)   channels_last=true   sync_bn=true (GPUs)
  checkpoint_every=N (steps; resumable exactly with --resume)
Per stage: validate_every=N epochs, clip_grad=MAX_NORM; pretrain.source=clips (ACP) or
segments (ACP+, with pretrain.init=ACP checkpoint); lofi.schedule=full|S|T|ST|long_cycle|
short_cycle|multigrid_long|multigrid_short.
Head stage: head.schedule=cosine|halve, warmup_epochs=N, weight_decay (conv weights only),
clip_grad, ema=DECAY (0: off), crop=[0.9,1.0] (whole videos; null: fixed windows),
standardize=true. Pyramid head shape (model.*): head_dim, levels, head_embed, head_blocks,
head_residual, head_layers, head_kernel, head_norm; model.head=pyramid|gtad.
"""


def _stage_command(stage: str, help_text: str) -> None:
    @train_cli.command(stage, help=help_text, epilog=OPTIONS_HELP)
    @click.option(
        "--config", "config_path", type=click.Path(), help="YAML config (configs/*.yaml)."
    )
    @click.option(
        "--set",
        "overrides",
        multiple=True,
        callback=overrides_once,
        help="Override, e.g. --set lofi.epochs=3 (each key once).",
    )
    @click.option("--run-dir", required=True, type=click.Path(file_okay=False), help="Run folder.")
    @click.option("--resume", is_flag=True, help="Continue exactly from RUN_DIR/checkpoint.pt.")
    @click.option("--device", default=None, help="cpu or cuda (default: cuda when available).")
    @cli_errors
    def command(config_path, overrides, run_dir, resume, device) -> None:
        from lofi.trainer.run import check_run_folder
        from lofi.trainer.stages import RUNNERS

        cfg = load_config(config_path, list(overrides))
        check_run_folder(run_dir, cfg, config_path)
        with working_on(f"the run folder {named(run_dir)}"):
            ckpt = RUNNERS[stage](cfg, Path(run_dir), resume, device)
        click.echo(f"{stage}: checkpoint {ckpt}")


_stage_command("pretrain", "Action-classification pre-training on trimmed clips (ACP).")
_stage_command("lofi", "End-to-end encoder + head training on low-fidelity batches.")
_stage_command("head", "Frozen encoder: full-fidelity features, a fresh head trained on them.")


@train_cli.command("plan")
@click.option("--config", "config_path", type=click.Path(), help="YAML config (configs/*.yaml).")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    callback=overrides_once,
    help="Override, e.g. --set lofi.batch_size=8 (each key once).",
)
@click.option("--size", type=SIZE, default="224x224", show_default=True, help="Frame HEIGHTxWIDTH.")
@click.option("--memory", default=None, help="A budget, e.g. 24GiB: show what fits.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the plan here.")
@cli_errors
def plan_cmd(config_path, overrides, size, memory, json_out) -> None:
    """Memory of one lofi-stage training step for each fidelity, checkpointing and precision.

    Traced under FakeTensorMode: no real allocation, so the paper's shapes plan on any CPU.
    """
    check_outputs({"--json": json_out}, [("config", config_path)] if config_path else [])
    from lofi.trainer.planner import format_plan, parse_bytes, plan_memory

    cfg = load_config(config_path, list(overrides))
    h, w = _pair(size, "x")
    budget = parse_bytes(memory) if memory else None
    rows = plan_memory(cfg, (h, w))
    click.echo(format_plan(rows, budget))
    if json_out:
        import json

        write_text(json_out, "plan", json.dumps([r.as_json() for r in rows], indent=1))


if __name__ == "__main__":
    train_cli()
