"""`lofi_sample`: the fused op on a device whose kernel is built, else the torch reference.

A build can hold a CPU kernel and no CUDA one (a GPU machine without nvcc), so the choice is made
per device from the dispatcher, not from whether the extension loaded; each fallback warns once.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence

import torch
from lofi.cpp_ext.checks import check_inputs, check_shapes
from lofi.cpp_ext.reference import lofi_sample_reference

OP_NAME = "lofi::sample"
DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}

_lock = threading.Lock()
_op: list[Callable | None] = []
_warned: set[str] = set()


def _register_fake() -> None:
    @torch.library.register_fake(OP_NAME)
    def _(frames, index, boxes, out_h, out_w, mean, std, dtype):
        check_shapes(frames, index, boxes, (out_h, out_w), mean, std, dtype, host_ok=False)
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


def has_kernel(device: torch.device | str) -> bool:
    """Whether the built op holds a kernel for this device type (builds it on first use)."""
    key = DISPATCH_KEYS.get(torch.device(device).type)
    return (
        fused_op() is not None
        and key is not None
        and torch._C._dispatch_has_kernel_for_dispatch_key(OP_NAME, key)
    )


def _op_for(device: torch.device) -> Callable | None:
    """The fused op if it runs on `device`; else None, with one warning per device type (none
    beyond the build's own when nothing built)."""
    if has_kernel(device):
        return fused_op()
    if fused_op() is not None and device.type not in _warned:
        _warned.add(device.type)
        warnings.warn(
            f"LoFi fused sampling op has no {device.type} kernel in this build "
            "(CUDA needs nvcc when the op is built); using the torch reference",
            stacklevel=3,
        )
    return None


def lofi_sample(
    frames: torch.Tensor,
    index: torch.Tensor,
    boxes: torch.Tensor,
    size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Same contract as `lofi_sample_reference`, in one pass over memory (one launch on CUDA).
    index and boxes may be on the CPU or on the frames' device."""
    op = _op_for(frames.device)
    if op is None:
        return lofi_sample_reference(frames, index, boxes, size, mean, std, dtype)
    check_inputs(frames, index, boxes, size, mean, std, dtype)
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
