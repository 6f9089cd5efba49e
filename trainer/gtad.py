"""G-TAD head (Xu et al., CVPR 2020), the head of the LoFi paper, for the `resize` protocol.

Input: (B, C, T) features of T snippets spread over a whole video (T fixed: the proposal map
is built for it; other lengths are resized to T). GCNeXt blocks mix a temporal stream (1D convolutions over neighbouring snippets) with a
semantic stream (edge convolutions over each snippet's k nearest neighbours in feature space);
SGAlign samples every (start, duration) sub-graph by linear interpolation; 2D convolutions over
that map predict each proposal's IoU with the ground truth twice (regression- and
classification-trained), and boundary branches predict start / end probabilities.

G-TAD is class-agnostic; on ActivityNet it labels proposals with an external video-level
classifier. Here a light per-snippet classifier on the GCNeXt features stands in for it: its
softmax, averaged over a proposal's snippets, gives the proposal's class probabilities
(`lofi.runtime.gtad_decode`), so Synth-TAL videos with several classes get labelled segments.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from lofi.runtime.gtad_decode import proposal_map


class GTADOutputs(NamedTuple):
    """Logits: start/end (B, T), confidence (B, 2, D, T) [regression, classification],
    per-snippet class logits (B, K, T)."""

    start: torch.Tensor
    end: torch.Tensor
    confidence: torch.Tensor
    classes: torch.Tensor


def knn(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, C, T) -> (B, T, k) indices of each snippet's k nearest snippets in feature space
    (itself included, as in G-TAD). Matmul + TopK: both plain ONNX ops."""
    sq = (x * x).sum(1)
    neg_dist = 2 * x.transpose(1, 2) @ x - sq[:, :, None] - sq[:, None, :]
    return neg_dist.topk(k, dim=-1).indices


