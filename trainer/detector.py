"""Encoder + head as one module, so one forward (and one DDP wrapper) covers an end-to-end step."""

from __future__ import annotations

import torch
import torch.nn as nn
from lofi.trainer.features import encode
from lofi.trainer.schema import Config


class Detector(nn.Module):
    def __init__(self, encoder: nn.Module, head: nn.Module, cfg: Config, dev: torch.device):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.cfg, self.dev = cfg, dev

    def forward(self, frames, index, boxes, size, valid) -> list[tuple[torch.Tensor, torch.Tensor]]:
        feats = encode(self.encoder, frames, index, boxes, size, self.cfg, self.dev)
        return self.head((feats * valid[..., None]).transpose(1, 2))
