"""Fused LoFi sampling op against the plain-torch chain a user would write and the reference,
all measured in one run, with effective bandwidth against a plain device copy; optionally the
encoder's frames per second at each fidelity fed by the op.

Shapes are the paper's fidelity configurations (one clip of L snippets x k frames):
full 100 x 224^2, S 100 x 112^2, T 25 x 224^2, ST 50 x 158^2. Source frames are 256 x 340
(a decoded short side of 256) cropped to a 224 x 224 box, as training does.

    python bench/kernels.py --device cpu --out bench/results/kernels-cpu.json
    python bench/kernels.py --device cuda --encoder --out bench/results/kernels-cuda.json
    python bench/kernels.py --device cpu --shrink 20 --encoder   (a quick smoke run)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from lofi.cpp_ext import fused_op, lofi_sample_reference
from lofi.cpp_ext.ops import has_kernel

CONFIGS = {"full": (100, 224), "S": (100, 112), "T": (25, 224), "ST": (50, 158)}
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SOURCE = (256, 340)  # decoded frame (H, W)
BOX = (58, 16, 282, 240)  # x0, y0, x1, y1: a 224 x 224 crop


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timeit(fn: Callable[[], object], device: str, repeat: int) -> float:
    """Median seconds of `repeat` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def copy_bandwidth(device: str, nbytes: int) -> float:
    """Bytes/s (read + write) of a plain device-to-device copy: the practical peak."""
    x = torch.empty(nbytes // 2, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    return 2 * x.numel() / timeit(lambda: y.copy_(x), device, 10)


def torch_chain(
    frames: torch.Tensor,
    index: torch.Tensor,
    box: Sequence[int],
    side: int,
    mean: torch.Tensor,
    std: torch.Tensor,
    dtype: torch.dtype,
) -> torch.Tensor:
    """What a user writes without the op: gather, crop, permute, cast, resize, normalise, cast."""
    b, length, k = index.shape
    x0, y0, x1, y1 = box
    x = frames.index_select(0, index.flatten())[:, y0:y1, x0:x1]
    x = x.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    x = (x / 255 - mean) / std
    return x.to(dtype).reshape(b, length, k, 3, side, side)


def inputs(length: int, k: int, device: str):
    n = length * k
    g = torch.Generator(device=device).manual_seed(0)
    frames = torch.randint(0, 256, (n, *SOURCE, 3), dtype=torch.uint8, device=device, generator=g)
    index = torch.arange(n, device=device).reshape(1, length, k)
    boxes = torch.tensor([BOX], dtype=torch.float32, device=device)
    return frames, index, boxes


def measure(
    op,
    name: str,
    length: int,
    side: int,
    k: int,
    dtype: torch.dtype,
    dev: str,
    repeat: int,
    peak: float,
) -> dict:
    frames, index, boxes = inputs(length, k, dev)
    mean = torch.tensor(MEAN, device=dev).view(3, 1, 1)
    std = torch.tensor(STD, device=dev).view(3, 1, 1)
    runs = {
        "fused": lambda: op(frames, index, boxes, side, side, MEAN, STD, dtype),
        "chain": lambda: torch_chain(frames, index, BOX, side, mean, std, dtype),
        "reference": lambda: lofi_sample_reference(
            frames, index, boxes, (side, side), MEAN, STD, dtype
        ),
    }
    # the three compute the same thing (integer box, half-pixel bilinear): record how closely
    fused_out = runs["fused"]().float()
    diff = {
        f"{key}_max_abs_diff": (fn().float() - fused_out).abs().max().item()
        for key, fn in runs.items()
        if key != "fused"
    }
    del fused_out
    seconds = {key: timeit(fn, dev, repeat) for key, fn in runs.items()}
    n = length * k
    out_bytes = n * 3 * side * side * torch.empty(0, dtype=dtype).element_size()
    in_bytes = n * 224 * 224 * 3  # the bytes the box covers; a lower bound on what must be read
    row = {"config": name, "snippets": length, "k": k, "size": side, **diff}
    for key, s in seconds.items():
        row[f"{key}_ms"] = 1e3 * s
        row[f"{key}_GBps"] = (in_bytes + out_bytes) / s / 1e9
        row[f"{key}_fraction_of_copy"] = (in_bytes + out_bytes) / s / peak
    row["speedup_vs_chain"] = seconds["chain"] / seconds["fused"]
    row["speedup_vs_reference"] = seconds["reference"] / seconds["fused"]
    print(
        f"{name:>4} {length:>3} x {k} x {side}^2: fused {row['fused_ms']:8.2f} ms "
        f"({row['fused_GBps']:.1f} GB/s, {100 * row['fused_fraction_of_copy']:.0f}% of copy)  "
        f"chain {row['chain_ms']:8.2f} ms  reference {row['reference_ms']:8.2f} ms  "
        f"speedup {row['speedup_vs_chain']:.1f}x / {row['speedup_vs_reference']:.1f}x",
        flush=True,
    )
    return row


def encoder_step(op, enc, batch: tuple, side: int, dtype: torch.dtype, train: bool) -> None:
    """Sampling op -> encoder (autocast below fp32), plus backward when training."""
    x = op(*batch, side, side, MEAN, STD, dtype)
    low = dtype != torch.float32
    with torch.autocast(x.device.type, dtype=dtype, enabled=low), torch.set_grad_enabled(train):
        y = enc(x)
    if train:
        y.float().square().mean().backward()


def encoder_rows(op, k: int, dev: str, repeat: int, shrink: int) -> list[dict]:
    """Frames/s of TSM-R18 (configs/tsm_r18_anet.yaml) on one clip per fidelity, fed by the op:
    inference (eval, no grad) and a training step (forward + backward), fp32 and bf16 autocast."""
    from importlib.resources import files

    from lofi.trainer.checkpoint import build_encoder
    from lofi.trainer.config import load_config

    cfg = load_config(Path(str(files("lofi.configs"))) / "tsm_r18_anet.yaml", [f"data.k={k}"])
    torch.manual_seed(0)
    enc = build_encoder(cfg, pretrained=False).to(dev)
    rows = []
    for name, (length, side) in CONFIGS.items():
        length = max(1, length // shrink)
        batch = inputs(length, k, dev)
        for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            for train in (False, True):
                enc.train(train)
                row = {"config": name, "snippets": length, "k": k, "size": side}
                row |= {"precision": precision, "mode": "train" if train else "eval"}
                if dev == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                try:
                    s = timeit(
                        partial(encoder_step, op, enc, batch, side, dtype, train), dev, repeat
                    )
                except torch.OutOfMemoryError:
                    row["error"] = "out of memory"
                    rows.append(row)
                    continue
                finally:
                    enc.zero_grad(set_to_none=True)
                sample = timeit(partial(op, *batch, side, side, MEAN, STD, dtype), dev, repeat)
                row |= {
                    "step_ms": 1e3 * s,
                    "frames_per_s": length * k / s,
                    "sampling_share": sample / s,
                }
                if dev == "cuda":
                    row["peak_bytes"] = torch.cuda.max_memory_allocated()
                print(
                    f"encoder {name:>4} {precision} {row['mode']:>5}: {row['frames_per_s']:9.0f} "
                    f"frames/s (sampling {100 * row['sampling_share']:.1f}% of the step)",
                    flush=True,
                )
                rows.append(row)
    return rows


def machine(dev: str) -> str:
    if dev == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--k", type=int, default=8, help="frames per snippet")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--encoder", action="store_true", help="also the encoder's frames per second")
    ap.add_argument("--shrink", type=int, default=1, help="divide the snippet counts (smoke runs)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    dev, dtype = args.device, getattr(torch, args.dtype)
    if dev == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda needs a CUDA GPU")
    op = fused_op()
    if not has_kernel(dev):
        raise SystemExit(f"error: the fused op has no {dev} kernel in this build (nvcc for CUDA)")
    peak = copy_bandwidth(dev, 1 << 30 if dev == "cuda" else 1 << 28)
    rows = []
    for name, (length, side) in CONFIGS.items():
        rows.append(
            measure(
                op, name, max(1, length // args.shrink), side, args.k, dtype, dev, args.repeat, peak
            )
        )
    result = {
        "device": dev,
        "machine": machine(dev),
        "dtype": args.dtype,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "copy_peak_GBps": peak / 1e9,
        "rows": rows,
    }
    if args.encoder:
        result["encoder"] = encoder_rows(op, args.k, dev, args.repeat, args.shrink)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
