"""The three training stages: pretrain (ACP), lofi (end to end, low fidelity), head (frozen encoder)."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from lofi.cpp_ext import lofi_sample
from lofi.runtime.annotations import GroundTruth, load_ground_truth
from lofi.runtime.errors import LofiError
from lofi.runtime.evaluation import TIOU_PRESETS, MapReport, evaluate
from lofi.runtime.postprocess import PostConfig
from lofi.runtime.streaming import HeadGeometry, detect
from lofi.trainer.checkpoint import (
    build_encoder,
    build_head,
    load_checkpoint,
    load_state,
    save_checkpoint,
)
from lofi.trainer.data import (
    FrameCache,
    SnippetSpec,
    Window,
    clip_batch,
    gather_batch,
    video_windows,
)
from lofi.trainer.fidelity import Fidelity, FidelitySchedule
from lofi.trainer.losses import assign, detection_loss
from lofi.trainer.plots import plot_curves
from tqdm import tqdm


class Run:
    """A run folder: checkpoint.pt, metrics.json, train.log, TensorBoard events, curves.png."""

    def __init__(self, folder: Path, cfg: dict, stage: str):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.cfg, self.stage = cfg, stage
        self.ckpt_path = self.folder / "checkpoint.pt"
        self.metrics: dict[str, Any] = {"stage": stage, "epochs": []}
        self.log = logging.getLogger(f"lofi.{stage}.{self.folder}")
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        if not self.log.handlers:
            h = logging.FileHandler(self.folder / "train.log")
            h.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            self.log.addHandler(h)
        (self.folder / "config.json").write_text(json.dumps(cfg, indent=1))
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.folder / "tb"))
        except ImportError:
            pass

    def epoch_done(self, epoch: int, values: dict[str, float]) -> None:
        self.metrics["epochs"].append({"epoch": epoch, **values})
        self.log.info("epoch %d %s", epoch, json.dumps(values))
        if self.tb:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{self.stage}/{k}", v, epoch)
        self.write_metrics()

    def write_metrics(self) -> None:
        (self.folder / "metrics.json").write_text(json.dumps(self.metrics, indent=1))
        plot_curves(self.metrics["epochs"], self.folder / "curves.png", self.stage)

    def resume(self) -> dict | None:
        if not self.ckpt_path.is_file():
            return None
        ckpt = load_checkpoint(self.ckpt_path)
        if ckpt.get("stage") != self.stage:
            raise LofiError(
                f"{self.ckpt_path} is a '{ckpt.get('stage')}' checkpoint, not '{self.stage}'"
            )
        self.metrics = ckpt.get("metrics", self.metrics)
        return ckpt

    def save_detector(
        self,
        encoder: nn.Module,
        head: nn.Module,
        opt: torch.optim.Optimizer,
        epoch: int,
        labels: list[str],
        cache: FrameCache,
        **extra: Any,
    ) -> None:
        """Checkpoint of an encoder + head stage, with what the exporter needs to build a bundle."""
        save_checkpoint(
            self.ckpt_path,
            {
                "stage": self.stage,
                "config": self.cfg,
                "labels": labels,
                "fps": cache.fps,
                "input_size": list(cache.size),
                "encoder": encoder.state_dict(),
                "head": head.state_dict(),
                "optimizer": opt.state_dict(),
                "epoch": epoch,
                "metrics": self.metrics,
                **extra,
            },
        )

    def close(self) -> None:
        if self.tb:
            self.tb.close()


def _device(name: str | None) -> torch.device:
    if name:
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise LofiError("--device cuda but no CUDA GPU is available")
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _optimizer(groups: list[dict], s: dict) -> torch.optim.Optimizer:
    if s["optimizer"] == "sgd":
        return torch.optim.SGD(
            groups, lr=s["lr"], momentum=s["momentum"], weight_decay=s["weight_decay"]
        )
    if s["optimizer"] == "adamw":
        return torch.optim.AdamW(groups, lr=s["lr"], weight_decay=s["weight_decay"])
    raise LofiError(f"optimizer must be sgd or adamw, not {s['optimizer']!r}")


def _set_lr(opt: torch.optim.Optimizer, base: list[float], epoch: int, every: int | None) -> None:
    factor = 0.5 ** (epoch // every) if every else 1.0
    for g, lr in zip(opt.param_groups, base):
        g["lr"] = lr * factor


def _need(cfg: dict, *keys: str) -> None:
    for k in keys:
        if not cfg["data"].get(k):
            raise LofiError(f"config needs data.{k}")


def _spec(cfg: dict) -> SnippetSpec:
    d = cfg["data"]
    if d["mode"] not in ("window", "resize"):
        raise LofiError("data.mode must be 'window' or 'resize'")
    levels = cfg["model"]["levels"]
    spec = SnippetSpec(d["k"], d["frame_stride"], d["hop"], d["window"], d["mode"])
    if spec.window % (2 ** (levels - 1) * 4):
        raise LofiError(
            f"data.window must be a multiple of {2 ** (levels - 1) * 4} (largest stride x r_t)"
        )
    return spec


def _boxes(
    n: int, h: int, w: int, scale: list[float] | None, rng: np.random.Generator
) -> torch.Tensor:
    """Random square-ish crops (scale of the side) for augmentation; the full frame without."""
    if not scale:
        return torch.tensor([[0.0, 0.0, w, h]] * n)
    s = rng.uniform(scale[0], scale[1], n)
    x0 = rng.uniform(0, 1, n) * (1 - s) * w
    y0 = rng.uniform(0, 1, n) * (1 - s) * h
    return torch.tensor(np.stack([x0, y0, x0 + s * w, y0 + s * h], 1), dtype=torch.float32)


def _encode(
    encoder: nn.Module,
    frames: torch.Tensor,
    index: torch.Tensor,
    boxes: torch.Tensor,
    size: tuple[int, int],
    cfg: dict,
    device: torch.device,
) -> torch.Tensor:
    """uint8 frames cross to the device; the LoFi sampling op makes the encoder input there."""
    x = lofi_sample(
        frames.to(device, non_blocking=True),
        index.to(device),
        boxes.to(device),
        size,
        cfg["data"]["mean"],
        cfg["data"]["std"],
    )
    return encoder(x)


def pretrain(cfg: dict, run_dir: Path, resume: bool = False, device: str | None = None) -> Path:
    """Action-classification pre-training of the encoder on trimmed clips (ACP)."""
    _need(cfg, "clips", "clip_cache")
    dev = _device(device)
    s = cfg["pretrain"]
    gt = load_ground_truth(cfg["data"]["clips"])
    cache = FrameCache(cfg["data"]["clip_cache"])
    labels = gt.labels
    train = [
        (v, labels.index(i.segments[0].label))
        for v, i in gt.videos.items()
        if i.subset == "training" and i.segments
    ]
    val = [
        (v, labels.index(i.segments[0].label))
        for v, i in gt.videos.items()
        if i.subset == "validation" and i.segments
    ]
    if not train:
        raise LofiError("no training clips with a label")
    torch.manual_seed(cfg["seed"])
    encoder = build_encoder(cfg).to(dev)
    classifier = nn.Linear(encoder.out_dim, len(labels)).to(dev)
    params = list(encoder.parameters()) + list(classifier.parameters())
    opt = _optimizer([{"params": params}], s)
    run = Run(run_dir, cfg, "pretrain")
    start = 0
    if resume and (ckpt := run.resume()):
        load_state(encoder, ckpt["encoder"], "encoder", run.ckpt_path)
        load_state(classifier, ckpt["classifier"], "classifier", run.ckpt_path)
        opt.load_state_dict(ckpt["optimizer"])
        start = ckpt["epoch"] + 1
    h, w = cache.size
    k, fs = cfg["data"]["k"], cfg["data"]["frame_stride"]
    steps = max(1, len(train) // s["batch_size"])
    total_steps = s["epochs"] * steps
    for epoch in range(start, s["epochs"]):
        rng = np.random.default_rng([cfg["seed"], 1, epoch])
        encoder.train()
        classifier.train()
        order = rng.permutation(len(train))
        losses, correct = [], 0
        bar = tqdm(range(steps), desc=f"pretrain {epoch + 1}/{s['epochs']}", leave=False)
        for step in bar:
            lr = s["lr"] * 0.5 * (1 + math.cos(math.pi * (epoch * steps + step) / total_steps))
            for g in opt.param_groups:
                g["lr"] = lr
            batch = [train[i] for i in order[step * s["batch_size"] : (step + 1) * s["batch_size"]]]
            frames, index = clip_batch(cache, batch, k, fs, rng)
            feats = _encode(
                encoder,
                frames,
                index,
                _boxes(len(batch), h, w, s["crop_scale"], rng),
                (h, w),
                cfg,
                dev,
            )
            logits = classifier(feats[:, 0])
            target = torch.tensor([c for _, c in batch], device=dev)
            loss = F.cross_entropy(logits, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            correct += int((logits.argmax(1) == target).sum())
            bar.set_postfix(loss=f"{np.mean(losses):.3f}")
        values = {"loss": float(np.mean(losses)), "train_acc": correct / (steps * s["batch_size"])}
        if val:
            values["val_acc"] = _clip_accuracy(encoder, classifier, cache, val, cfg, dev)
        run.epoch_done(epoch, values)
        save_checkpoint(
            run.ckpt_path,
            {
                "stage": "pretrain",
                "config": cfg,
                "labels": None,
                "clip_labels": labels,
                "encoder": encoder.state_dict(),
                "classifier": classifier.state_dict(),
                "head": None,
                "optimizer": opt.state_dict(),
                "epoch": epoch,
                "metrics": run.metrics,
            },
        )
    run.close()
    return run.ckpt_path


@torch.no_grad()
def _clip_accuracy(encoder, classifier, cache, clips, cfg, dev) -> float:
    encoder.eval()
    classifier.eval()
    rng = np.random.default_rng(0)
    h, w = cache.size
    correct = 0
    for i in range(0, len(clips), 64):
        batch = clips[i : i + 64]
        frames, index = clip_batch(cache, batch, cfg["data"]["k"], cfg["data"]["frame_stride"], rng)
        feats = _encode(
            encoder, frames, index, _boxes(len(batch), h, w, None, rng), (h, w), cfg, dev
        )
        correct += int(
            (classifier(feats[:, 0]).argmax(1).cpu() == torch.tensor([c for _, c in batch])).sum()
        )
    return correct / len(clips)


def _init_encoder(encoder: nn.Module, path: str | None) -> None:
    if not path:
        return
    ckpt = load_checkpoint(path)
    load_state(encoder, ckpt["encoder"], "encoder", path)


def _targets(windows: list[Window], strides: list[int], num_classes: int) -> list:
    return [
        assign(w.segments, strides, [w.length // s for s in strides], num_classes) for w in windows
    ]


def _untrimmed(cfg: dict) -> tuple[GroundTruth, GroundTruth, FrameCache, list[str]]:
    _need(cfg, "annotations", "cache")
    gt = load_ground_truth(cfg["data"]["annotations"])
    cache = FrameCache(cfg["data"]["cache"])
    train, val = gt.subset("training"), gt.subset("validation")
    return train, val, cache, gt.labels


def lofi(cfg: dict, run_dir: Path, resume: bool = False, device: str | None = None) -> Path:
    """End-to-end encoder + head training on low-fidelity batches (the LoFi stage)."""
    dev = _device(device)
    s = cfg["lofi"]
    spec = _spec(cfg)
    train, _, cache, labels = _untrimmed(cfg)
    schedule = FidelitySchedule(
        s["schedule"], s["s_ratio"], s["t_ratio"], tuple(s["st_ratio"]), s["short_every"]
    )
    torch.manual_seed(cfg["seed"])
    encoder = build_encoder(cfg, pretrained=not s["init"]).to(dev)
    _init_encoder(encoder, s["init"])
    head = build_head(cfg, encoder.out_dim, len(labels)).to(dev)
    opt = _optimizer(
        [
            {"params": encoder.parameters(), "lr": s["lr"]},
            {"params": head.parameters(), "lr": s["head_lr"]},
        ],
        s,
    )
    base_lr = [s["lr"], s["head_lr"]]
    run = Run(run_dir, cfg, "lofi")
    start = 0
    if resume and (ckpt := run.resume()):
        load_state(encoder, ckpt["encoder"], "encoder", run.ckpt_path)
        load_state(head, ckpt["head"], "head", run.ckpt_path)
        opt.load_state_dict(ckpt["optimizer"])
        start = ckpt["epoch"] + 1
    windows: dict[int, list[Window]] = {}
    full = video_windows(train, cache, spec, 1, labels)
    steps = max(1, len(full) // s["batch_size"])
    h, w = cache.size
    for epoch in range(start, s["epochs"]):
        rng = np.random.default_rng([cfg["seed"], 2, epoch])
        _set_lr(opt, base_lr, epoch, s["lr_halve_every"])
        encoder.train()
        head.train()
        if s["freeze_bn"]:
            for mod in encoder.modules():
                if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                    mod.eval()
        losses: list[float] = []
        used: dict[str, int] = {}
        bar = tqdm(range(steps), desc=f"lofi {epoch + 1}/{s['epochs']}", leave=False)
        for step in bar:
            fid: Fidelity = schedule.at(epoch, epoch * steps + step)
            used[fid.name] = used.get(fid.name, 0) + 1
            pool = windows.setdefault(fid.r_t, video_windows(train, cache, spec, fid.r_t, labels))
            batch = [
                pool[i]
                for i in rng.choice(len(pool), s["batch_size"], replace=len(pool) < s["batch_size"])
            ]
            frames, index = gather_batch(cache, batch)
            feats = _encode(
                encoder,
                frames,
                index,
                _boxes(len(batch), h, w, s["crop_scale"], rng),
                fid.size(h, w),
                cfg,
                dev,
            )
            valid = torch.stack([b.valid() for b in batch]).to(dev)
            outs = head((feats * valid[..., None]).transpose(1, 2))
            loss, parts = detection_loss(
                outs, _targets(batch, head.strides, len(labels)), valid, head.strides
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses):.3f}", fid=fid.name)
        run.epoch_done(epoch, {"loss": float(np.mean(losses)), "fidelity": "+".join(sorted(used))})
        run.save_detector(encoder, head, opt, epoch, labels, cache)
    run.close()
    return run.ckpt_path


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    cache: FrameCache,
    gt: GroundTruth,
    spec: SnippetSpec,
    cfg: dict,
    dev: torch.device,
    batch: int = 32,
) -> dict[str, torch.Tensor]:
    """Full-fidelity snippet features of every video (all snippets, or the resize grid)."""
    encoder.eval()
    out = {}
    h, w = cache.size
    box = torch.tensor([[0.0, 0.0, w, h]])
    for vid in tqdm(gt.videos, desc="features", leave=False):
        frames = cache.frames(vid)
        grid, length = spec.grid(cache.fps, len(frames), 1)
        n = length if spec.mode == "resize" else grid.count(len(frames))
        idx = grid.frame_indices(0, n, len(frames))
        video = torch.from_numpy(np.array(frames)).to(dev)
        feats = [
            _encode(
                encoder, video, torch.from_numpy(idx[i : i + batch])[None], box, (h, w), cfg, dev
            )[0]
            for i in range(0, n, batch)
        ]
        out[vid] = torch.cat(feats).cpu()
    return out


def _window_features(feats: dict[str, torch.Tensor], windows: list[Window]) -> torch.Tensor:
    x = torch.zeros(len(windows), windows[0].length, next(iter(feats.values())).shape[1])
    for i, w in enumerate(windows):
        f = feats[w.video][w.first : w.first + w.length]
        x[i, : len(f)] = f
    return x


@torch.no_grad()
def evaluate_head(
    head: nn.Module,
    feats: dict[str, torch.Tensor],
    gt: GroundTruth,
    cache: FrameCache,
    spec: SnippetSpec,
    cfg: dict,
    labels: list[str],
) -> MapReport:
    """Whole-video head inference + the runtime's decoding, NMS and mAP (one implementation)."""
    head.eval()
    dev = next(head.parameters()).device
    top = max(head.strides)
    segments = []
    for vid, f in feats.items():
        n_frames = len(cache.frames(vid))
        grid, _ = spec.grid(cache.fps, n_frames, 1)
        n = len(f)
        x = torch.zeros(max(top, math.ceil(n / top) * top), f.shape[1])
        x[:n] = f
        outs = [(c[0].cpu().numpy(), r[0].cpu().numpy()) for c, r in head(x.T[None].to(dev))]
        geo = HeadGeometry(
            labels,
            grid,
            head.strides,
            cfg["model"]["max_reach"],
            PostConfig.from_dict(cfg["postprocess"]),
        )
        segments += detect(outs, geo, n, n_frames / cache.fps, vid)
    return evaluate(gt, segments, TIOU_PRESETS["anet"])


