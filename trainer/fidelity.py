"""The LoFi fidelity schedule: which temporal (r_t) and spatial (r_s) reduction a batch uses."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lofi.runtime.errors import LofiError

SCHEDULES = (
    "full",
    "S",
    "T",
    "ST",
    "long_cycle",
    "short_cycle",
    "multigrid_long",
    "multigrid_short",
)
SQRT2 = math.sqrt(2)

# Multigrid (Wu et al. 2020) keeps B*T*H*W constant: (r_t, r_s, batch factor) per shape.
MULTIGRID_LONG = (
    ("mg_T4S1.4", 4, SQRT2, 8),
    ("mg_T2S1.4", 2, SQRT2, 4),
    ("mg_T2", 2, 1.0, 2),
    ("mg_full", 1, 1.0, 1),
)
MULTIGRID_SHORT = (("mg_S2", 1, 2.0, 4), ("mg_S1.4", 1, SQRT2, 2), ("mg_full", 1, 1.0, 1))


@dataclass(frozen=True)
class Fidelity:
    """A batch shape: snippets / r_t, frame side / r_s, batch x batch_scale (multigrid only; the
    learning rate scales with it linearly)."""

    name: str
    r_t: int
    r_s: float
    batch_scale: int = 1

    def size(self, height: int, width: int) -> tuple[int, int]:
        return max(8, round(height / self.r_s)), max(8, round(width / self.r_s))


@dataclass(frozen=True)
class FidelitySchedule:
    """Paper's ratios by default: S r_s=2, T r_t=4, ST r_t=2 & r_s=sqrt(2); short cycle switches
    every 16 batches, long cycle every epoch (C-LoFi cycles S -> T -> ST). The multigrid rule is
    the alternative: its long cycle changes shape every epoch, its short cycle every batch."""

    mode: str = "long_cycle"
    s_ratio: float = 2.0
    t_ratio: int = 4
    st_ratio: tuple[int, float] = (2, math.sqrt(2))
    short_every: int = 16

    def __post_init__(self) -> None:
        if self.mode not in SCHEDULES:
            raise LofiError(f"fidelity schedule must be one of {', '.join(SCHEDULES)}")

    def configs(self) -> dict[str, Fidelity]:
        return {
            "full": Fidelity("full", 1, 1.0),
            "S": Fidelity("S", 1, self.s_ratio),
            "T": Fidelity("T", self.t_ratio, 1.0),
            "ST": Fidelity("ST", int(self.st_ratio[0]), float(self.st_ratio[1])),
        }

    def at(self, epoch: int, step: int) -> Fidelity:
        cfgs = self.configs()
        cycle = [cfgs["S"], cfgs["T"], cfgs["ST"]]
        if self.mode == "long_cycle":
            return cycle[epoch % 3]
        if self.mode == "short_cycle":
            return cycle[(step // self.short_every) % 3]
        if self.mode == "multigrid_long":
            return Fidelity(*MULTIGRID_LONG[epoch % len(MULTIGRID_LONG)])
        if self.mode == "multigrid_short":
            return Fidelity(*MULTIGRID_SHORT[step % len(MULTIGRID_SHORT)])
        return cfgs[self.mode]
