"""The streaming runtime as a service, both sides of each comparison measured in one run.

1. ONNX Runtime streaming (`lofi-stream`'s pipeline: decode thread, batched encoder, windowed
   head, exact finaliser) against PyTorch eager offline inference of the same model (decode the
   whole video, encoder in batches of 16, one head pass, the same NMS), on one Synth-TAL-style
   video of `--minutes` (10 by default).
2. Four streams in one process (`--parallel 4`, shared encoder calls) against the same four
   run one after another, in one process and as four `lofi-stream` runs; and the four in one
   process with one encoder call at a time (where the plan runs several at once).
3. Peak RSS of `lofi-stream` (a fresh process each) on the video and on it repeated 10 times.
4. Event latency percentiles (wall-clock, last frame's arrival to emission) from the runs.
5. The runtime's plan (`pipeline.plan`: ONNX Runtime threads, decoder threads, encoder batch,
   encoder calls at once)
   against each of its choices changed alone and against both libraries' defaults, and the
   encoder alone (the plan's threads) per snippet at batches of 2 to 32.

The sides alternate within each repeat (order flipped every repeat) and medians are reported,
so drift in the machine's load hits both. Uses the demo's trained bundle and checkpoint when
`--demo` points at a `lofi-demo` output, else a random-weight model at the demo's shapes.

    python bench/runtime.py --out bench/results/runtime.json
    python bench/runtime.py --demo lofi-demo-out --minutes 10 --repeats 3 --out R.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from pathlib import Path

import av
import torch
from lofi.runtime.decode import VideoReader, read_video
from lofi.runtime.models import BundleModels
from lofi.runtime.pipeline import Options, plan, planned_models, stream_sources, usable_cores
from lofi.runtime.postprocess import detect

DEMO_CONFIG = Path(str(files("lofi.configs") / "demo.yaml"))
STREAM = (
    "import sys; from lofi.runtime.cli import stream_cli; sys.argv[0] = 'lofi-stream'; stream_cli()"
)


def model_files(work: Path, demo: Path | None) -> tuple[Path, Path]:
    """(checkpoint, bundle): the demo's trained ones, or a random-weight model at its shapes."""
    if demo is not None:
        return demo / "runs" / "head" / "checkpoint.pt", demo / "bundle"
    ckpt, bundle = work / "random.pt", work / "bundle"
    if not (bundle / "manifest.json").is_file():
        from lofi.export.bundle_writer import export_bundle
        from lofi.trainer.checkpoint import build_encoder, build_head, save_checkpoint
        from lofi.trainer.config import load_config

        torch.manual_seed(0)
        cfg = load_config(DEMO_CONFIG, [])
        enc = build_encoder(cfg)
        head = build_head(cfg, enc.out_dim, 6)
        state = {"encoder": enc.state_dict(), "head": head.state_dict()}
        labels = [f"class_{i}" for i in range(6)]
        meta = {"stage": "head", "config": cfg.to_dict(), "labels": labels, "fps": 8.0}
        save_checkpoint(ckpt, {**meta, "input_size": [64, 64], **state})
        export_bundle(ckpt, bundle)
    return ckpt, bundle


def render(path: Path, minutes: float, size: tuple[int, int], fps: float) -> Path:
    """One Synth-TAL video of `minutes` (actions of 1-12 s, idle between, distractors)."""
    from lofi.trainer.synth import UNTRIMMED_MOTIONS, SynthConfig, render_untrimmed, write_mp4

    if not path.is_file():
        seconds = 60.0 * minutes
        cfg = SynthConfig(
            height=size[0], width=size[1], fps=fps, min_duration=seconds, max_duration=seconds
        )
        frames, _ = render_untrimmed(cfg, "validation", 0, UNTRIMMED_MOTIONS[: cfg.classes])
        write_mp4(path, frames, fps)
    return path


