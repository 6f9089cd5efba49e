"""Stage `pretrain`: action-classification pre-training of the encoder on trimmed clips (ACP)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from lofi.runtime.annotations import load_ground_truth
from lofi.runtime.errors import LofiError
from lofi.trainer.checkpoint import build_encoder, init_encoder
from lofi.trainer.data import (
    FrameCache,
    clip_batch,
    clip_starts,
    crop_boxes,
    segment_clips,
    trimmed_clips,
)
from lofi.trainer.distributed import Dist, sync_batchnorm
from lofi.trainer.features import encode
from lofi.trainer.loop import Stage
from lofi.trainer.schema import Config, PretrainConfig


class Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, num_classes: int, cfg: Config, dev: torch.device):
        super().__init__()
        self.encoder = encoder
        self.fc = nn.Linear(encoder.out_dim, num_classes)
        self.cfg, self.dev = cfg, dev

    def forward(self, frames, index, boxes, size) -> torch.Tensor:
        return self.fc(encode(self.encoder, frames, index, boxes, size, self.cfg, self.dev)[:, 0])


class PretrainStage(Stage):
    """ACP (`source: clips`, a trimmed-clip set) or ACP+ (`source: segments`, the untrimmed
    training set's own action segments, usually from an ACP checkpoint via `init`)."""

    name, stream, best_key = "pretrain", 1, "val_acc"
    s: PretrainConfig

    def __init__(self, cfg: Config, dev: torch.device, dist: Dist):
        super().__init__(cfg, dev, dist)
        d = cfg.data
        if self.s.source == "segments":  # ACP+: the target's own action segments
            for key, value in (("annotations", d.annotations), ("cache", d.cache)):
                if not value:
                    raise LofiError(f"config needs data.{key} for pretrain.source=segments")
            gt = load_ground_truth(d.annotations)
            self.cache = FrameCache(d.cache, d.workers)
            pick = segment_clips
        elif self.s.source == "clips":
            for key, value in (("clips", d.clips), ("clip_cache", d.clip_cache)):
                if not value:
                    raise LofiError(f"config needs data.{key}")
            gt = load_ground_truth(d.clips)
            self.cache = FrameCache(d.clip_cache, d.workers)
            pick = trimmed_clips
        else:
            raise LofiError(f"pretrain.source must be clips or segments, not {self.s.source!r}")
        self.labels = gt.labels
        self.train = pick(gt, self.cache, "training")
        self.val = pick(gt, self.cache, "validation")
        if not self.train:
            raise LofiError("no training clips with a label")
        torch.manual_seed(cfg.seed)
        self.encoder = build_encoder(cfg, pretrained=not self.s.init).to(dev)
        init_encoder(self.encoder, self.s.init)
        self.model = Classifier(self.encoder, len(self.labels), cfg, dev).to(dev)
        t = cfg.train
        self.encoder.set_memory(t.checkpointing, t.channels_last)
        self.model = sync_batchnorm(self.model, t.sync_bn, dev, dist)
        self.steps = max(1, len(self.train) // self.s.batch_size)
        self.span = d.k * d.frame_stride

    def modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.model.encoder, "classifier": self.model.fc}

    def trainable(self) -> nn.Module:
        return self.model

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.model.parameters()), "lr": self.s.lr}]

    def begin_epoch(self, epoch: int, rng: np.random.Generator) -> int:
        self.order = rng.permutation(len(self.train))
        return self.steps

    def lr_factor(self, epoch: int, step: int, steps: int) -> float:
        """Cosine decay over the whole run, per step."""
        return 0.5 * (1 + math.cos(math.pi * (epoch * steps + step) / (self.s.epochs * steps)))

    def batch(self, epoch: int, step: int, rng: np.random.Generator):
        bs = self.s.batch_size
        clips = [self.train[i] for i in self.order[step * bs : (step + 1) * bs]]
        starts = clip_starts(clips, self.span, rng)
        h, w = self.cache.size
        boxes = crop_boxes(len(clips), h, w, self.s.crop_scale, rng)
        return self.micro_batches(list(zip(clips, starts, boxes))), float(len(clips)), 1.0

    def loss(self, model: nn.Module, micro: list, normaliser: float):
        clips, starts, boxes = zip(*micro)
        d = self.cfg.data
        frames, index = clip_batch(self.cache, list(clips), list(starts), d.k, d.frame_stride)
        logits = model(frames, index, torch.stack(boxes), self.cache.size)
        target = torch.tensor([c.label for c in clips], device=self.dev)
        loss = F.cross_entropy(logits.float(), target, reduction="sum") / normaliser
        correct = float((logits.argmax(1) == target).sum())
        return loss, {"loss": loss.item(), "correct": correct}

    def summarise(self, sums: dict[str, float], steps: int) -> dict[str, Any]:
        return {
            "loss": sums["loss"] / steps,
            "train_acc": sums["correct"] / (steps * self.s.batch_size),
        }

    @torch.no_grad()
    def validate(self, epoch: int) -> dict[str, Any]:
        if not self.val:
            return {}
        self.model.eval()
        rng = np.random.default_rng(0)
        d = self.cfg.data
        h, w = self.cache.size
        correct = 0
        for i in range(0, len(self.val), 64):
            batch = self.val[i : i + 64]
            starts = clip_starts(batch, self.span, rng)
            frames, index = clip_batch(self.cache, batch, starts, d.k, d.frame_stride)
            logits = self.model(frames, index, crop_boxes(len(batch), h, w, None, rng), (h, w))
            correct += int((logits.argmax(1).cpu() == torch.tensor([c.label for c in batch])).sum())
        return {"val_acc": correct / len(self.val)}

    def extra(self) -> dict[str, Any]:
        return {"labels": None, "clip_labels": self.labels, "head": None}
