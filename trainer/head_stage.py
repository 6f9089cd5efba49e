"""Stage `head`: freeze the encoder, extract full-fidelity features, train a fresh head on them.

The head's input is standardised per channel with the training features' statistics (frozen
buffers of the head, so export and streaming apply them too; `head.standardize`). The recipe is
then ActionFormer's: whole training videos (`head.crop`: a random 90-100 % crop of each, every
epoch) batched with masks so each is computed as on its own, AdamW with weight decay on the
convolution weights only, linear warm-up then cosine decay, gradient clipping, and an EMA of
the weights, which is what validation scores and what the checkpoint's `head` holds (the raw
weights are `head_train`, so `--resume` continues exactly). With `head.crop` null (or
`data.mode: resize`) it trains on the fixed overlapping windows instead.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from lofi.runtime.errors import LofiError
from lofi.trainer.checkpoint import build_encoder, build_head, load_checkpoint, load_state
from lofi.trainer.data import snippet_spec, untrimmed, video_windows
from lofi.trainer.distributed import Dist
from lofi.trainer.features import evaluate_head, extract_features, map_values, window_features
from lofi.trainer.head import PyramidHead
from lofi.trainer.head_kinds import head_kind
from lofi.trainer.loop import Stage
from lofi.trainer.losses import assign
from lofi.trainer.schema import Config, HeadConfig


@dataclass(frozen=True)
class VideoFeatures:
    """One training video's features and its segments (snippet coordinates, class)."""

    video: str
    length: int
    segments: torch.Tensor  # (n, 3)


def crop_segments(segments: torch.Tensor, first: int, length: int, keep: float = 0.5):
    """Segments of a crop [first, first + length): shifted, clipped to it, and kept when at
    least `keep` of each stays inside (ActionFormer's truncation rule)."""
    if len(segments) == 0:
        return segments
    s = segments.clone()
    s[:, :2] -= first
    a, b = s[:, 0].clamp(0, length), s[:, 1].clamp(0, length)
    inside = (b - a) >= keep * (s[:, 1] - s[:, 0]).clamp(min=1e-6)
    s[:, 0], s[:, 1] = a, b
    return s[inside & (b > a)]


def draw_crops(
    lengths: list[int], scale: list[float], rng: np.random.Generator
) -> list[tuple[int, int]]:
    """(first, length) of a random crop of each video: a `scale` fraction of it, anywhere."""
    out = []
    for n in lengths:
        size = min(n, max(1, int(round(rng.uniform(scale[0], scale[1]) * n))))
        out.append((int(rng.integers(0, n - size + 1)), size))
    return out


class ModelEMA:
    """Exponential moving average of a module's weights. The decay ramps up as
    min(decay, (1 + n) / (10 + n)) over the first updates, so short runs still move."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.counter = _Counter()

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        n = float(self.counter.n)
        d = min(self.decay, (1.0 + n) / (10.0 + n))
        for e, p in zip(self.module.parameters(), model.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1.0 - d)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)
        self.counter.n += 1


class _Counter(nn.Module):
    """EMA updates so far, as a buffer so it travels in the checkpoint."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("n", torch.zeros((), dtype=torch.int64))


