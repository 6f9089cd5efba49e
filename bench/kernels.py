"""Fused LoFi sampling op against the torch reference chain, both measured in one run.

Shapes are the paper's fidelity configurations (one clip of L snippets x k frames):
full 100 x 224^2, S 100 x 112^2, T 25 x 224^2, ST 50 x 158^2. Source frames are 256 x 340
(a decoded short side of 256) cropped to a 224 x 224 box, as training does.

    python bench/kernels.py --device cpu --out bench/results/kernels-cpu.json
    python bench/kernels.py --device cuda --out bench/results/kernels-cuda.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from lofi.cpp_ext import fused_op, lofi_sample_reference

CONFIGS = {"full": (100, 224), "S": (100, 112), "T": (25, 224), "ST": (50, 158)}
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def timeit(fn, device: str, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def copy_bandwidth(device: str, nbytes: int = 1 << 30) -> float:
    """Achievable memory bandwidth (bytes/s) of a plain device copy: the practical peak."""
    x = torch.empty(nbytes // 2, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    t = timeit(lambda: y.copy_(x), device, 10)
    return 2 * x.numel() / t


def measure(
    op,
    name: str,
    length: int,
    side: int,
    k: int,
    dtype: torch.dtype,
    dev: str,
    repeat: int,
    peak: float | None,
) -> dict:
    n = length * k
    frames = torch.randint(0, 256, (n, 256, 340, 3), dtype=torch.uint8, device=dev)
    index = torch.arange(n, device=dev).reshape(1, length, k)
    boxes = torch.tensor([[58.0, 16.0, 282.0, 240.0]], device=dev)
    fused = timeit(lambda: op(frames, index, boxes, side, side, MEAN, STD, dtype), dev, repeat)
    ref = timeit(
        lambda: lofi_sample_reference(frames, index, boxes, (side, side), MEAN, STD, dtype),
        dev,
        repeat,
    )
    out_bytes = n * 3 * side * side * torch.empty(0, dtype=dtype).element_size()
    in_bytes = n * 224 * 224 * 3  # the bytes the box covers; a lower bound on what must be read
    row = {
        "config": name,
        "snippets": length,
        "k": k,
        "size": side,
        "fused_ms": 1e3 * fused,
        "reference_ms": 1e3 * ref,
        "speedup": ref / fused,
        "fused_GBps": (in_bytes + out_bytes) / fused / 1e9,
    }
    if peak:
        row["fraction_of_copy_peak"] = (in_bytes + out_bytes) / fused / peak
    print(
        f"{name:>4} {length:>3} x {k} x {side}^2: fused {1e3 * fused:8.1f} ms  reference {1e3 * ref:8.1f} ms  "
        f"speedup {ref / fused:5.1f}x  {row['fused_GBps']:.1f} GB/s",
        flush=True,
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--k", type=int, default=8, help="frames per snippet")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    dev, dtype = args.device, getattr(torch, args.dtype)
    op = fused_op()
    if op is None:
        raise SystemExit("the fused op did not build")
    rows = []
    peak = copy_bandwidth(dev) if dev == "cuda" else None
    for name, (length, side) in CONFIGS.items():
        rows.append(measure(op, name, length, side, args.k, dtype, dev, args.repeat, peak))
    machine = (
        torch.cuda.get_device_name()
        if dev == "cuda"
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    result = {
        "device": dev,
        "machine": machine,
        "dtype": args.dtype,
        "torch": torch.__version__,
        "copy_peak_GBps": peak / 1e9 if peak else None,
        "rows": rows,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