def head_stage(cfg: dict, run_dir: Path, resume: bool = False, device: str | None = None) -> Path:
    """Freeze the encoder, extract full-fidelity features, train the head from scratch on them."""
    dev = _device(device)
    s = cfg["head"]
    spec = _spec(cfg)
    train, val, cache, labels = _untrimmed(cfg)
    if not s["init"]:
        raise LofiError("head stage needs head.init: a pretrain or lofi checkpoint for the encoder")
    init = load_checkpoint(s["init"])
    encoder = build_encoder(cfg, pretrained=False).to(dev)
    load_state(encoder, init["encoder"], "encoder", s["init"])
    torch.manual_seed(cfg["seed"])
    head = build_head(cfg, encoder.out_dim, len(labels)).to(dev)
    opt = _optimizer([{"params": head.parameters()}], s)
    run = Run(run_dir, cfg, "head")
    start = 0
    if resume and (ckpt := run.resume()):
        load_state(head, ckpt["head"], "head", run.ckpt_path)
        opt.load_state_dict(ckpt["optimizer"])
        start = ckpt["epoch"] + 1
    t0 = time.perf_counter()
    train_feats = extract_features(encoder, cache, train, spec, cfg, dev)
    val_feats = extract_features(encoder, cache, val, spec, cfg, dev)
    run.log.info("features extracted in %.1fs", time.perf_counter() - t0)
    windows = video_windows(train, cache, spec, 1, labels)
    x_all = _window_features(train_feats, windows)
    valid_all = torch.stack([w.valid() for w in windows])
    targets_all = _targets(windows, head.strides, len(labels))
    steps = max(1, math.ceil(len(windows) / s["batch_size"]))
    for epoch in range(start, s["epochs"]):
        rng = np.random.default_rng([cfg["seed"], 3, epoch])
        _set_lr(opt, [s["lr"]], epoch, s["lr_halve_every"])
        head.train()
        order = rng.permutation(len(windows))
        losses = []
        for step in range(steps):
            sel = order[step * s["batch_size"] : (step + 1) * s["batch_size"]]
            valid = valid_all[sel].to(dev)
            x = x_all[sel].to(dev) * valid[..., None]
            loss, _ = detection_loss(
                head(x.transpose(1, 2)), [targets_all[i] for i in sel], valid, head.strides
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        values: dict[str, Any] = {"loss": float(np.mean(losses))}
        last = epoch == s["epochs"] - 1
        if last or (epoch + 1) % 10 == 0:
            report = evaluate_head(head, val_feats, val, cache, spec, cfg, labels)
            values.update({"val_mAP@0.5": report.mAP[0], "val_avg_mAP": report.average_mAP})
            if last:
                run.metrics["validation"] = report.as_json()
        run.epoch_done(epoch, values)
        run.save_detector(encoder, head, opt, epoch, labels, cache, encoder_from=str(s["init"]))
    run.write_metrics()
    run.close()
    return run.ckpt_path


RUNNERS = {"pretrain": pretrain, "lofi": lofi, "head": head_stage}
