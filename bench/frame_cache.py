"""Frame cache formats compared in one run: bytes per hour of video and the data loader's
frames per second, for today's uint8 arrays (`npy`) against packed JPEG per frame (the default,
at several qualities), plus short-GOP H.264 as the other candidate (storage and snippet reads).

Synth-TAL videos are rendered at the cache size and decoded once; every format stores the same
frames. Loader reads are the trainer's: batches of `resize`-protocol windows (L snippets of k
frames spread over a video, FrameCache.read) in one process and with N workers (processes
decoding JPEG, threads copying arrays). Rounds alternate
between formats so machine load falls on all of them alike; medians are reported. The uint8
arrays are read from the page cache here (memory speed); from a disk they move 10x the bytes.

    python bench/frame_cache.py --out bench/results/frame_cache.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from lofi.trainer.data import FrameCache, prepare_cache
from lofi.trainer.synth import SynthConfig, generate


def h264_store(frames: np.ndarray, path: Path, fps: float, gop: int, crf: int) -> None:
    """Frames re-encoded as H.264 with a keyframe every `gop` frames (random access cost)."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"crf": str(crf), "g": str(gop), "keyint_min": str(gop), "bf": "0"}
        for f in frames:
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(s.encode())


def h264_read(path: Path, idx: np.ndarray, gop: int) -> int:
    """Decode the frames `idx` (sorted) of an H.264 store: seek to each needed GOP, decode up to
    the frames wanted. Returns frames decoded (including those decoded only to reach one)."""
    decoded = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        want = sorted(set(int(i) for i in idx.reshape(-1)))
        for g in sorted({i // gop for i in want}):
            c.seek(int(g * gop / float(s.average_rate) / s.time_base), stream=s, backward=True)
            last = max(i for i in want if i // gop == g)
            for frame in c.decode(s):
                n = round(float(frame.time) * float(s.average_rate))
                decoded += 1
                if n >= last:
                    break
    return decoded


def batches(cache: FrameCache, vids: list[str], n: int, window: int, k: int, seed: int):
    """The frame requests of `n` batches of resize-protocol windows (one per video)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        reqs = []
        for vid in rng.choice(vids, 4):
            frames = len(cache.frames(vid))
            starts = np.floor(np.linspace(0, max(frames - k, 0), window)).astype(int)
            reqs.append((vid, np.unique(np.minimum(starts[:, None] + np.arange(k), frames - 1))))
        out.append(reqs)
    return out


def cpu_name() -> str:
    """The CPU model (Linux /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224, help="Square frame side of the cache.")
    ap.add_argument("--fps", type=float, default=8.0)
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=40.0, help="Length of each video.")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--qualities", default="75,90,95")
    ap.add_argument("--gop", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("bench/results/frame_cache.json"))
    args = ap.parse_args()
    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="lofi-frame-cache-"))
    synth = SynthConfig(
        train_videos=args.videos,
        val_videos=1,
        classes=2,
        clip_classes=2,
        clips_per_class=1,
        height=args.size,
        width=args.size,
        fps=args.fps,
        min_duration=args.seconds,
        max_duration=args.seconds,
        seed=0,
    )
    generate(tmp / "synth", synth)
    ann, videos = tmp / "synth" / "annotations.json", tmp / "synth" / "videos"
    size = (args.size, args.size)
    formats = {"npy": ("npy", 90)} | {
        f"jpeg-q{q}": ("jpeg", int(q)) for q in args.qualities.split(",")
    }
    result: dict = {"formats": {}}
    for name, (fmt, q) in formats.items():
        t0 = time.perf_counter()
        rep = prepare_cache(ann, videos, tmp / name, args.fps, size, fmt=fmt, quality=q)
        hours = rep.frames / args.fps / 3600
        result["formats"][name] = {
            "bytes_per_hour": rep.bytes / hours,
            "bytes_per_frame": rep.bytes / rep.frames,
            "prepare_fps_1_process": rep.frames / (time.perf_counter() - t0),
            "frames": rep.frames,
        }
    caches = {name: FrameCache(tmp / name) for name in formats}
    vids = list(caches["npy"].index["videos"])
    work = batches(caches["npy"], vids, 6, 100, 8, seed=1)
    n_frames = sum(len(idx) for reqs in work for _, idx in reqs)

    h264 = tmp / "h264"
    h264.mkdir()
    for vid in vids:
        h264_store(
            np.asarray(caches["npy"].frames(vid)), h264 / f"{vid}.mp4", args.fps, args.gop, 18
        )
    h_bytes = sum(p.stat().st_size for p in h264.iterdir())
    result["formats"][f"h264-gop{args.gop}-crf18"] = {
        "bytes_per_hour": h_bytes
        / (sum(len(caches["npy"].frames(v)) for v in vids) / args.fps / 3600),
        "bytes_per_frame": h_bytes / sum(len(caches["npy"].frames(v)) for v in vids),
    }

    loaders = {
        f"{name}/{t}": FrameCache(tmp / name, workers=t)
        for name in formats
        for t in sorted({1, args.threads})
    }
    for loader in loaders.values():  # start worker pools outside the timing
        loader.read(work[0])
    timings: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for key, loader in loaders.items():
            t0 = time.perf_counter()
            for reqs in work:
                loader.read(reqs)
            timings.setdefault(key, []).append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        decoded = sum(
            h264_read(h264 / f"{v}.mp4", idx, args.gop) for reqs in work for v, idx in reqs
        )
        timings.setdefault(f"h264-gop{args.gop}-crf18/1", []).append(time.perf_counter() - t0)
    for key, values in timings.items():
        name, threads = key.split("/")
        result["formats"][name][f"loader_fps_{threads}_workers"] = n_frames / statistics.median(
            values
        )
    result["formats"][f"h264-gop{args.gop}-crf18"]["frames_decoded_per_frame_read"] = (
        decoded / n_frames
    )
    ref = result["formats"]["npy"]["bytes_per_hour"]
    for row in result["formats"].values():
        row["size_vs_npy"] = row["bytes_per_hour"] / ref
    result["setup"] = {
        "size": size,
        "fps": args.fps,
        "videos": len(vids),
        "seconds_each": args.seconds,
        "frames_per_round": n_frames,
        "batches": "6 batches x 4 videos x 100 snippets x 8 frames (resize protocol, unique frames)",
        "rounds": args.rounds,
        "threads": args.threads,
        "content": "Synth-TAL (textured background, sensor noise, moving shapes)",
    }
    result["machine"] = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_1_5_15_start": load_start,
        "load_avg_1_5_15_end": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for name, row in result["formats"].items():
        cells = ", ".join(
            f"{k} {v:,.0f}" if v > 10 else f"{k} {v:.3f}"
            for k, v in row.items()
            if isinstance(v, float)
        )
        print(f"{name}: {cells}")


if __name__ == "__main__":
    main()
