"""`lofi-train plan`: the memory of one LoFi training step for every fidelity and memory option.

Each row traces one real training step of the configured encoder + head - forward, loss,
backward, optimiser step - under FakeTensorMode (no data is allocated, so TSM-R18 at the paper's
16 x 100 x 8 x 224^2 plans on a laptop) and counts it with `MemoryMeter`. The same function runs
on real tensors, and a test holds the two within 10% at small shapes.

The encoder input is counted in the autocast dtype, as the sampling op writes it. What is not
counted: the uint8 frames before the sampling op, cuDNN workspaces and allocator
fragmentation (on a GPU expect the allocator's peak to be somewhat higher). The loss is a
stand-in of the head's outputs (its memory is negligible next to the encoder's). Autocast is
traced with the CPU's rules, which for these networks match CUDA's (convolutions and linears
in bf16; batch norm, ReLU and pooling follow their input).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from lofi.runtime.errors import LofiError, shown
from lofi.trainer.checkpoint import build_encoder, build_head
from lofi.trainer.encoder import freeze_batch_norm
from lofi.trainer.fidelity import Fidelity, FidelitySchedule
from lofi.trainer.head_kinds import GTADKind, PyramidKind, head_kind
from lofi.trainer.loop import PRECISIONS, make_optimizer
from lofi.trainer.memory_meter import MemoryMeter, SavedBytes
from lofi.trainer.schema import Config
from torch._subclasses.fake_tensor import FakeTensorMode

CHECKPOINTING = ("none", "stages", "chunks:4")
GIB = 1024**3


@dataclass
class Plan:
    fidelity: str
    snippets: int
    side: tuple[int, int]
    checkpointing: str
    precision: str
    activations: int  # peak bytes of everything but parameters, gradients, optimiser state
    saved: int  # bytes held for backward when forward ends
    weight_casts: int  # autocast's low-precision weight copies
    params: int
    grads: int
    optimizer: int

    @property
    def total(self) -> int:
        """Every byte the step holds at its peak, each kind once: what autograd saves
        (`saved`) is held in the activations and the weight casts, not added again."""
        return self.activations + self.weight_casts + self.params + self.grads + self.optimizer

    def as_json(self) -> dict:
        return {**asdict(self), "total": self.total}


def fidelities(cfg: Config) -> list[Fidelity]:
    s = cfg.lofi
    sched = FidelitySchedule("full", s.s_ratio, s.t_ratio, tuple(s.st_ratio))
    return list(sched.configs().values())


def measure_step(
    cfg: Config,
    size: tuple[int, int],
    fid: Fidelity,
    checkpointing: str = "none",
    precision: str = "fp32",
    fake: bool = True,
    num_classes: int = 20,
) -> Plan:
    """One lofi-stage training step, counted (fake=True: traced, nothing allocated)."""
    if precision not in PRECISIONS:
        raise LofiError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    d, s = cfg.data, cfg.lofi
    batch, length = s.batch_size, max(1, d.window // fid.r_t)
    h, w = fid.size(*size)
    mode = FakeTensorMode() if fake else contextlib.nullcontext()
    with mode:
        torch.manual_seed(0)
        encoder = build_encoder(cfg, pretrained=False)
        head = build_head(cfg, encoder.out_dim, num_classes)
        encoder.set_memory(checkpointing, cfg.train.channels_last)
        model = nn.ModuleDict({"encoder": encoder, "head": head}).train()
        if s.freeze_bn:
            freeze_batch_norm(encoder)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = make_optimizer([{"params": params, "lr": s.lr}], s)
        meter = MemoryMeter(list(model.parameters()) + list(model.buffers()))
        saved = SavedBytes(model.parameters(), by_pointer=not fake)
        dtype = PRECISIONS[precision]
        autocast = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
        kind = head_kind(head, cfg)
        with meter:
            x = torch.randn(batch, length, d.k, 3, h, w, dtype=dtype or torch.float32)
            with autocast, saved.hooks():
                feats = encoder(x)
                loss = surrogate_loss(kind, feats)
            del x, feats
            end_of_forward = meter.live()
            loss.backward()
            del loss
            opt.step()
        grads = {meter.number(p.grad) for p in params if p.grad is not None} - {None}
        grad_bytes = sum(p.grad.untyped_storage().nbytes() for p in params if p.grad is not None)
        state = [t for st in opt.state.values() for t in st.values() if isinstance(t, torch.Tensor)]
        state_ids = {meter.number(t) for t in state} - {None}
        casts = meter.casts
        activations = meter.peak(exclude=grads | state_ids | casts)
        cast_bytes = meter.peak(exclude=set(range(meter._next)) - casts)
        del end_of_forward
        return Plan(
            fid.name,
            length,
            (h, w),
            checkpointing,
            precision,
            activations,
            saved.total,
            cast_bytes,
            sum(p.untyped_storage().nbytes() for p in model.parameters())
            + sum(b.untyped_storage().nbytes() for b in model.buffers()),
            grad_bytes,
            sum(t.untyped_storage().nbytes() for t in state),
        )


def surrogate_loss(kind: PyramidKind | GTADKind, feats: torch.Tensor) -> torch.Tensor:
    """A loss over every output of the head on (B, L, C) features: the step's backward then
    runs through all of it, as a real loss's does, without targets."""

    def tensors(o) -> list[torch.Tensor]:
        return [o] if isinstance(o, torch.Tensor) else [t for x in o for t in tensors(x)]

    return sum((t.float() ** 2).mean() for t in tensors(kind.head(kind.inputs(feats))))


