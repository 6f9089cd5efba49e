"""Stage `head`: freeze the encoder, extract full-fidelity features, train a fresh head on them."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from lofi.runtime.errors import LofiError
from lofi.trainer.checkpoint import build_encoder, build_head, load_checkpoint, load_state
from lofi.trainer.data import snippet_spec, untrimmed, video_windows
from lofi.trainer.distributed import Dist
from lofi.trainer.features import evaluate_head, extract_features, map_values, window_features
from lofi.trainer.head_kinds import head_kind
from lofi.trainer.loop import Stage


class HeadStage(Stage):
    name, stream, best_key = "head", 3, "val_avg_mAP"

    def __init__(self, cfg: dict, dev: torch.device, dist: Dist):
        super().__init__(cfg, dev, dist)
        s = self.s
        self.spec = snippet_spec(cfg)
        self.train_gt, self.val_gt, self.cache, self.labels = untrimmed(cfg)
        if not s["init"]:
            raise LofiError(
                "head stage needs head.init: a pretrain or lofi checkpoint for the encoder"
            )
        init = load_checkpoint(s["init"])
        self.encoder = build_encoder(cfg, pretrained=False).to(dev)
        load_state(self.encoder, init["encoder"], "encoder", s["init"])
        torch.manual_seed(cfg["seed"])
        self.head = build_head(cfg, self.encoder.out_dim, len(self.labels)).to(dev)
        t0 = time.perf_counter()
        args = (self.cache, self.train_gt, self.spec, cfg, dev)
        self.train_feats = extract_features(self.encoder, *args)
        self.val_feats = extract_features(
            self.encoder, self.cache, self.val_gt, self.spec, cfg, dev
        )
        self.extract_seconds = time.perf_counter() - t0
        self.windows = video_windows(self.train_gt, self.cache, self.spec, 1, self.labels)
        self.x = window_features(self.train_feats, self.windows)
        self.valid = torch.stack([w.valid() for w in self.windows])
        self.kind = head_kind(self.head, cfg)
        self.targets = self.kind.targets(self.windows, len(self.labels))

    def modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "head": self.head}

    def trainable(self) -> nn.Module:
        return self.head

    def param_groups(self) -> list[dict]:
        return [{"params": self.head.parameters(), "lr": self.s["lr"]}]

    def begin_epoch(self, epoch: int, rng: np.random.Generator) -> int:
        self.order = rng.permutation(len(self.windows))
        return max(1, math.ceil(len(self.windows) / self.s["batch_size"]))

    def batch(self, epoch: int, step: int, rng: np.random.Generator):
        bs = self.s["batch_size"]
        sel = [int(i) for i in self.order[step * bs : (step + 1) * bs]]
        normaliser = self.kind.normaliser([self.targets[i] for i in sel], self.valid[sel])
        return self.micro_batches(sel), normaliser, 1.0

    def loss(self, model: nn.Module, micro: list, normaliser: float):
        valid = self.valid[micro].to(self.dev)
        x = self.x[micro].to(self.dev) * valid[..., None]
        targets = [self.targets[i] for i in micro]
        return self.kind.loss(model(x.transpose(1, 2)), targets, valid, normaliser)

    def validate(self, epoch: int) -> dict[str, Any]:
        report = evaluate_head(
            self.head, self.val_feats, self.val_gt, self.cache, self.spec, self.cfg, self.labels
        )
        self.report = report.as_json()
        return map_values(report)

    def extra(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "fps": self.cache.fps,
            "input_size": list(self.cache.size),
            "encoder_from": str(self.s["init"]),
        }
