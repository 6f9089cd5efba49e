"""Input checks of the LoFi sampling op, one set for every path (fused CPU, fused CUDA, reference).

They run before dispatch so a bad call fails with one line on every device: never a segfault,
a read past a buffer, another GPU's pointers or a device-side assert that breaks the CUDA
context. Structural checks read only shapes, dtypes and devices (the fake kernel runs them too);
value checks read index and boxes, which costs one host sync when those live on a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch._subclasses.fake_tensor import is_fake

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# the CUDA kernel keeps H, 3 W, out_h * out_w and L * k in 32-bit ints (offsets are 64-bit)
INT_MAX = 2**31 - 1


def check_shapes(
    frames: torch.Tensor,
    index: torch.Tensor,
    boxes: torch.Tensor,
    size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    dtype: torch.dtype,
    host_ok: bool,
) -> None:
    """Raise ValueError unless shapes, dtypes, sizes and devices suit the op; `host_ok` lets
    index and boxes sit on the CPU (the caller copies them to the frames' device)."""
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"frames must be (T, H, W, 3) uint8, got {tuple(frames.shape)} {frames.dtype}"
        )
    t, h, w, _ = frames.shape
    if t == 0 or h == 0 or w == 0:
        raise ValueError(f"frames are empty: (T, H, W) = ({t}, {h}, {w})")
    if index.dim() != 3 or index.dtype != torch.int64:
        raise ValueError(f"index must be (B, L, k) int64, got {tuple(index.shape)} {index.dtype}")
    if (
        boxes.dim() != 2
        or tuple(boxes.shape) != (index.shape[0], 4)
        or boxes.dtype.is_complex
        or boxes.dtype == torch.bool
    ):
        raise ValueError(
            f"boxes must be (B, 4) real numbers with B = {index.shape[0]}, got {tuple(boxes.shape)}"
        )
    if len(size) != 2 or int(size[0]) <= 0 or int(size[1]) <= 0:
        raise ValueError(f"size must be two positive ints (h, w), got {tuple(size)}")
    if len(mean) != 3 or len(std) != 3 or any(s == 0 for s in std):
        raise ValueError("mean and std need 3 values each, std non-zero")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    out_h, out_w = int(size[0]), int(size[1])
    for what, n in (
        ("frame height", h),
        ("3 x frame width", 3 * w),
        ("output frame (h x w)", out_h * out_w),
        ("frames per clip (L x k)", index.shape[1] * index.shape[2]),
    ):
        if n > INT_MAX:
            raise ValueError(f"{what} = {n} exceeds the kernel's limit of 2^31 - 1")
    for name, x in (("index", index), ("boxes", boxes)):
        if x.device != frames.device and not (host_ok and x.device.type == "cpu"):
            raise ValueError(
                f"{name} is on {x.device}, frames on {frames.device}: put them on one device"
            )


def check_values(frames: torch.Tensor, index: torch.Tensor, boxes: torch.Tensor) -> None:
    """Raise ValueError for frame indices outside [0, T) and non-finite or empty crop boxes.
    Skipped where values cannot be read: meta and fake tensors, and inside CUDA graph capture
    (the CUDA kernel then writes NaN for an out-of-range frame instead of reading it)."""
    tensors = (frames, index, boxes)
    if index.numel() == 0 or any(x.device.type == "meta" or is_fake(x) for x in tensors):
        return
    if (index.is_cuda or boxes.is_cuda) and torch.cuda.is_current_stream_capturing():
        return
    boxes = boxes.to(index.device, torch.float32)
    ok = (
        torch.isfinite(boxes).all()
        & (boxes[:, 2] > boxes[:, 0]).all()
        & (boxes[:, 3] > boxes[:, 1]).all()
    )
    lo, hi, fine = torch.stack([index.min(), index.max(), ok.long()]).tolist()  # one sync
    t = frames.shape[0]
    if lo < 0 or hi >= t:
        raise ValueError(f"frame index {lo if lo < 0 else hi} out of range [0, {t})")
    if not fine:
        raise ValueError("boxes must be finite [x0, y0, x1, y1] with x1 > x0 and y1 > y0")


def check_inputs(
    frames: torch.Tensor,
    index: torch.Tensor,
    boxes: torch.Tensor,
    size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    dtype: torch.dtype,
) -> None:
    """Every check `lofi_sample` and `lofi_sample_reference` make before they touch a pixel."""
    check_shapes(frames, index, boxes, size, mean, std, dtype, host_ok=True)
    check_values(frames, index, boxes)