def plan_memory(cfg: Config, size: tuple[int, int]) -> list[Plan]:
    return [
        measure_step(cfg, size, fid, ckpt, prec)
        for fid in fidelities(cfg)
        for ckpt in CHECKPOINTING
        for prec in ("fp32", "bf16")
    ]


def parse_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9]{1,7}(?:\.[0-9]{0,9})?)\s*(GiB|GB|MiB|MB|G|M)?\s*", text)
    if not m:
        raise LofiError(f"--memory must look like 24GiB or 80GB, not {shown(text)}")
    unit = {"GiB": GIB, "G": GIB, "GB": 1e9, "MiB": 1024**2, "M": 1024**2, "MB": 1e6}
    return int(float(m.group(1)) * unit.get(m.group(2) or "GiB"))


def _size(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB / 10 else f"{n / 2**20:.1f} MiB"


def _cost(p: Plan) -> tuple[int, int]:
    """Cheapest first: no recomputation, then full precision."""
    return (CHECKPOINTING.index(p.checkpointing) > 0, p.precision != "fp32")


def format_plan(rows: list[Plan], budget: int | None = None) -> str:
    def gib(n: int) -> str:
        return f"{n / GIB:8.2f}"

    head = (
        f"{'fidelity':8} {'input':>16} {'checkpoint':>10} {'prec':>5} "
        f"{'activ. GiB':>10} {'casts GiB':>9} {'total GiB':>9}"
    )
    lines = [head, "-" * len(head)]
    for p in rows:
        shape = f"{p.snippets}x{p.side[0]}x{p.side[1]}"
        lines.append(
            f"{p.fidelity:8} {shape:>16} {p.checkpointing:>10} {p.precision:>5} "
            f"{gib(p.activations):>10} {gib(p.weight_casts):>9} {gib(p.total):>9}"
        )
    if rows:
        r = rows[0]
        lines.append(
            f"parameters {r.params / GIB:.3f} GiB, gradients {r.grads / GIB:.3f} GiB, "
            f"optimiser state {r.optimizer / GIB:.3f} GiB (total = these + activations + "
            "autocast's weight casts)"
        )
    if budget is not None:
        lines.append(f"\nwithin {_size(budget)} (cheapest setting per fidelity):")
        for fid in dict.fromkeys(p.fidelity for p in rows):
            fits = sorted((p for p in rows if p.fidelity == fid and p.total <= budget), key=_cost)
            best = fits[0] if fits else None
            lines.append(
                f"  {fid:5} "
                + (
                    f"fits with checkpointing={best.checkpointing}, precision={best.precision} "
                    f"({_size(best.total)})"
                    if best
                    else "does not fit with any option"
                )
            )
    return "\n".join(lines)
