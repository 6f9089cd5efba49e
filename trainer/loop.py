"""One training-loop skeleton that every stage (pretrain, lofi, head) plugs a step into.

The loop owns what the stages share: device and process group, optimiser and LR policy,
precision (autocast, GradScaler for fp16), gradient accumulation, DDP, exact resume (model,
optimiser, scaler, every RNG and the position in the epoch), step and epoch checkpoints,
validation with best-checkpoint tracking, and the stop on a non-finite loss.

A stage draws each step's *global* batch from the epoch's seeded RNG, then this process keeps
its shard and splits it into micro-batches. Losses are normalised over the global batch, so
accumulation and N processes give the gradients of one process with the whole batch.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from lofi.runtime.errors import LofiError
from lofi.trainer.checkpoint import load_state, rng_state, set_rng_state
from lofi.trainer.distributed import Dist
from lofi.trainer.run import Run, bar
from lofi.trainer.schema import Config, HeadConfig, LofiConfig, PretrainConfig

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
Section = PretrainConfig | LofiConfig | HeadConfig  # a stage's own config section


class Stage(ABC):
    """What a stage provides; the loop in `fit` does the rest."""

    name: str
    stream: int  # separates the stages' RNG streams
    best_key: str | None = None
    report: dict | None = None  # the latest validation's full report (mAP table), if any

    def __init__(self, cfg: Config, dev: torch.device, dist: Dist):
        self.cfg, self.dev, self.dist = cfg, dev, dist
        self.s: Section = getattr(cfg, self.name)

    @abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """Modules saved in (and restored from) the checkpoint, by name."""

    @abstractmethod
    def trainable(self) -> nn.Module:
        """The module whose forward runs the step (wrapped by DDP when distributed)."""

    @abstractmethod
    def param_groups(self) -> list[dict]:
        """Optimiser groups, each with its base `lr`."""

    @abstractmethod
    def begin_epoch(self, epoch: int, rng: np.random.Generator) -> int:
        """Draw what the whole epoch needs (e.g. an order) and return its number of steps."""

    @abstractmethod
    def batch(
        self, epoch: int, step: int, rng: np.random.Generator
    ) -> tuple[list[Any], float, float]:
        """This process's micro-batches of the step, the global loss normaliser, an LR scale."""

    @abstractmethod
    def loss(
        self, model: nn.Module, micro: Any, normaliser: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one micro-batch (its share of the global mean) and parts to sum for logs."""

    def lr_factor(self, epoch: int, step: int, steps: int) -> float:
        """Halved every `lr_halve_every` epochs (lofi; head with `schedule: halve`); pretrain has
        its own."""
        return 0.5 ** (epoch // self.s.lr_halve_every)

    def train_mode(self) -> None:
        self.trainable().train()

    def summarise(self, sums: dict[str, float], steps: int) -> dict[str, Any]:
        return {k: v / steps for k, v in sums.items()}

    def validate(self, epoch: int) -> dict[str, Any]:
        return {}

    def extra(self) -> dict[str, Any]:
        """Checkpoint fields besides the modules (labels, input size ...)."""
        return {}

    def after_step(self) -> None:
        """Called after every optimiser step (e.g. to update an EMA of the weights)."""
        return None

    def micro_batches(self, items: list[Any]) -> list[list[Any]]:
        """This process's shard of a global batch, split for gradient accumulation."""
        mine = self.dist.shard(items)
        n = min(self.cfg.train.accumulate, len(mine))
        size = math.ceil(len(mine) / n)
        return [mine[i : i + size] for i in range(0, len(mine), size)]


def make_optimizer(groups: list[dict], s: Section) -> torch.optim.Optimizer:
    if s.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=s.momentum, weight_decay=s.weight_decay)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(groups, weight_decay=s.weight_decay)
    raise LofiError(f"optimizer must be sgd or adamw, not {s.optimizer!r}")


def _precision(cfg: Config) -> torch.dtype | None:
    p = cfg.train.precision
    if p not in PRECISIONS:
        raise LofiError(f"train.precision must be fp32, bf16 or fp16, not {p!r}")
    return PRECISIONS[p]


