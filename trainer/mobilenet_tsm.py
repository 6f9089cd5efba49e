"""MobileNetV2 TSM encoder: the backbone of TSM's online (edge) demo, cheap enough for a Jetson."""

from __future__ import annotations

from pathlib import Path

# module import, not `from ... import`: encoder.py may import this module back at its top
import lofi.trainer.encoder as encoder
import torch
import torch.nn as nn
import torchvision
from lofi.trainer.pretrained import load_backbone_weights
from torchvision.models.mobilenetv2 import InvertedResidual

SHIFT_FOLD_DIV = 8


class TemporalShift(nn.Module):
    """Shift channels in time on the way into the wrapped module. The attribute is `net`, as in
    TSM's own wrapper, so the shifted model's keys read like the TSM release (`conv.0.net.0.weight`)
    and load_backbone_weights maps them back onto torchvision names."""

    def __init__(self, net: nn.Module, frames: int, fold_div: int = SHIFT_FOLD_DIV):
        super().__init__()
        self.net, self.frames, self.fold_div = net, frames, fold_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(encoder.temporal_shift(x, self.frames, self.fold_div))


def _stride(module: nn.Module) -> int:
    return max((c.stride[0] for c in module.modules() if isinstance(c, nn.Conv2d)), default=1)


class MobileNetV2TSM(nn.Module):
    """torchvision mobilenet_v2 features with a temporal shift on the residual branch of every
    InvertedResidual that has a skip connection (TSM's placement: the identity path keeps the
    unshifted input). (N, 3, H, W) frames, N = snippets * frames -> (N, 1280)."""

    out_dim = 1280

    def __init__(self, frames: int, weights: str | None = None):
        super().__init__()
        net = torchvision.models.mobilenet_v2(weights=None)
        if weights:  # before the wrappers go in, so torchvision names line up
            load_backbone_weights(net, Path(weights), "mobilenet_v2")
        for block in net.features:
            if isinstance(block, InvertedResidual) and block.use_res_connect:
                block.conv[0] = TemporalShift(block.conv[0], frames)
        self.frames = frames
        self.features = net.features  # the classifier is dropped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))

    def stages(self) -> list[nn.Module]:
        """`features` cut before each stride-2 block (5 stages), for per-stage activation
        checkpointing: running them in order then `.mean(dim=(2, 3))` is `forward`."""
        starts = [i for i, m in enumerate(self.features) if i == 0 or _stride(m) == 2]
        bounds = [*starts, len(self.features)]
        return [self.features[a:b] for a, b in zip(bounds, bounds[1:])]