def repeat(src: Path, dst: Path, times: int) -> Path:
    """`src` played `times` times in a row (its packets remuxed with shifted timestamps)."""
    if dst.is_file():
        return dst
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        template = inp.streams.video[0]
        stream = out.add_stream_from_template(template)
        packets = [p for p in inp.demux(template) if p.dts is not None]
        span = max(p.pts + p.duration for p in packets)
        for r in range(times):
            for p in packets:
                q = av.Packet(bytes(p))
                q.pts, q.dts = p.pts + r * span, p.dts + r * span
                q.duration, q.is_keyframe, q.time_base = p.duration, p.is_keyframe, p.time_base
                q.stream = stream
                out.mux(q)
    return dst


class TorchOffline:
    """The checkpoint's encoder and head in PyTorch eager mode, run on a whole video."""

    def __init__(self, ckpt: Path, models: BundleModels) -> None:
        from lofi.trainer.checkpoint import load_checkpoint, models_from_checkpoint
        from lofi.trainer.encoder import ExportableEncoder
        from lofi.trainer.head import ExportableHead

        m = models.manifest
        encoder, head = models_from_checkpoint(load_checkpoint(ckpt), ckpt)
        self.encoder = ExportableEncoder(encoder, m.mean, m.std).eval()
        self.head = ExportableHead(head).eval()
        self.models, self.m = models, m

    @torch.inference_mode()
    def __call__(self, video: Path) -> list:
        m = self.m
        frames = read_video(video, m.grid.fps, (m.height, m.width))
        n = m.grid.count(len(frames))
        idx = m.grid.frame_indices(0, n, len(frames))
        feats = torch.cat(
            [self.encoder(torch.from_numpy(frames[idx[i : i + 16]])) for i in range(0, n, 16)]
        )
        x = torch.zeros(self.models.padded_length(n), m.feature_dim)
        x[:n] = feats
        flat = [t[0].numpy() for t in self.head(x.T[None])]
        outputs = [(flat[2 * i], flat[2 * i + 1]) for i in range(len(m.strides))]
        return detect(outputs, m, n, len(frames) / m.grid.fps, video.stem)


def stream_with(
    bundle: Path, video: Path, threads: int, spin: bool, decoder: int, batch: int, workers: int
):
    """One streaming run of `video` with these knobs, as a callable."""
    models = BundleModels(bundle, threads=threads, spin=spin)
    options = Options(decoder_threads=decoder, encoder_batch=batch, encoder_workers=workers)
    return lambda: stream_sources(models, [str(video)], quiet=True, options=options)


def same_segments(a: list, b: list, tol: float = 1e-3) -> bool:
    """Same labels in the same order, bounds within `tol` s (ONNX Runtime and PyTorch differ in
    float rounding)."""
    return [s.label for s in a] == [s.label for s in b] and all(
        abs(x.start - y.start) <= tol and abs(x.end - y.end) <= tol for x, y in zip(a, b)
    )


def timed(fn) -> tuple[float, object, float]:
    """(wall seconds, result, CPU seconds of this process and its finished children)."""
    c0, t0 = os.times(), time.perf_counter()
    out = fn()
    t, c1 = time.perf_counter() - t0, os.times()
    cpu = sum(c1[:4]) - sum(c0[:4])  # user, system, children's user and system
    return t, out, cpu


def interleaved(sides: dict, repeats: int) -> dict[str, list]:
    """Each side once per repeat, the order flipped every other repeat; `timed` triples."""
    runs: dict[str, list] = {name: [] for name in sides}
    names = list(sides)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            runs[name].append(timed(sides[name]))
    return runs


def median(runs: list) -> float:
    return round(statistics.median(r[0] for r in runs), 3)


def cores_busy(runs: list) -> float:
    """Median CPU seconds per wall second: how many of the machine's cores a side kept busy."""
    return round(statistics.median(r[2] / r[0] for r in runs), 2)


def timing(runs: list) -> dict:
    """A side's median seconds and cores busy."""
    return {"seconds": median(runs), "cores_busy": cores_busy(runs)}


