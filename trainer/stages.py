"""The three training stages by name: pretrain (ACP), lofi (end to end, low fidelity), head."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lofi.trainer.distributed import device_for, init_distributed
from lofi.trainer.head_stage import HeadStage
from lofi.trainer.lofi_stage import LofiStage
from lofi.trainer.loop import Stage, fit
from lofi.trainer.pretrain_stage import PretrainStage
from lofi.trainer.run import Run
from lofi.trainer.schema import Config

STAGES: dict[str, type[Stage]] = {"pretrain": PretrainStage, "lofi": LofiStage, "head": HeadStage}


def run_stage(
    name: str, cfg: Config, run_dir: Path, resume: bool = False, device: str | None = None
) -> Path:
    """Train one stage into `run_dir` (under torchrun: every rank trains, rank 0 writes)."""
    d = init_distributed()
    stage = STAGES[name](cfg, device_for(device, d), d)
    run = Run(run_dir, cfg, name, main=d.main)
    if hasattr(stage, "extract_seconds"):
        run.info(f"features extracted in {stage.extract_seconds:.1f}s")
    return fit(stage, run, resume)


def _runner(name: str) -> Callable[..., Path]:
    def run(cfg: Config, run_dir: Path, resume: bool = False, device: str | None = None) -> Path:
        return run_stage(name, cfg, run_dir, resume, device)

    run.__name__ = name
    return run


RUNNERS = {name: _runner(name) for name in STAGES}
