"""What differs between localization heads, behind one interface the stages use: targets, the
loss normaliser, the loss, and whole-video detection (through the runtime's decoding and NMS).

`pyramid` is the project's anchor-free pyramid head (window protocol, streamable); `gtad` is
G-TAD, the head the paper used (resize protocol: L snippets over the whole video).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
from lofi.runtime.gtad_decode import gtad_detect
from lofi.runtime.postprocess import HeadGeometry, detect
from lofi.runtime.snippets import SnippetGrid
from lofi.trainer.data import Window, window_targets
from lofi.trainer.gtad import ExportableGTAD, GTADHead
from lofi.trainer.gtad_loss import gtad_loss, gtad_targets
from lofi.trainer.losses import count_positives, detection_loss
from lofi.trainer.schema import Config


class PyramidKind:
    def __init__(self, head: nn.Module, cfg: Config):
        self.head, self.cfg = head, cfg

    def targets(self, windows: list[Window], num_classes: int) -> list:
        return window_targets(windows, self.head.strides, num_classes)

    def normaliser(self, targets: list, valid: torch.Tensor) -> float:
        """Positive positions of the global batch (focal/DIoU losses are per positive)."""
        return max(1.0, count_positives(targets, valid, self.head.strides))

    def inputs(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, L, C) snippet features as the head takes them: channels first, zero-padded to
        whole strides of its coarsest level."""
        top = max(self.head.strides)
        pad = math.ceil(feats.shape[1] / top) * top - feats.shape[1]
        return nn.functional.pad(feats.transpose(1, 2), (0, pad))

    def loss(self, outputs, targets: list, valid: torch.Tensor, normaliser: float):
        loss, parts = detection_loss(outputs, targets, valid, self.head.strides, normaliser)
        return loss, {"loss": loss.item(), **parts}

    @torch.no_grad()
    def detect(self, feats: torch.Tensor, grid: SnippetGrid, duration: float, labels, vid: str):
        n = len(feats)
        dev = next(self.head.parameters()).device
        outs = [
            (c[0].cpu().numpy(), r[0].cpu().numpy())
            for c, r in self.head(self.inputs(feats[None].to(dev)))
        ]
        geo = HeadGeometry(
            labels,
            grid,
            self.head.strides,
            self.cfg.model.max_reach,
            self.cfg.postprocess.runtime(),
        )
        return detect(outs, geo, n, duration, vid)


class GTADKind:
    def __init__(self, head: GTADHead, cfg: Config):
        self.head, self.cfg = head, cfg

    def targets(self, windows: list[Window], num_classes: int) -> list:
        """Segments on the head's T grid: resize grids of any length share their first and
        last snippet centres, so positions scale by (T - 1) / (L - 1)."""
        t = self.head.length
        out = []
        for w in windows:
            seg = w.segments.clone()
            seg[:, :2] *= (t - 1) / max(1, w.length - 1)
            out.append(gtad_targets(seg, t, self.head.max_duration, num_classes))
        return out

    def inputs(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, L, C) snippet features channels first; the head resizes any L to its T."""
        return feats.transpose(1, 2)

    def normaliser(self, targets: list, valid: torch.Tensor) -> float:
        """G-TAD's loss is a mean over the batch: weight each micro-batch by its share."""
        return float(len(targets))

    def loss(self, outputs, targets: list, valid: torch.Tensor, normaliser: float):
        loss, parts = gtad_loss(outputs, targets)
        share = len(targets) / normaliser
        return loss * share, {
            "loss": loss.item() * share,
            **{k: v * share for k, v in parts.items()},
        }

    @torch.no_grad()
    def detect(self, feats: torch.Tensor, grid: SnippetGrid, duration: float, labels, vid: str):
        dev = next(self.head.parameters()).device
        outs = ExportableGTAD(self.head).eval()(feats.T[None].to(dev))
        arrays = tuple(np.asarray(o[0].cpu().numpy()) for o in outs)
        post = self.cfg.postprocess.runtime()
        return gtad_detect(arrays, grid, duration, labels, post, vid)


def head_kind(head: nn.Module, cfg: Config) -> PyramidKind | GTADKind:
    return GTADKind(head, cfg) if isinstance(head, GTADHead) else PyramidKind(head, cfg)
