"""Anchor-free temporal-pyramid localization head (ActionFormer-style, convolutional).

Fully convolutional with a finite receptive field, so the runtime can run it on windows with
`context()` snippets of margin and get exactly the whole-video outputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


class Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class PyramidHead(nn.Module):
    """(B, D, L) features, L a multiple of 2**(levels-1) -> per level (cls logits, distances)."""

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        dim: int = 128,
        levels: int = 4,
        prior: float = 0.01,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.levels = levels
        self.strides = [2**i for i in range(levels)]
        self.embed = nn.Sequential(
            nn.Dropout(dropout),
            nn.Conv1d(in_dim, dim, 3, 1, 1),
            nn.ReLU(),
            nn.Conv1d(dim, dim, 3, 1, 1),
            nn.ReLU(),
        )
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool1d(2, 2), nn.Conv1d(dim, dim, 3, 1, 1), nn.ReLU())
            for _ in range(levels - 1)
        )
        self.cls_tower = nn.Sequential(nn.Conv1d(dim, dim, 3, 1, 1), nn.ReLU())
        self.cls_out = nn.Conv1d(dim, num_classes, 3, 1, 1)
        self.reg_tower = nn.Sequential(nn.Conv1d(dim, dim, 3, 1, 1), nn.ReLU())
        self.reg_out = nn.Conv1d(dim, 2, 3, 1, 1)
        self.scales = nn.ModuleList(Scale() for _ in range(levels))
        nn.init.constant_(self.cls_out.bias, -math.log((1 - prior) / prior))

    def context(self) -> int:
        """Snippets of margin a window needs on each side for exact outputs, rounded up to a
        multiple of the largest stride (two k=3 embed convs, one per level, two per tower)."""
        top = self.strides[-1]
        radius = 2 + sum(self.strides[1:]) + 2 * top + top
        return math.ceil(radius / top) * top

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        feats = [self.embed(x)]
        for down in self.down:
            feats.append(down(feats[-1]))
        outs = []
        for f, scale in zip(feats, self.scales):
            cls = self.cls_out(self.cls_tower(f))
            reg = torch.relu(scale(self.reg_out(self.reg_tower(f))))
            outs.append((cls, reg))
        return outs


class ExportableHead(nn.Module):
    """Flat outputs cls_0, reg_0, cls_1, ... for ONNX."""

    def __init__(self, head: PyramidHead):
        super().__init__()
        self.head = head

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t for pair in self.head(features) for t in pair)
