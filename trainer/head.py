"""Anchor-free temporal-pyramid localization head (ActionFormer-style, convolution only).

Embedding convs -> `blocks` residual conv blocks at stride 1 -> per further level a max-pool by
2 and `blocks` residual conv blocks -> classification and regression heads of `head_layers` convs
each, shared by the levels; optionally a channel LayerNorm after every conv but the outputs
(`norm`). The previous, lighter head is norm=False, residual=False, blocks=1, embed_layers=1,
head_layers=2 (same layers, initialisation and outputs). The input is
standardised per channel with frozen statistics (`set_input_stats`, set by the head stage from
its training features; identity until then), so the head trains alike whatever the scale of the
encoder's features.
Every op is local (k=3 convs, per-position channel LayerNorm, aligned max-pools): the receptive
field is finite, so the runtime can run the head on windows with `context()` snippets of margin
and get exactly the whole-video outputs.
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


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of (B, C, L), at each position on its own (no temporal
    statistics, so a window's outputs do not depend on what else is in it)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(1, keepdim=True)
        x = x * torch.rsqrt((x * x).mean(1, keepdim=True) + self.eps)
        return x * self.weight[:, None] + self.bias[:, None]


def _norm(dim: int, on: bool) -> nn.Module:
    return ChannelNorm(dim) if on else nn.Identity()


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask


class ConvLayer(nn.Module):
    """conv k -> channel LayerNorm -> ReLU."""

    def __init__(self, in_dim: int, dim: int, kernel: int, norm: bool):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, dim, kernel, 1, kernel // 2)
        self.norm = _norm(dim, norm)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return _masked(torch.relu(self.norm(self.conv(x))), mask)


class ConvBlock(nn.Module):
    """Residual block: conv -> norm -> ReLU -> conv -> norm, plus the input, then ReLU."""

    def __init__(self, dim: int, kernel: int, norm: bool):
        super().__init__()
        self.conv1 = nn.Conv1d(dim, dim, kernel, 1, kernel // 2)
        self.norm1 = _norm(dim, norm)
        self.conv2 = nn.Conv1d(dim, dim, kernel, 1, kernel // 2)
        self.norm2 = _norm(dim, norm)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = _masked(torch.relu(self.norm1(self.conv1(x))), mask)
        return _masked(torch.relu(x + self.norm2(self.conv2(h))), mask)


class PyramidHead(nn.Module):
    """(B, D, L) features, L a multiple of 2**(levels-1) -> per level (cls logits, distances).

    `mask` (B, L), optional and for training only: positions at and after each sample's end
    (a multiple of the largest stride) are zeroed after every layer, which is exactly what the
    sample computes as a tensor of its own length (convolutions pad with zeros). Export and
    inference pass no mask.
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        dim: int = 128,
        levels: int = 4,
        prior: float = 0.01,
        dropout: float = 0.1,
        norm: bool = False,
        blocks: int = 1,
        head_layers: int = 3,
        kernel: int = 3,
        embed_layers: int = 2,
        residual: bool = True,
    ):
        super().__init__()
        if kernel % 2 == 0 or kernel < 1:
            raise ValueError("kernel must be odd")
        if embed_layers < 1 or head_layers < 1:
            raise ValueError("embed_layers and head_layers must be at least 1")
        self.levels = levels
        self.strides = [2**i for i in range(levels)]
        self.kernel, self.norm = kernel, norm
        self.embed_layers, self.blocks, self.head_layers = embed_layers, blocks, head_layers
        self.residual = residual
        self.register_buffer("in_mean", torch.zeros(in_dim))
        self.register_buffer("in_scale", torch.ones(in_dim))
        self.dropout = nn.Dropout(dropout)
        self.embed = nn.ModuleList(
            ConvLayer(in_dim if i == 0 else dim, dim, kernel, norm) for i in range(embed_layers)
        )
        self.pool = nn.MaxPool1d(2, 2)
        self.blocks_at = nn.ModuleList(
            nn.ModuleList(
                ConvBlock(dim, kernel, norm) if residual else ConvLayer(dim, dim, kernel, norm)
                for _ in range(blocks)
            )
            for _ in range(levels)
        )
        self.cls_tower = nn.ModuleList(
            ConvLayer(dim, dim, kernel, norm) for _ in range(head_layers - 1)
        )
        self.cls_out = nn.Conv1d(dim, num_classes, kernel, 1, kernel // 2)
        self.reg_tower = nn.ModuleList(
            ConvLayer(dim, dim, kernel, norm) for _ in range(head_layers - 1)
        )
        self.reg_out = nn.Conv1d(dim, 2, kernel, 1, kernel // 2)
        self.scales = nn.ModuleList(Scale() for _ in range(levels))
        nn.init.constant_(self.cls_out.bias, -math.log((1 - prior) / prior))

    @torch.no_grad()
    def set_input_stats(self, features: torch.Tensor, eps: float = 1e-3) -> None:
        """Standardise inputs with the per-channel mean and std of `features` (N, D)."""
        features = features.to(self.in_mean)
        self.in_mean.copy_(features.mean(0))
        self.in_scale.copy_(1.0 / (features.std(0) + eps))

    def radius(self) -> int:
        """Snippets either side of a position's own span that its outputs depend on.

        A k-wide conv at stride s reaches (k // 2) * s snippets further each way; a max-pool
        by 2 whose windows are aligned to the larger stride reaches no further (output j at
        stride s covers exactly snippets [j*s, j*s + s)). Per level: the embedding, the blocks
        (two convs each, or one if not residual) of every level up to it, then the head's convs
        at its own stride.
        """
        half = self.kernel // 2
        r, worst = half * self.embed_layers, 0
        convs = 2 if self.residual else 1
        for s in self.strides:
            r += half * convs * self.blocks * s
            worst = max(worst, r + half * self.head_layers * s)
        return worst

    def context(self) -> int:
        """Snippets of margin a window needs on each side for exact outputs: the receptive
        radius rounded up to a multiple of the largest stride (keeps the pools aligned)."""
        top = self.strides[-1]
        return math.ceil(self.radius() / top) * top

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        masks = None
        if mask is not None:
            masks = [mask[:, None, ::s].to(x.dtype) for s in self.strides]
        at = (lambda level: None) if masks is None else (lambda level: masks[level])
        x = (x - self.in_mean[:, None]) * self.in_scale[:, None]
        x = _masked(self.dropout(x), at(0))
        for layer in self.embed:
            x = layer(x, at(0))
        feats = []
        for level, blocks in enumerate(self.blocks_at):
            if level:
                x = self.pool(x)
            for block in blocks:
                x = block(x, at(level))
            feats.append(x)
        outs = []
        for level, (f, scale) in enumerate(zip(feats, self.scales)):
            c = r = f
            for layer in self.cls_tower:
                c = layer(c, at(level))
            for layer in self.reg_tower:
                r = layer(r, at(level))
            cls = self.cls_out(c)
            reg = torch.relu(scale(self.reg_out(r)))
            outs.append((cls, reg))
        return outs


class ExportableHead(nn.Module):
    """Flat outputs cls_0, reg_0, cls_1, ... for ONNX."""

    def __init__(self, head: PyramidHead):
        super().__init__()
        self.head = head

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t for pair in self.head(features) for t in pair)
