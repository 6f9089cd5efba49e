"""`lofi_sample`: the fused op when it builds, else the torch reference (with one warning)."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence

import torch
from lofi.cpp_ext.reference import lofi_sample_reference

_lock = threading.Lock()
_op: list[Callable | None] = []


def _register_fake() -> None:
    @torch.library.register_fake("lofi::sample")
    def _(frames, index, boxes, out_h, out_w, mean, std, dtype):
        b, length, k = index.shape
        return frames.new_empty((b, length, k, 3, out_h, out_w), dtype=dtype)


def fused_op() -> Callable | None:
    """torch.ops.lofi.sample, built on first use; None (after one warning) if it cannot be."""
    with _lock:
        if not _op:
            try:
                from lofi.cpp_ext.build import build

                build()
                _register_fake()
                _op.append(torch.ops.lofi.sample)
            # no compiler, no ninja, a failed build: all mean "use the reference"
            except Exception as exc:
                warnings.warn(
                    f"LoFi fused sampling op unavailable ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); using the torch reference",
                    stacklevel=3,
                )
                _op.append(None)
        return _op[0]


def lofi_sample(
    frames: torch.Tensor,
    index: torch.Tensor,
    boxes: torch.Tensor,
    size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Same contract as `lofi_sample_reference`, in one pass over memory (one launch on CUDA)."""
    op = fused_op()
    if op is None:
        return lofi_sample_reference(frames, index, boxes, size, mean, std, dtype)
    device = frames.device
    return op(
        frames,
        index.to(device),
        boxes.to(device=device, dtype=torch.float32),
        int(size[0]),
        int(size[1]),
        [float(m) for m in mean],
        [float(s) for s in std],
        dtype,
    )
