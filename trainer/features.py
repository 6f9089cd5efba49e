"""Full-fidelity snippet features of whole videos, and head evaluation on them.

Used by the head stage (features once, head trained on them) and by every detector stage's
validation; decoding, NMS and mAP are the runtime's, so training and deployment score alike.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from lofi.cpp_ext import lofi_sample
from lofi.runtime.annotations import GroundTruth
from lofi.runtime.evaluation import MapReport, evaluate, parse_tiou
from lofi.trainer.data import FrameCache, SnippetSpec, Window
from lofi.trainer.run import bar
from lofi.trainer.schema import Config


def encode(
    encoder: nn.Module,
    frames: torch.Tensor,
    index: torch.Tensor,
    boxes: torch.Tensor,
    size: tuple[int, int],
    cfg: Config,
    device: torch.device,
) -> torch.Tensor:
    """uint8 frames cross to the device; the LoFi sampling op makes the encoder input there,
    already in the autocast dtype when training in bf16/fp16 (no full-precision copy is kept).
    Index and boxes stay on the CPU, where the op checks them without a device sync."""
    dtype = torch.float32
    if torch.is_autocast_enabled(device.type):
        dtype = torch.get_autocast_dtype(device.type)
    x = lofi_sample(
        frames.to(device, non_blocking=True),
        index,
        boxes,
        size,
        cfg.data.mean,
        cfg.data.std,
        dtype,
    )
    return encoder(x)


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    cache: FrameCache,
    gt: GroundTruth,
    spec: SnippetSpec,
    cfg: Config,
    dev: torch.device,
    batch: int = 32,
) -> dict[str, torch.Tensor]:
    """Full-fidelity snippet features of every video (all snippets, or the resize grid)."""
    encoder.eval()
    out = {}
    h, w = cache.size
    box = torch.tensor([[0.0, 0.0, w, h]])
    for vid in bar(gt.videos, "features"):
        frames = cache.frames(vid)
        grid, length = spec.grid(cache.fps, len(frames), 1)
        n = length if spec.mode == "resize" else grid.count(len(frames))
        idx = grid.frame_indices(0, n, len(frames))
        video = torch.from_numpy(np.array(frames)).to(dev)
        feats = [
            encode(
                encoder, video, torch.from_numpy(idx[i : i + batch])[None], box, (h, w), cfg, dev
            )[0]
            for i in range(0, n, batch)
        ]
        out[vid] = torch.cat(feats).cpu()
    return out


def window_features(feats: dict[str, torch.Tensor], windows: list[Window]) -> torch.Tensor:
    x = torch.zeros(len(windows), windows[0].length, next(iter(feats.values())).shape[1])
    for i, w in enumerate(windows):
        f = feats[w.video][w.first : w.first + w.length]
        x[i, : len(f)] = f
    return x


@torch.no_grad()
def evaluate_head(
    head: nn.Module,
    feats: dict[str, torch.Tensor],
    gt: GroundTruth,
    cache: FrameCache,
    spec: SnippetSpec,
    cfg: Config,
    labels: list[str],
) -> MapReport:
    """Whole-video head inference + the runtime's decoding, NMS and mAP (one implementation)."""
    from lofi.trainer.head_kinds import head_kind

    head.eval()
    kind = head_kind(head, cfg)
    segments = []
    for vid, f in feats.items():
        n_frames = len(cache.frames(vid))
        grid, _ = spec.grid(cache.fps, n_frames, 1)
        segments += kind.detect(f, grid, n_frames / cache.fps, labels, vid)
    return evaluate(gt, segments, parse_tiou(cfg.data.tiou))


def map_values(report: MapReport) -> dict[str, float]:
    """The first threshold's mAP (0.5 for ActivityNet, 0.3 for THUMOS14) and the average."""
    return {f"val_mAP@{report.tiou[0]:g}": report.mAP[0], "val_avg_mAP": report.average_mAP}
