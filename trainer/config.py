"""YAML configs with dotted command-line overrides (`--set lofi.epochs=3`)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from lofi.runtime.errors import LofiError

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "data": {
        "annotations": None,
        "cache": None,
        "clips": None,
        "clip_cache": None,
        "k": 4,
        "frame_stride": 1,
        "hop": 4,
        "window": 64,
        "mode": "window",
        "mean": [0.45, 0.45, 0.45],
        "std": [0.225, 0.225, 0.225],
    },
    "model": {
        "backbone": "tiny",
        "head": "pyramid",
        # G-TAD's sizes (model.head: gtad; resize protocol, T = data.window)
        "gtad": {
            "max_duration": None,
            "dim": 256,
            "groups": 32,
            "width_group": 4,
            "k": 3,
            "samples": 16,
            "context": 0.5,
            "map_dim": 512,
            "hidden_2d": 128,
        },
        "width": 16,
        "weights": None,
        "head_dim": 128,
        "levels": 4,
        "max_reach": 32,
        "head_window": 32,
        "head_dropout": 0.1,
        # pyramid head (trainer/head.py), all local so the streaming context stays finite:
        # embedding convs, blocks per level (residual: two convs each), convs per
        # classification/regression head, kernel size, channel LayerNorm after each conv
        "head_embed": 2,
        "head_blocks": 1,
        "head_residual": True,
        "head_layers": 3,
        "head_kernel": 3,
        "head_norm": False,
    },
    # memory and scale options shared by every stage (docs: README "Training for memory")
    "train": {
        "precision": "fp32",
        "checkpointing": "none",
        "accumulate": 1,
        "channels_last": False,
        "sync_bn": False,
        "checkpoint_every": 0,
    },
    "pretrain": {
        "source": "clips",
        "init": None,
        "epochs": 8,
        "batch_size": 32,
        "optimizer": "adamw",
        "lr": 2e-3,
        "weight_decay": 1e-4,
        "momentum": 0.9,
        "crop_scale": [0.8, 1.0],
        "validate_every": 1,
        "clip_grad": 0.0,
    },
    "lofi": {
        "init": None,
        "epochs": 6,
        "batch_size": 2,
        "optimizer": "adamw",
        "lr": 5e-4,
        "head_lr": 1e-3,
        "weight_decay": 1e-4,
        "momentum": 0.0,
        "lr_halve_every": 5,
        "schedule": "long_cycle",
        "s_ratio": 2.0,
        "t_ratio": 4,
        "st_ratio": [2, 1.4142135623730951],
        "short_every": 16,
        "freeze_bn": True,
        "crop_scale": [0.8, 1.0],
        "validate_every": 1,
        "clip_grad": 0.0,
    },
    # ActionFormer's recipe on frozen features (docs: trainer/head_stage.py)
    "head": {
        "init": None,
        "epochs": 40,
        "batch_size": 8,
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 0.05,  # convolution weights only
        "momentum": 0.9,
        "schedule": "cosine",  # linear warm-up then cosine to 0; or "halve" (lr_halve_every)
        "warmup_epochs": 5,
        "lr_halve_every": 15,
        "clip_grad": 1.0,
        "ema": 0.999,  # EMA decay of the head's weights (validated, exported); 0: none
        "crop": [0.9, 1.0],  # whole videos, a random crop of this fraction; null: fixed windows
        "standardize": True,  # head input standardised with the training features' statistics
        "validate_every": 1,
    },
    "postprocess": {
        "score_threshold": 0.05,
        "nms": "soft",
        "iou_threshold": 0.5,
        "sigma": 0.5,
        "min_score": 0.001,
        "max_segments": 100,
    },
}


def _merge(base: dict, extra: dict, where: str = "") -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if k not in out:
            raise LofiError(f"unknown config key '{where}{k}'")
        out[k] = (
            _merge(out[k], v, f"{where}{k}.")
            if isinstance(out[k], dict) and isinstance(v, dict)
            else v
        )
    return out


def with_defaults(cfg: dict) -> dict:
    """A stored config completed with keys added since it was written (older checkpoints)."""
    return _merge(DEFAULTS, cfg)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> dict:
    """Defaults, the YAML file, then the overrides, each checked against the schema
    (trainer/schema.py) before any work: a bad key or value is one line, not a traceback later."""
    from lofi.trainer.schema import load_checked_config

    return load_checked_config(path, overrides)