def lofi_stream(sources: list[str], bundle: Path, work: Path) -> dict:
    """`lofi-stream SOURCES` in a fresh process; its stats."""
    stats = work / "stats.json"
    cmd = [sys.executable, "-c", STREAM, *sources, "--bundle", str(bundle), "--quiet"]
    subprocess.run([*cmd, "--stats", str(stats)], check=True, capture_output=True)
    return json.loads(stats.read_text())


def peak_rss(video: Path, bundle: Path, work: Path) -> dict:
    """`lofi-stream` on `video` in a fresh process: its peak RSS and latency."""
    s = lofi_stream([str(video)], bundle, work)
    keep = ("peak_rss_mib", "video_seconds", "wall_seconds", "realtime_factor")
    return {k: s[k] for k in keep} | {"latency_seconds": s["latency_seconds"]}


def parallel_sweep(bundle: Path, copies: list[str], repeats: int) -> dict:
    """The streams at once under other decoder threads and encoder calls than the plan's
    (one ONNX Runtime thread a call), each beside the same streams one after another."""
    n, cores = len(copies), usable_cores()
    chosen = plan("cpu", n)
    knobs = {"plan": (chosen.decoder_threads, chosen.encoder_workers)}
    for decoder in (1, 2):
        for workers in sorted({n, 2 * n, max(1, cores - n)}):
            knobs[f"decoder_threads={decoder},workers={workers}"] = (decoder, workers)
    alone, one_thread = planned_models(bundle), BundleModels(bundle, threads=1)
    sides = {"sequential": lambda: stream_sources(alone, copies, quiet=True)}
    for name, (decoder, workers) in knobs.items():
        models = planned_models(bundle, parallel=n) if name == "plan" else one_thread
        options = Options(parallel=n, decoder_threads=decoder, encoder_workers=workers)
        sides[name] = lambda m=models, o=options: stream_sources(m, copies, quiet=True, options=o)
    runs = interleaved(sides, repeats)
    sequential = median(runs["sequential"])
    return {
        name: timing(r) | {"throughput_vs_sequential": round(sequential / median(r), 2)}
        for name, r in runs.items()
    }


def scaling(bundle: Path, copies: list[str], repeats: int) -> dict:
    """Where streams at once in one process stop scaling. Decoding alone (each source on one
    thread, FFmpeg single-threaded: its decode lets go of the GIL, the Python around it does
    not) one after another against all at once; how much of each wall second the main thread
    (localizers, encoder calls' setup) computes during a `--parallel` run; and that run with
    Python's GIL handed over every 0.5 ms instead of every 5 ms."""
    m = BundleModels(bundle).manifest
    size, fps, n = (m.height, m.width), m.grid.fps, len(copies)

    def decode(path: str) -> int:
        return sum(1 for _ in VideoReader(path, fps, size, threads=1))

    def at_once() -> list[int]:
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(decode, copies))

    runs = interleaved(
        {"one_after_another": lambda: [decode(c) for c in copies], "at_once": at_once}, repeats
    )
    decoding = {name: timing(r) for name, r in runs.items()}
    decoding["speedup"] = round(median(runs["one_after_another"]) / median(runs["at_once"]), 3)

    models = planned_models(bundle, parallel=n)
    default_interval = sys.getswitchinterval()
    intervals = {"switch_5ms": 0.005, "switch_0.5ms": 0.0005}
    main_thread: dict[str, list[float]] = {name: [] for name in intervals}

    def parallel(name: str):
        def run():
            sys.setswitchinterval(intervals[name])
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return stream_sources(models, copies, quiet=True, options=Options(parallel=n))
            finally:
                main_thread[name].append((time.thread_time() - c0) / (time.perf_counter() - t0))
                sys.setswitchinterval(default_interval)

        return run

    runs = interleaved({name: parallel(name) for name in intervals}, repeats)
    streams = {
        name: timing(r) | {"main_thread_busy": round(statistics.median(main_thread[name]), 2)}
        for name, r in runs.items()
    }
    return {"decoding_alone": decoding, "streams_at_once": streams}