def _wrap(stage: Stage) -> nn.Module:
    model = stage.trainable()
    if not stage.dist.active:
        return model
    ids = [stage.dev.index] if stage.dev.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def fit(stage: Stage, run: Run, resume: bool) -> Path:
    """Train `stage` for its configured epochs in `run`, from scratch or from its checkpoint."""
    cfg, s, d = stage.cfg, stage.s, stage.dist
    dtype = _precision(cfg)
    model = _wrap(stage)
    opt = make_optimizer(stage.param_groups(), s)
    base_lr = [g["lr"] for g in opt.param_groups]
    scaler = torch.amp.GradScaler(stage.dev.type, enabled=dtype is torch.float16)
    progress: dict[str, Any] = {"epoch": 0, "step": 0, "global_step": 0, "best": None}
    if resume and (ckpt := run.resume()):
        for name, module in stage.modules().items():
            load_state(module, ckpt[name], name, run.ckpt_path)
        opt.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        progress = ckpt["progress"]
        set_rng_state(progress["rngs"])
    every = cfg.train.checkpoint_every
    validate_every = s.validate_every
    autocast = torch.autocast(stage.dev.type, dtype=dtype) if dtype else nullcontext()

    def save(epoch: int, step: int, rng_pos: dict | None, sums: dict, best: bool = False):
        progress.update(epoch=epoch, step=step, rng=rng_pos, rngs=rng_state(), sums=dict(sums))
        states = {k: m.state_dict() for k, m in stage.modules().items()}
        run.save(
            {
                **stage.extra(),
                **states,
                "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch - 1 if step == 0 else epoch,
                "progress": progress,
            },
            best=best,
        )

    for epoch in range(progress["epoch"], s.epochs):
        rng = np.random.default_rng([cfg.seed, stage.stream, epoch])
        steps = stage.begin_epoch(epoch, rng)
        sums: dict[str, float] = defaultdict(float)
        first = 0
        if progress["step"] and epoch == progress["epoch"]:
            first = progress["step"]
            rng.bit_generator.state = progress["rng"]
            sums.update(progress["sums"])
        stage.train_mode()
        for step in bar(range(first, steps), f"{stage.name} {epoch + 1}/{s.epochs}", main=d.main):
            micros, normaliser, lr_scale = stage.batch(epoch, step, rng)
            factor = stage.lr_factor(epoch, step, steps) * lr_scale
            for g, lr in zip(opt.param_groups, base_lr):
                g["lr"] = lr * factor
            opt.zero_grad(set_to_none=True)
            parts: dict[str, float] = defaultdict(float)
            step_loss = 0.0
            for i, micro in enumerate(micros):
                last = i == len(micros) - 1
                with nullcontext() if last or not d.active else model.no_sync():
                    with autocast:
                        loss, local = stage.loss(model, micro, normaliser)
                    scaler.scale(loss * d.world).backward()
                step_loss += float(loss.detach())
                for k, v in local.items():
                    parts[k] += v
            keys = sorted(parts)
            total = d.sum(torch.tensor([step_loss, *(parts[k] for k in keys)], dtype=torch.float64))
            step_loss, *values = total.tolist()
            parts = dict(zip(keys, values))
            if not all(math.isfinite(v) for v in (step_loss, *values)):
                shown = ", ".join(f"{k}={v:.4g}" for k, v in {"loss": step_loss, **parts}.items())
                raise LofiError(
                    f"{stage.name}: non-finite loss at epoch {epoch + 1} step {step + 1} "
                    f"(global step {progress['global_step'] + 1}): {shown}"
                )
            if s.clip_grad:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(
                    [p for g in opt.param_groups for p in g["params"]], s.clip_grad
                )
            scaler.step(opt)
            scaler.update()
            stage.after_step()
            for k, v in parts.items():
                sums[k] += v
            progress["global_step"] += 1
            if every and progress["global_step"] % every == 0 and step + 1 < steps:
                save(epoch, step + 1, rng.bit_generator.state, sums)
        values = stage.summarise(dict(sums), steps)
        last_epoch = epoch == s.epochs - 1
        is_best = False
        if d.main and (last_epoch or (epoch + 1) % validate_every == 0):
            values.update(stage.validate(epoch))
            stage.train_mode()
            score = values.get(stage.best_key) if stage.best_key else None
            if score is not None and (progress["best"] is None or score > progress["best"]):
                progress["best"] = score
                is_best = True
            if last_epoch and stage.report is not None:
                run.metrics["validation"] = stage.report
        run.epoch_done(epoch, values)
        save(epoch + 1, 0, None, {}, best=is_best)
    run.write_metrics()
    run.close()
    return run.ckpt_path