def neighbours(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, C, T) features, (B, T, k) indices -> (B, C, T, k) neighbour features (GatherElements
    in ONNX: no batch-offset arithmetic, so the batch axis stays dynamic)."""
    flat = idx.flatten(1).unsqueeze(1).expand(-1, x.shape[1], -1)
    return torch.gather(x, 2, flat).unflatten(2, idx.shape[1:])


class GCNeXt(nn.Module):
    """Residual block: x + temporal stream + semantic stream, then ReLU. Both streams are
    ResNeXt bottlenecks (1x1 -> grouped -> 1x1, `groups` = cardinality); the semantic one runs on
    edges [x_j, x_i] to the k nearest neighbours j (re-computed on this block's input: the graph
    is dynamic) and max-pools over them."""

    def __init__(self, dim: int, k: int = 3, groups: int = 32, width_group: int = 4):
        super().__init__()
        width = groups * width_group
        self.k = k
        self.temporal = nn.Sequential(
            nn.Conv1d(dim, width, 1),
            nn.ReLU(),
            nn.Conv1d(width, width, 3, padding=1, groups=groups),
            nn.ReLU(),
            nn.Conv1d(width, dim, 1),
        )
        self.semantic = nn.Sequential(
            nn.Conv2d(2 * dim, width, 1),
            nn.ReLU(),
            nn.Conv2d(width, width, 1, groups=groups),
            nn.ReLU(),
            nn.Conv2d(width, dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nb = neighbours(x, knn(x, self.k))
        edges = torch.cat([nb, x.unsqueeze(-1).expand_as(nb)], 1)
        return torch.relu(x + self.temporal(x) + self.semantic(edges).amax(-1))


def sampling_grid(length: int, max_duration: int, samples: int, context: float) -> torch.Tensor:
    """SGAlign's sampling points as `grid_sample` grids (samples, 1, D, T, 2): point n of
    proposal (d, s), for `samples` points evenly spread over the proposal widened by `context` x
    its length on both sides. x is the snippet position normalised to [-1, 1] over the T
    snippets (align_corners=True); y = 0 on a one-row image."""
    start, end, _ = proposal_map(length, max_duration)
    span = end - start
    lo, hi = start - context * span, end + context * span
    frac = (np.arange(samples) + 0.5) / samples
    pos = lo[None] + frac[:, None, None] * (hi - lo)[None]  # (N, D, T) in snippets
    x = 2 * pos / (length - 1) - 1
    grid = np.stack([x, np.zeros_like(x)], -1)[:, None]
    return torch.from_numpy(grid.astype(np.float32))


class SGAlign(nn.Module):
    """Sub-graph alignment fused with the first 1x1 layer of the localization module.

    G-TAD samples N points per proposal, by linear interpolation over the proposal widened by
    `context` x its length each side, from the temporal stream (the GCNeXt features) and N
    from the semantic context (each snippet's mean over its k nearest neighbours), giving a
    (2C*N, D, T) map, then applies a 1x1 conv. Sampling is linear, so the conv can act first:
    project each snippet to N per-point vectors, then sum their interpolations. The result is
    the same function, without materialising the 2C*N-channel map (8192 channels at G-TAD's
    sizes) or its multiply-adds."""

    def __init__(
        self,
        dim: int,
        out_dim: int,
        length: int,
        max_duration: int,
        samples: int,
        k: int,
        context: float,
    ):
        super().__init__()
        self.k, self.samples, self.out_dim = k, samples, out_dim
        self.proj = nn.Conv1d(2 * dim, samples * out_dim, 1, bias=False)
        self.bias = nn.Parameter(torch.empty(out_dim))
        bound = (2 * dim * samples) ** -0.5  # the default init of the equivalent 1x1 conv
        nn.init.uniform_(self.proj.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)
        grid = sampling_grid(length, max_duration, samples, context)
        self.register_buffer("grid", grid, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, dim, T) -> (B, out_dim, D, T), before the localization module's first ReLU."""
        context = neighbours(x, knn(x, self.k)).mean(-1)
        y = self.proj(torch.cat([x, context], 1)).unflatten(1, (self.samples, self.out_dim))
        out = self.bias[:, None, None]
        for n in range(self.samples):
            grid = self.grid[n].expand(x.shape[0], -1, -1, -1)
            out = out + F.grid_sample(y[:, n, :, None], grid, align_corners=True)
        return out


class GTADHead(nn.Module):
    """(B, in_dim, L) -> GTADOutputs (logits) on the T = `length` grid; D = `max_duration`
    (default T - 1: a proposal may span the whole video). Defaults are G-TAD's sizes.

    The proposal map is built for T, so an input of another length L (T-LoFi feeds L = T / r_t
    snippets) is first resized to T by linear interpolation, as G-TAD rescales every ActivityNet
    video to 100 snippets. Corners align: resize grids of any L share their first and last
    snippet centres, so targets stay on the T grid."""

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        length: int = 100,
        max_duration: int | None = None,
        dim: int = 256,
        groups: int = 32,
        width_group: int = 4,
        k: int = 3,
        samples: int = 16,
        context: float = 0.5,
        map_dim: int = 512,
        hidden_2d: int = 128,
    ):
        super().__init__()
        self.length = length
        self.max_duration = max_duration or length - 1

        def block() -> GCNeXt:
            return GCNeXt(dim, k, groups, width_group)

        self.backbone1 = nn.Sequential(nn.Conv1d(in_dim, dim, 3, padding=1), nn.ReLU(), block())
        self.backbone2 = block()
        self.start = nn.Sequential(block(), nn.Conv1d(dim, 1, 1))
        self.end = nn.Sequential(block(), nn.Conv1d(dim, 1, 1))
        self.classifier = nn.Conv1d(dim, num_classes, 3, padding=1)
        self.align = SGAlign(dim, map_dim, length, self.max_duration, samples, k, context)
        self.localization = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(map_dim, hidden_2d, 1),
            nn.ReLU(),
            nn.Conv2d(hidden_2d, hidden_2d, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden_2d, hidden_2d, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden_2d, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> GTADOutputs:
        if x.shape[-1] != self.length:
            x = F.interpolate(x, self.length, mode="linear", align_corners=True)
        base = self.backbone1(x)
        feat = self.backbone2(base)
        return GTADOutputs(
            self.start(base).squeeze(1),
            self.end(base).squeeze(1),
            self.localization(self.align(feat)),
            self.classifier(feat),
        )


class ExportableGTAD(nn.Module):
    """Probabilities for ONNX and decoding: start, end (B, T), confidence (B, 2, D, T),
    class_probs (B, K, T) (per-snippet softmax). Feed `[o[0] for o in outputs]` to
    `lofi.runtime.gtad_decode.gtad_detect`."""

    output_names = ["start", "end", "confidence", "class_probs"]

    def __init__(self, head: GTADHead):
        super().__init__()
        self.head = head

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        o = self.head(features)
        return (
            torch.sigmoid(o.start),
            torch.sigmoid(o.end),
            torch.sigmoid(o.confidence),
            torch.softmax(o.classes, 1),
        )