def decay_groups(module: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Weight decay on convolution weights only, not on biases, norm gains or level scales."""
    decay, rest = [], []
    for name, p in module.named_parameters():
        (decay if p.ndim > 1 and name.endswith("weight") else rest).append(p)
    return [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": rest, "lr": lr, "weight_decay": 0.0},
    ]


class HeadStage(Stage):
    name, stream, best_key = "head", 3, "val_avg_mAP"
    s: HeadConfig

    def __init__(self, cfg: Config, dev: torch.device, dist: Dist):
        super().__init__(cfg, dev, dist)
        s = self.s
        self.spec = snippet_spec(cfg)
        self.train_gt, self.val_gt, self.cache, self.labels = untrimmed(cfg)
        if not s.init:
            raise LofiError(
                "head stage needs head.init: a pretrain or lofi checkpoint for the encoder"
            )
        if s.schedule not in ("cosine", "halve"):
            raise LofiError(f"head.schedule must be cosine or halve, not {s.schedule!r}")
        init = load_checkpoint(s.init)
        self.encoder = build_encoder(cfg, pretrained=False).to(dev)
        load_state(self.encoder, init["encoder"], "encoder", s.init)
        torch.manual_seed(cfg.seed)
        self.head = build_head(cfg, self.encoder.out_dim, len(self.labels)).to(dev)
        t0 = time.perf_counter()
        args = (self.cache, self.train_gt, self.spec, cfg, dev)
        self.train_feats = extract_features(self.encoder, *args)
        self.val_feats = extract_features(
            self.encoder, self.cache, self.val_gt, self.spec, cfg, dev
        )
        self.extract_seconds = time.perf_counter() - t0
        if s.standardize and isinstance(self.head, PyramidHead):
            self.head.set_input_stats(torch.cat(list(self.train_feats.values())))
        self.ema = ModelEMA(self.head, float(s.ema)) if s.ema else None
        self.kind = head_kind(self.head, cfg)
        self.whole = (
            bool(s.crop) and self.spec.mode == "window" and isinstance(self.head, PyramidHead)
        )
        if self.whole:
            self.videos = self._videos()
        else:
            self.windows = video_windows(self.train_gt, self.cache, self.spec, 1, self.labels)
            self.x = window_features(self.train_feats, self.windows)
            self.valid = torch.stack([w.valid() for w in self.windows])
            self.targets = self.kind.targets(self.windows, len(self.labels))

    def _videos(self) -> list[VideoFeatures]:
        out = []
        for vid, info in self.train_gt.videos.items():
            grid, _ = self.spec.grid(self.cache.fps, len(self.cache.frames(vid)), 1)
            segs = [
                (float(grid.index(s.start)), float(grid.index(s.end)), self.labels.index(s.label))
                for s in info.segments
                if s.label in self.labels
            ]
            seg = torch.tensor(segs, dtype=torch.float32).reshape(-1, 3)
            out.append(VideoFeatures(vid, len(self.train_feats[vid]), seg))
        return out

    def modules(self) -> dict[str, nn.Module]:
        if self.ema is None:
            return {"encoder": self.encoder, "head": self.head}
        return {
            "encoder": self.encoder,
            "head": self.ema.module,
            "head_train": self.head,
            "head_ema_updates": self.ema.counter,
        }

    def trainable(self) -> nn.Module:
        return self.head

    def param_groups(self) -> list[dict]:
        return decay_groups(self.head, self.s.lr, self.s.weight_decay)

    def lr_factor(self, epoch: int, step: int, steps: int) -> float:
        if self.s.schedule != "cosine":
            return super().lr_factor(epoch, step, steps)
        t, warm = epoch * steps + step, self.s.warmup_epochs * steps
        if t < warm:
            return (t + 1) / warm
        total = max(1, self.s.epochs * steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * (t - warm) / total))

    def after_step(self) -> None:
        if self.ema is not None:
            self.ema.update(self.head)

    def begin_epoch(self, epoch: int, rng: np.random.Generator) -> int:
        n = len(self.videos) if self.whole else len(self.windows)
        self.order = rng.permutation(n)
        if self.whole:
            self.crops = draw_crops([v.length for v in self.videos], self.s.crop, rng)
        return max(1, math.ceil(n / self.s.batch_size))

    def batch(self, epoch: int, step: int, rng: np.random.Generator):
        bs = self.s.batch_size
        sel = [int(i) for i in self.order[step * bs : (step + 1) * bs]]
        if self.whole:
            return self._video_batch(sel)
        normaliser = self.kind.normaliser([self.targets[i] for i in sel], self.valid[sel])
        return self.micro_batches(sel), normaliser, 1.0

    def _video_batch(self, sel: list[int]):
        """Crops of the selected videos, padded to one length (a multiple of the top stride);
        targets over that length. Items: (video, first, length, padded, batch length, targets)."""
        strides = self.head.strides
        top = max(strides)
        pads = [max(top, math.ceil(self.crops[i][1] / top) * top) for i in sel]
        total = max(pads)
        items, targets, valid = [], [], torch.zeros(len(sel), total, dtype=torch.bool)
        for j, (i, pad) in enumerate(zip(sel, pads)):
            first, length = self.crops[i]
            segs = crop_segments(self.videos[i].segments, first, length)
            t = assign(segs, strides, [total // s for s in strides], len(self.labels))
            valid[j, :length] = True
            targets.append(t)
            items.append((i, first, length, pad, total, t))
        return self.micro_batches(items), self.kind.normaliser(targets, valid), 1.0

    def loss(self, model: nn.Module, micro: list, normaliser: float):
        if self.whole:
            return self._video_loss(model, micro, normaliser)
        valid = self.valid[micro].to(self.dev)
        x = self.x[micro].to(self.dev) * valid[..., None]
        targets = [self.targets[i] for i in micro]
        return self.kind.loss(model(x.transpose(1, 2)), targets, valid, normaliser)

    def _video_loss(self, model: nn.Module, micro: list, normaliser: float):
        total = micro[0][4]
        dim = next(iter(self.train_feats.values())).shape[1]
        x = torch.zeros(len(micro), total, dim)
        mask = torch.zeros(len(micro), total, dtype=torch.bool)
        valid = torch.zeros(len(micro), total, dtype=torch.bool)
        for j, (i, first, length, pad, *_) in enumerate(micro):
            x[j, :length] = self.train_feats[self.videos[i].video][first : first + length]
            mask[j, :pad] = True
            valid[j, :length] = True
        x, mask, valid = x.to(self.dev), mask.to(self.dev), valid.to(self.dev)
        targets = [t for *_, t in micro]
        return self.kind.loss(model(x.transpose(1, 2), mask), targets, valid, normaliser)

    def validate(self, epoch: int) -> dict[str, Any]:
        head = self.head if self.ema is None else self.ema.module
        report = evaluate_head(
            head, self.val_feats, self.val_gt, self.cache, self.spec, self.cfg, self.labels
        )
        self.report = report.as_json()
        return map_values(report)

    def extra(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "fps": self.cache.fps,
            "input_size": list(self.cache.size),
            "encoder_from": str(self.s.init),
        }