def machine() -> dict:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    names = [x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")]
    return {
        "cpu": names[0] if names else platform.processor(),
        "cores": usable_cores(),
        "machine_cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": __import__("onnxruntime").__version__,
        "load_average_at_start": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", type=Path, help="a lofi-demo output folder (trained bundle)")
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the video")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--work", type=Path, default=Path("bench-runtime-work"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/runtime.json"))
    ap.add_argument(
        "--sweep",
        action="store_true",
        help="only the streams at once under other decoder threads and encoder calls",
    )
    ap.add_argument(
        "--scaling",
        action="store_true",
        help="only where streams at once stop scaling: decoding alone, the main thread, the GIL",
    )
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    info = machine()
    ckpt, bundle = model_files(args.work, args.demo)
    models = planned_models(bundle)
    m = models.manifest
    video = render(
        args.work / f"synth-{args.minutes:g}min.mp4", args.minutes, (m.height, m.width), m.grid.fps
    )
    print(f"video {video} ({args.minutes:g} min, {m.height}x{m.width} at {m.grid.fps:g} fps)")

    copies = []
    for i in range(args.streams):
        copy = args.work / f"stream{i}.mp4"
        if not copy.is_file():
            copy.write_bytes(video.read_bytes())
        copies.append(str(copy))
    if args.sweep or args.scaling:
        name, fn = ("sweep", parallel_sweep) if args.sweep else ("scaling", scaling)
        found = fn(bundle, copies, args.repeats)
        print(f"{name}:", json.dumps(found))
        report = {"machine": info, "minutes": args.minutes, "streams": args.streams, name: found}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        return

    torch_offline = TorchOffline(ckpt, models)
    runs = interleaved(
        {
            "ort_stream": lambda: stream_sources(models, [str(video)], quiet=True),
            "torch_eager_offline": lambda: torch_offline(video),
        },
        args.repeats,
    )
    streamed = runs["ort_stream"][-1][1][0][video.stem]
    offline = runs["torch_eager_offline"][-1][1]
    inference = {
        "ort_stream_seconds": median(runs["ort_stream"]),
        "torch_eager_offline_seconds": median(runs["torch_eager_offline"]),
        "cores_busy": {name: cores_busy(r) for name, r in runs.items()},
        "same_segments": same_segments(streamed, offline),
        "latency_seconds": runs["ort_stream"][-1][1][1]["latency_seconds"],
        "stages": runs["ort_stream"][-1][1][1]["stages"],
    }
    inference["speedup"] = round(
        inference["torch_eager_offline_seconds"] / inference["ort_stream_seconds"], 3
    )
    print("inference:", json.dumps(inference))

    shared = planned_models(bundle, parallel=args.streams)
    together = plan("cpu", args.streams)
    one_call = BundleModels(bundle, threads=together.ort_threads * together.encoder_workers)
    sources = {
        "one_process_parallel": lambda: stream_sources(
            shared, copies, quiet=True, options=Options(parallel=args.streams)
        ),
        # the same, but one encoder call at a time on the threads the workers would get
        "one_process_parallel_one_call": lambda: stream_sources(
            one_call, copies, quiet=True, options=Options(parallel=args.streams, encoder_workers=1)
        ),
        "sequential": lambda: stream_sources(models, copies, quiet=True),
        "sequential_processes": lambda: [lofi_stream([c], bundle, args.work) for c in copies],
    }
    runs = interleaved(sources, args.repeats)
    seconds = args.streams * args.minutes * 60
    streams: dict = {
        name: timing(r) | {"video_seconds_per_second": round(seconds / median(r), 1)}
        for name, r in runs.items()
    }
    for name in ("one_process_parallel", "one_process_parallel_one_call", "sequential"):
        last = runs[name][-1][1][1]
        streams[name].update(
            latency_seconds=last["latency_seconds"], encoder_batch=last["encoder_batch"]
        )
    par = streams["one_process_parallel"]["seconds"]
    streams["throughput_ratio"] = round(streams["sequential"]["seconds"] / par, 3)
    streams["throughput_ratio_vs_processes"] = round(
        streams["sequential_processes"]["seconds"] / par, 3
    )
    # no arrangement of the same work can beat the sequential run by more than the cores it
    # left idle: the ceiling of the ratio on this machine
    streams["throughput_ratio_ceiling"] = round(
        usable_cores() / streams["sequential"]["cores_busy"], 2
    )
    print("streams:", json.dumps(streams))

    long = repeat(video, args.work / f"synth-{args.minutes:g}min-x10.mp4", 10)
    memory = {"1x": peak_rss(video, bundle, args.work), "10x": peak_rss(long, bundle, args.work)}
    memory["ratio"] = round(memory["10x"]["peak_rss_mib"] / memory["1x"]["peak_rss_mib"], 3)
    print("memory:", json.dumps(memory))

    chosen = plan("cpu", 1)
    knobs = {
        "threads": chosen.ort_threads,
        "spin": False,
        "decoder": chosen.decoder_threads,
        "batch": chosen.encoder_batch,
        "workers": chosen.encoder_workers,
    }
    changes = {
        "plan": {},
        "ort_threads=0": {"threads": 0},
        "ort_threads=2": {"threads": 2},
        "spin=on": {"spin": True},
        "decoder_threads=0": {"decoder": 0},
        "batch=16": {"batch": 16},
        "one_call_on_all_cores": {"workers": 1, "threads": max(1, usable_cores() - 1)},
        "library_defaults": {"threads": 0, "decoder": 0, "batch": 16, "workers": 1},
    }
    runs = interleaved(
        {name: stream_with(bundle, video, **knobs | c) for name, c in changes.items()},
        args.repeats,
    )
    ort_settings = {name: median(r) for name, r in runs.items()}
    frames = read_video(video, m.grid.fps, (m.height, m.width))[: 256 * m.grid.span]
    n = m.grid.count(len(frames))
    clips = frames[m.grid.frame_indices(0, n, len(frames))]
    runs = interleaved(
        {
            batch: (lambda b=batch: [models.encode(clips[i : i + b]) for i in range(0, n, b)])
            for batch in (2, 4, 8, 16, 32)
        },
        max(args.repeats, 5),
    )
    encoder_ms = {
        f"batch={b}": round(1000 * statistics.median(r[0] for r in runs[b]) / n, 3) for b in runs
    }
    print("encoder ms per snippet:", json.dumps(encoder_ms))
    print("plan against alternatives:", json.dumps(ort_settings))

    info["load_average_at_end"] = os.getloadavg()
    report = {
        "machine": info,
        "settings": {
            "minutes": args.minutes,
            "repeats": args.repeats,
            "streams": args.streams,
            "bundle": str(bundle),
            "trained": args.demo is not None,
            "input": [m.height, m.width],
            "fps": m.grid.fps,
            "torch_threads": torch.get_num_threads(),
        },
        "ort_stream_vs_torch_eager_offline": inference,
        "streams_in_one_process_vs_sequential": streams,
        "peak_rss": memory,
        "plan": vars(chosen),
        "plan_against_alternatives_seconds": ort_settings,
        "encoder_ms_per_snippet_by_batch": encoder_ms,
        "acceptance": {
            "ort_stream_speedup_ge_1.5": inference["speedup"] >= 1.5,
            "parallel_throughput_ge_1.5x_in_process": streams["throughput_ratio"] >= 1.5,
            "parallel_throughput_ge_1.5x_vs_runs": streams["throughput_ratio_vs_processes"] >= 1.5,
            "rss_10x_le_1.1x": memory["ratio"] <= 1.1,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
