"""torchrun support: process group, device per rank, sharding of a global batch.

Every rank draws the same global batch from the same seeded RNG and takes items
`rank, rank + world, ...` (DistributedSampler's interleaving), so N processes with batch b see
exactly the batches one process sees with batch N*b.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from lofi.runtime.errors import LofiError

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, items: list[T]) -> list[T]:
        if len(items) % self.world:
            raise LofiError(
                f"global batch of {len(items)} does not split over {self.world} processes"
            )
        return items[self.rank :: self.world]

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.active:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value


def init_distributed() -> Dist:
    """A process group when launched by torchrun (WORLD_SIZE > 1): gloo on CPU, NCCL on GPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return Dist(dist.get_rank(), dist.get_world_size(), local)


def device_for(name: str | None, d: Dist) -> torch.device:
    if name:
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise LofiError("--device cuda but no CUDA GPU is available")
        if name == "cuda" and d.active:
            return torch.device("cuda", d.local_rank)
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", d.local_rank)
    return torch.device("cpu")


def sync_batchnorm(model: torch.nn.Module, enabled: bool, dev: torch.device, d: Dist):
    """SyncBatchNorm under torchrun when `train.sync_bn` asks for it (GPUs only: torch has no
    CPU kernel for it, so refuse up front rather than at the first step)."""
    if not (enabled and d.active):
        return model
    if dev.type != "cuda":
        raise LofiError("train.sync_bn needs CUDA GPUs (SyncBatchNorm has no CPU kernel)")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
