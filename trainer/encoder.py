"""TSM video encoders: per-frame 2D CNN with temporal shift, frame features averaged per snippet."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import torch.nn as nn
import torchvision
from lofi.runtime.errors import LofiError
from lofi.trainer.pretrained import load_backbone_weights
from torch.utils.checkpoint import checkpoint

Stage = Callable[[torch.Tensor], torch.Tensor]


def temporal_shift(x: torch.Tensor, frames: int, fold_div: int = 8) -> torch.Tensor:
    """Shift 1/fold_div of channels one frame back and 1/fold_div forward within each snippet.

    Written as slice + concatenate: the in-place slice-assignment form exports wrong to ONNX.
    """
    nk, c, h, w = x.shape
    x = x.view(nk // frames, frames, c, h, w)
    fold = c // fold_div
    pad = torch.zeros_like(x[:, :1, :fold])
    back = torch.cat([x[:, 1:, :fold], pad], dim=1)
    fwd = torch.cat([pad, x[:, :-1, fold : 2 * fold]], dim=1)
    return torch.cat([back, fwd, x[:, :, 2 * fold :]], dim=2).view(nk, c, h, w)


class ShiftedBlock(nn.Module):
    """Residual block of the tiny backbone; the shift sits on the residual branch (TSM)."""

    def __init__(self, cin: int, cout: int, frames: int):
        super().__init__()
        self.frames = frames
        self.conv1 = nn.Conv2d(cin, cout, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(temporal_shift(x, self.frames))))
        return torch.relu(self.bn2(self.conv2(y)) + self.skip(x))


class TinyBackbone(nn.Module):
    """A small TSM CNN that trains on a CPU in minutes (for Synth-TAL and tests)."""

    def __init__(self, frames: int, width: int = 16):
        super().__init__()
        chans = [width, 2 * width, 4 * width, 6 * width]
        self.stem = nn.Sequential(
            nn.Conv2d(3, chans[0], 3, 2, 1, bias=False), nn.BatchNorm2d(chans[0]), nn.ReLU()
        )
        self.blocks = nn.Sequential(*[ShiftedBlock(a, b, frames) for a, b in zip(chans, chans[1:])])
        self.out_dim = chans[-1]

    def stages(self) -> list[Stage]:
        return [self.stem, *self.blocks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).mean(dim=(2, 3))


class ShiftWrap(nn.Module):
    def __init__(self, conv: nn.Module, frames: int):
        super().__init__()
        self.conv, self.frames = conv, frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(temporal_shift(x, self.frames))


class ResNetTSM(nn.Module):
    """torchvision resnet18/34/50 with a temporal shift before each residual block's first conv."""

    def __init__(self, arch: str, frames: int, weights: str | None = None):
        super().__init__()
        net = getattr(torchvision.models, arch)(weights=None)
        if weights:
            load_backbone_weights(net, Path(weights), arch)
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            for block in layer:
                block.conv1 = ShiftWrap(block.conv1, frames)
        net.fc = nn.Identity()
        self.net = net
        self.out_dim = 2048 if arch == "resnet50" else 512

    def stages(self) -> list[Stage]:
        n = self.net
        stem = lambda x: n.maxpool(n.relu(n.bn1(n.conv1(x))))  # noqa: E731
        return [stem, n.layer1, n.layer2, n.layer3, n.layer4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def parse_checkpointing(text: str) -> tuple[str, int]:
    """`none`, `stages` (one checkpoint per residual stage) or `chunks:N` (N temporal chunks)."""
    if text in ("none", "stages"):
        return text, 0
    head, _, n = str(text).partition(":")
    if head == "chunks" and n.isdigit() and int(n) >= 1:
        return "chunks", int(n)
    raise LofiError(f"train.checkpointing must be none, stages or chunks:N (N >= 1), not {text!r}")


def freeze_batch_norm(module: nn.Module) -> None:
    """Batch norm normalises with its running statistics and stops updating them
    (`lofi.freeze_bn`: LoFi's small batches, and chunked checkpointing, need it)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


@contextmanager
def _frozen_bn_stats(module: nn.Module) -> Iterator[None]:
    """Recomputation must not update batch-norm running statistics a second time."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [
        (m.momentum, m.num_batches_tracked.clone() if m.track_running_stats else None)
        for m in norms
    ]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


class SnippetEncoder(nn.Module):
    """(B, L, k, 3, H, W) normalised frames -> (B, L, D) snippet features.

    Memory options (training only; eval and export run the plain graph): activation
    checkpointing per residual stage (recomputation leaves batch-norm statistics alone) or over
    temporal chunks of snippets - exact, because the temporal shift never crosses a snippet,
    with batch norm frozen (a chunk's batch statistics would differ from the batch's, so chunks
    are refused while batch norm trains) - and channels_last convolutions.
    """

    def __init__(self, backbone: str, frames: int, width: int = 16, weights: str | None = None):
        super().__init__()
        self.frames = frames
        self.checkpointing: tuple[str, int] = ("none", 0)
        self.channels_last = False
        if backbone == "tiny":
            self.backbone: nn.Module = TinyBackbone(frames, width)
        elif backbone in ("resnet18", "resnet34", "resnet50"):
            self.backbone = ResNetTSM(backbone, frames, weights)
        elif backbone == "mobilenet_v2":
            from lofi.trainer.mobilenet_tsm import MobileNetV2TSM

            self.backbone = MobileNetV2TSM(frames, weights)
        else:
            raise LofiError(
                f"unknown backbone '{backbone}' (tiny, resnet18, resnet34, resnet50, mobilenet_v2)"
            )
        self.out_dim = self.backbone.out_dim

    def set_memory(self, checkpointing: str = "none", channels_last: bool = False) -> None:
        self.checkpointing = parse_checkpointing(checkpointing)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) frames -> (N, D), one checkpoint per stage when asked."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.checkpointing[0] != "stages" or not self._recompute():
            return self.backbone(x)
        for stage in self.backbone.stages():
            x = checkpoint(stage, x, use_reentrant=False, context_fn=self._contexts)
        return x.mean(dim=(2, 3))

    def _contexts(self):
        return nullcontext(), _frozen_bn_stats(self)

    def _recompute(self) -> bool:
        return self.training and torch.is_grad_enabled()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, k = x.shape[:3]
        mode, n = self.checkpointing
        if mode == "chunks" and self._recompute() and length > 1:
            if any(
                m.training for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            ):
                raise LofiError(
                    "train.checkpointing=chunks:N needs frozen batch norm (lofi.freeze_bn: true): "
                    "each chunk would otherwise normalise with its own statistics"
                )
            size = -(-length // min(n, length))
            parts = [
                checkpoint(self._snippets, x[:, i : i + size], use_reentrant=False)
                for i in range(0, length, size)
            ]
            return torch.cat(parts, dim=1)
        return self._snippets(x)

    def _snippets(self, x: torch.Tensor) -> torch.Tensor:
        b, length, k = x.shape[:3]
        f = self._frames(x.flatten(0, 2))
        return f.view(b, length, k, -1).mean(dim=2)


class ExportableEncoder(nn.Module):
    """Deployment form: uint8 (N, k, H, W, 3) frames as decoded -> (N, D); normalises inside."""

    def __init__(self, encoder: SnippetEncoder, mean: list[float], std: list[float]):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std).view(1, 1, 3, 1, 1)))
        self.register_buffer("shift", (torch.tensor(mean) / torch.tensor(std)).view(1, 1, 3, 1, 1))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 1, 4, 2, 3).float() * self.scale - self.shift
        return self.encoder(x[None]).squeeze(0)
