"""Pure-torch LoFi transform: temporal gather + per-clip crop + bilinear resize + normalise + cast.

This is the oracle for the fused kernels and the chain they replace.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


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

    Returns (B, L, k, 3, h, w) in `dtype`: bilinear with half-pixel centres, edges clamped,
    then (x / 255 - mean) / std.
    """
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError("frames must be (T, H, W, 3) uint8")
    if index.dim() != 3:
        raise ValueError("index must be (B, L, k)")
    b, length, k = index.shape
    out_h, out_w = int(size[0]), int(size[1])
    _, in_h, in_w, _ = frames.shape
    x = frames[index.reshape(-1).to(frames.device)].permute(0, 3, 1, 2).float()
    boxes = boxes.to(device=x.device, dtype=torch.float32)
    ys = (
        boxes[:, 1, None]
        + (torch.arange(out_h, device=x.device) + 0.5)
        * ((boxes[:, 3] - boxes[:, 1]) / out_h)[:, None]
    )
    xs = (
        boxes[:, 0, None]
        + (torch.arange(out_w, device=x.device) + 0.5)
        * ((boxes[:, 2] - boxes[:, 0]) / out_w)[:, None]
    )
    # grid_sample (align_corners=False) maps normalised g to pixel ((g + 1) * W - 1) / 2;
    # pixel-centre sampling positions are ys - 0.5, so g = 2 * ys / H - 1.
    gy = (2 * ys / in_h - 1)[:, :, None].expand(b, out_h, out_w)
    gx = (2 * xs / in_w - 1)[:, None, :].expand(b, out_h, out_w)
    grid = torch.stack([gx, gy], dim=-1).repeat_interleave(length * k, dim=0)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    m = torch.tensor(mean, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
    x = (x / 255.0 - m) / s
    return x.to(dtype).reshape(b, length, k, 3, out_h, out_w)
