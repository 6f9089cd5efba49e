"""Pure-torch LoFi transform: the chain of stock ops the fused kernels replace, and their oracle.

Temporal gather -> cast -> per-clip bilinear crop/resize (half-pixel centres, edges clamped) ->
normalise -> cast, one pass over memory per step.

Every division divides by a tensor, never by a Python number: ATen's CUDA kernel computes
`t / number` as `t * fl(1 / number)`, which can land one float32 step off the true quotient that
the CPU and both fused kernels compute. In the coordinate step, that step grows with (o + 0.5) into
one step of the source coordinate (3.8e-6 between 32 and 64 pixels), which moves the output by up
to 255 times that over 255 std (1.7e-5 in tests/test_fused_op.py): the oracle would depend on its
device. As written, every op is one IEEE-rounded float32 operation, the same on every device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lofi.cpp_ext.checks import check_inputs


def _axis(lo: torch.Tensor, hi: torch.Tensor, out: int, size: int):
    """Per-clip source rows/columns and weights: s = lo + (o + 0.5) * (hi - lo) / out - 0.5."""
    o = torch.arange(out, device=lo.device, dtype=torch.float32)
    step = (hi - lo) / torch.full_like(hi, out)  # a true division on CUDA too (module docstring)
    s = lo[:, None] + (o + 0.5) * step[:, None] - 0.5
    s = s.clamp(0, size - 1)
    i0 = s.floor()
    w = s - i0
    i0 = i0.long()
    return i0, (i0 + 1).clamp(max=size - 1), w


def lofi_sample_reference(
    frames: torch.Tensor,
    index: torch.Tensor,
    boxes: torch.Tensor,
    size: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """frames (T, H, W, 3) uint8; index (B, L, k) int64 frame numbers (temporal crop/resize);
    boxes (B, 4) float [x0, y0, x1, y1] in pixels, one spatial crop per clip; size (h, w).

    Returns (B, L, k, 3, h, w) in `dtype`, (x / 255 - mean) / std. Bad input raises ValueError
    (`lofi.cpp_ext.checks`), the same as the fused op's.
    """
    check_inputs(frames, index, boxes, size, mean, std, dtype)
    b, length, k = index.shape
    out_h, out_w = int(size[0]), int(size[1])
    _, in_h, in_w, _ = frames.shape
    boxes = boxes.to(device=frames.device, dtype=torch.float32)
    y0, y1, wy = _axis(boxes[:, 1], boxes[:, 3], out_h, in_h)
    x0, x1, wx = _axis(boxes[:, 0], boxes[:, 2], out_w, in_w)
    m = torch.tensor(mean, device=frames.device, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, device=frames.device, dtype=torch.float32).view(3, 1, 1)
    peak = torch.full((), 255.0, device=frames.device, dtype=torch.float32)  # a tensor divisor
    clips = []
    for i in range(b):
        x = frames[index[i].reshape(-1).to(frames.device)].float()  # (N, H, W, 3)
        top, bot = x[:, y0[i]], x[:, y1[i]]
        rows = top + (bot - top) * wy[i][None, :, None, None]
        left, right = rows[:, :, x0[i]], rows[:, :, x1[i]]
        x = left + (right - left) * wx[i][None, None, :, None]
        x = (x.permute(0, 3, 1, 2) / peak - m) / s
        clips.append(x.to(dtype))
    return torch.stack(clips).reshape(b, length, k, 3, out_h, out_w)
