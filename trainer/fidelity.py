"""The LoFi fidelity schedule: which temporal (r_t) and spatial (r_s) reduction a batch uses."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lofi.runtime.errors import LofiError

SCHEDULES = ("full", "S", "T", "ST", "long_cycle", "short_cycle")


@dataclass(frozen=True)
class Fidelity:
    name: str
    r_t: int
    r_s: float

    def size(self, height: int, width: int) -> tuple[int, int]:
        return max(8, round(height / self.r_s)), max(8, round(width / self.r_s))


@dataclass(frozen=True)
class FidelitySchedule:
    """Paper's ratios by default: S r_s=2, T r_t=4, ST r_t=2 & r_s=sqrt(2); short cycle switches
    every 16 batches, long cycle every epoch (C-LoFi cycles S -> T -> ST)."""

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
        return cfgs[self.mode]
