"""Stage `lofi`: encoder + head trained end to end on low-fidelity batches (the LoFi stage)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
from lofi.trainer.checkpoint import build_encoder, build_head, init_encoder
from lofi.trainer.data import (
    Window,
    crop_boxes,
    gather_batch,
    snippet_spec,
    untrimmed,
    video_windows,
)
from lofi.trainer.detector import Detector
from lofi.trainer.distributed import Dist, sync_batchnorm
from lofi.trainer.encoder import freeze_batch_norm
from lofi.trainer.features import evaluate_head, extract_features, map_values
from lofi.trainer.fidelity import Fidelity, FidelitySchedule
from lofi.trainer.head_kinds import head_kind
from lofi.trainer.loop import Stage
from lofi.trainer.schema import Config, LofiConfig


class LofiStage(Stage):
    name, stream, best_key = "lofi", 2, "val_avg_mAP"
    s: LofiConfig

    def __init__(self, cfg: Config, dev: torch.device, dist: Dist):
        super().__init__(cfg, dev, dist)
        s = self.s
        self.spec = snippet_spec(cfg)
        self.train_gt, self.val_gt, self.cache, self.labels = untrimmed(cfg)
        self.schedule = FidelitySchedule(
            s.schedule, s.s_ratio, s.t_ratio, tuple(s.st_ratio), s.short_every
        )
        torch.manual_seed(cfg.seed)
        encoder = build_encoder(cfg, pretrained=not s.init).to(dev)
        init_encoder(encoder, s.init)
        head = build_head(cfg, encoder.out_dim, len(self.labels)).to(dev)
        self.kind = head_kind(head, cfg)
        t = cfg.train
        encoder.set_memory(t.checkpointing, t.channels_last)
        self.model = Detector(encoder, head, cfg, dev)
        self.model = sync_batchnorm(self.model, t.sync_bn, dev, dist)
        self.pools: dict[int, list[Window]] = {}
        full = self._pool(1)
        self.base_steps = max(1, len(full) // s.batch_size)

    def _pool(self, r_t: int) -> list[Window]:
        if r_t not in self.pools:
            self.pools[r_t] = video_windows(self.train_gt, self.cache, self.spec, r_t, self.labels)
        return self.pools[r_t]

    def modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.model.encoder, "head": self.model.head}

    def trainable(self) -> nn.Module:
        return self.model

    def param_groups(self) -> list[dict]:
        return [
            {"params": self.model.encoder.parameters(), "lr": self.s.lr},
            {"params": self.model.head.parameters(), "lr": self.s.head_lr},
        ]

    def train_mode(self) -> None:
        self.model.train()
        if self.s.freeze_bn:
            freeze_batch_norm(self.model.encoder)

    def begin_epoch(self, epoch: int, rng: np.random.Generator) -> int:
        """The epoch's fidelity per step; multigrid's larger batches take fewer steps, so every
        epoch sees the same number of windows."""
        bs = self.s.batch_size
        self.plan: list[Fidelity] = []
        seen = 0
        while seen < self.base_steps * bs:
            fid = self.schedule.at(epoch, epoch * self.base_steps + len(self.plan))
            self.plan.append(fid)
            seen += bs * fid.batch_scale
        return len(self.plan)

    def batch(self, epoch: int, step: int, rng: np.random.Generator):
        fid = self.plan[step]
        pool = self._pool(fid.r_t)
        n = self.s.batch_size * fid.batch_scale
        windows = [pool[i] for i in rng.choice(len(pool), n, replace=len(pool) < n)]
        h, w = self.cache.size
        boxes = crop_boxes(n, h, w, self.s.crop_scale, rng)
        targets = self.kind.targets(windows, len(self.labels))
        normaliser = self.kind.normaliser(targets, torch.stack([b.valid() for b in windows]))
        items = [(win, box, t, fid) for win, box, t in zip(windows, boxes, targets)]
        return self.micro_batches(items), normaliser, float(fid.batch_scale)

    def loss(self, model: nn.Module, micro: list, normaliser: float):
        windows, boxes, targets, fids = zip(*micro)
        frames, index = gather_batch(self.cache, list(windows))
        valid = torch.stack([b.valid() for b in windows]).to(self.dev)
        size = fids[0].size(*self.cache.size)
        outs = model(frames, index, torch.stack(boxes), size, valid)
        loss, parts = self.kind.loss(outs, list(targets), valid, normaliser)
        return loss, {**parts, f"fidelity:{fids[0].name}": 1.0}

    def summarise(self, sums: dict[str, float], steps: int) -> dict[str, Any]:
        used = sorted(k.split(":", 1)[1] for k in sums if k.startswith("fidelity:"))
        losses = {k: v / steps for k, v in sums.items() if k.startswith("loss")}
        return {**losses, "fidelity": "+".join(used)}

    def validate(self, epoch: int) -> dict[str, Any]:
        if not self.val_gt.videos:
            return {}
        encoder, head = self.model.encoder, self.model.head
        feats = extract_features(encoder, self.cache, self.val_gt, self.spec, self.cfg, self.dev)
        report = evaluate_head(
            head, feats, self.val_gt, self.cache, self.spec, self.cfg, self.labels
        )
        self.report = report.as_json()
        return map_values(report)

    def extra(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "fps": self.cache.fps,
            "input_size": list(self.cache.size),
        }
