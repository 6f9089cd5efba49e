"""The training config's schema: typed dataclasses with ranges and choices, checked before any
work starts, so a bad key or value costs one line instead of a traceback minutes into a run.

`validate(cfg)` checks a config dict (YAML + overrides merged, or a checkpoint's stored config)
and returns the typed `Config` the trainer reads; keys it lacks take the defaults declared here,
the only place they are written down. Every problem names the key, the value and what was
expected. Loading files and `--set` overrides is trainer/config.py's.
"""

from __future__ import annotations

import math
import re
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from typing import Any

from lofi.runtime.errors import LofiError
from lofi.runtime.postprocess import PostConfig
from lofi.trainer.fidelity import SCHEDULES, SQRT2

BACKBONES = ("tiny", "resnet18", "resnet34", "resnet50", "mobilenet_v2")


def opt(
    default: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    choices: tuple[str, ...] | None = None,
    pattern: str | None = None,
    length: int | None = None,
) -> Any:
    """A config field: its default and the values it accepts (range, choices, regex, length)."""
    meta = dict(
        low=low,
        high=high,
        open_low=open_low,
        open_high=open_high,
        choices=choices,
        pattern=pattern,
        length=length,
    )
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


POSITIVE = dict(low=0, open_low=True)
FRACTION = dict(low=0, high=1)


@dataclass
class DataConfig:
    annotations: str | None = None
    cache: str | None = None
    clips: str | None = None
    clip_cache: str | None = None
    k: int = opt(4, low=1)
    frame_stride: int = opt(1, low=1)
    hop: int = opt(4, low=1)
    window: int = opt(64, low=1)
    mode: str = opt("window", choices=("window", "resize"))
    mean: list[float] = opt([0.45, 0.45, 0.45], length=3)
    std: list[float] = opt([0.225, 0.225, 0.225], length=3, **POSITIVE)
    # validation thresholds: anet (0.5:0.05:0.95), thumos (0.3:0.1:0.7) or a list like 0.3,0.5
    tiou: str = opt("anet", pattern=r"anet|thumos|[0-9.]+(,[0-9.]+)*")
    # frame-decoding processes (JPEG caches) per trainer process; default min(8, cores)
    workers: int | None = opt(None, low=1)


@dataclass
class GTADConfig:
    """G-TAD's sizes (model.head: gtad; resize protocol, T = data.window)."""

    max_duration: int | None = opt(None, low=1)
    dim: int = opt(256, low=1)
    groups: int = opt(32, low=1)
    width_group: int = opt(4, low=1)
    k: int = opt(3, low=1)
    samples: int = opt(16, low=1)
    context: float = opt(0.5, low=0)
    map_dim: int = opt(512, low=1)
    hidden_2d: int = opt(128, low=1)


@dataclass
class ModelConfig:
    backbone: str = opt("tiny", choices=BACKBONES)
    head: str = opt("pyramid", choices=("pyramid", "gtad"))
    gtad: GTADConfig = field(default_factory=GTADConfig)
    width: int = opt(16, low=1)
    weights: str | None = None
    head_dim: int = opt(128, low=1)
    levels: int = opt(4, low=1)
    max_reach: int = opt(32, low=1)
    head_window: int = opt(32, low=1)
    head_dropout: float = opt(0.1, low=0, high=1, open_high=True)
    # pyramid head (trainer/head.py), all local so the streaming context stays finite:
    # embedding convs, blocks per level (residual: two convs each), convs per
    # classification/regression head, kernel size, channel LayerNorm after each conv
    head_embed: int = opt(2, low=0)
    head_blocks: int = opt(1, low=0)
    head_residual: bool = True
    head_layers: int = opt(3, low=1)
    head_kernel: int = opt(3, low=1)
    head_norm: bool = False


@dataclass
class TrainConfig:
    """Memory and scale options shared by every stage (README: "Training for memory")."""

    precision: str = opt("fp32", choices=("fp32", "bf16", "fp16"))
    checkpointing: str = opt("none", pattern=r"none|stages|chunks:[1-9][0-9]*")
    accumulate: int = opt(1, low=1)
    channels_last: bool = False
    sync_bn: bool = False
    checkpoint_every: int = opt(0, low=0)


@dataclass
class PretrainConfig:
    source: str = opt("clips", choices=("clips", "segments"))
    init: str | None = None
    epochs: int = opt(8, low=0)
    batch_size: int = opt(32, low=1)
    optimizer: str = opt("adamw", choices=("adamw", "sgd"))
    lr: float = opt(2e-3, **POSITIVE)
    weight_decay: float = opt(1e-4, low=0)
    momentum: float = opt(0.9, low=0, high=1, open_high=True)
    crop_scale: list[float] | None = opt([0.8, 1.0], length=2, low=0, high=1, open_low=True)
    validate_every: int = opt(1, low=1)
    clip_grad: float = opt(0.0, low=0)


@dataclass
class LofiConfig:
    init: str | None = None
    epochs: int = opt(6, low=0)
    batch_size: int = opt(2, low=1)
    optimizer: str = opt("adamw", choices=("adamw", "sgd"))
    lr: float = opt(5e-4, **POSITIVE)
    head_lr: float = opt(1e-3, **POSITIVE)
    weight_decay: float = opt(1e-4, low=0)
    momentum: float = opt(0.0, low=0, high=1, open_high=True)
    lr_halve_every: int = opt(5, low=1)
    schedule: str = opt("long_cycle", choices=SCHEDULES)
    s_ratio: float = opt(2.0, low=1)
    t_ratio: int = opt(4, low=1)
    st_ratio: list[float] = opt([2, SQRT2], length=2, low=1)
    short_every: int = opt(16, low=1)
    freeze_bn: bool = True
    crop_scale: list[float] | None = opt([0.8, 1.0], length=2, low=0, high=1, open_low=True)
    validate_every: int = opt(1, low=1)
    clip_grad: float = opt(0.0, low=0)


@dataclass
class HeadConfig:
    """ActionFormer's recipe on frozen features (trainer/head_stage.py)."""

    init: str | None = None
    epochs: int = opt(40, low=0)
    batch_size: int = opt(8, low=1)
    optimizer: str = opt("adamw", choices=("adamw", "sgd"))
    lr: float = opt(1e-3, **POSITIVE)
    weight_decay: float = opt(0.05, low=0)  # convolution weights only
    momentum: float = opt(0.9, low=0, high=1, open_high=True)
    # linear warm-up then cosine to 0; or "halve" (lr_halve_every)
    schedule: str = opt("cosine", choices=("cosine", "halve"))
    warmup_epochs: int = opt(5, low=0)
    lr_halve_every: int = opt(15, low=1)
    clip_grad: float = opt(1.0, low=0)
    ema: float = opt(0.999, low=0, high=1, open_high=True)  # EMA decay of the weights; 0: none
    # whole videos, a random crop of this fraction; null: fixed windows
    crop: list[float] | None = opt([0.9, 1.0], length=2, low=0, high=1, open_low=True)
    standardize: bool = True  # head input standardised with the training features' statistics
    validate_every: int = opt(1, low=1)


@dataclass
class PostprocessConfig:
    score_threshold: float = opt(0.05, **FRACTION)
    nms: str = opt("soft", choices=("soft", "hard"))
    iou_threshold: float = opt(0.5, **FRACTION)
    sigma: float = opt(0.5, **POSITIVE)
    min_score: float = opt(0.001, **FRACTION)
    max_segments: int = opt(100, low=1)

    def runtime(self) -> PostConfig:
        """The runtime's post-processing settings (what bundles and validation apply)."""
        return PostConfig.from_dict(asdict(self))


@dataclass
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    lofi: LofiConfig = field(default_factory=LofiConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)

    def to_dict(self) -> dict[str, Any]:
        """The plain JSON-able form run folders and checkpoints store (they load with
        `weights_only=True`, which refuses dataclasses); `validate` reads it back."""
        return asdict(self)


def _expectation(kind: Any, meta: dict) -> str:
    """What a field accepts, in words: 'an integer >= 1', 'one of soft, hard', ..."""
    args = typing.get_args(kind)
    if type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return _expectation(inner, meta) + " or null"
    if typing.get_origin(kind) is list:
        item = _expectation(typing.get_args(kind)[0], meta)
        n = meta.get("length")
        return f"a list of {n if n else 'any number of'} {item.replace('a number', 'numbers')}"
    if meta.get("choices"):
        return "one of " + ", ".join(meta["choices"])
    if meta.get("pattern"):
        return "a value matching " + meta["pattern"].replace("[1-9][0-9]*", "N")
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    text = words.get(kind, str(kind))
    bounds = []
    if meta.get("low") is not None:
        bounds.append(f"{'>' if meta['open_low'] else '>='} {meta['low']:g}")
    if meta.get("high") is not None:
        bounds.append(f"{'<' if meta['open_high'] else '<='} {meta['high']:g}")
    return text + (" " + " and ".join(bounds) if bounds else "")


def _scalar_ok(value: Any, kind: Any, meta: dict) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is int:
        ok = isinstance(value, int)
    elif kind is float:
        ok = isinstance(value, (int, float)) and math.isfinite(value)
    elif kind is str:
        ok = isinstance(value, str)
        if ok and meta.get("choices"):
            return value in meta["choices"]
        if ok and meta.get("pattern"):
            return re.fullmatch(meta["pattern"], value) is not None
        return ok
    else:
        return False
    if not ok:
        return False
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value <= low if meta.get("open_low") else value < low):
        return False
    return not (high is not None and (value >= high if meta.get("open_high") else value > high))


def _value_ok(value: Any, kind: Any, meta: dict) -> bool:
    args = typing.get_args(kind)
    if type(None) in args:
        if value is None:
            return True
        kind = next(a for a in args if a is not type(None))
    if typing.get_origin(kind) is list:
        item = typing.get_args(kind)[0]
        n = meta.get("length")
        return (
            isinstance(value, list)
            and (n is None or len(value) == n)
            and all(_scalar_ok(x, item, meta) for x in value)
        )
    return _scalar_ok(value, kind, meta)


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _yaml11_float(value: Any, kind: Any) -> Any:
    """YAML 1.1 reads `1e-3` (no dot) as a string: a number field takes it as the number."""
    scalar = kind in (float, float | None)
    if typing.get_origin(kind) is list or list in {
        typing.get_origin(a) for a in typing.get_args(kind)
    }:
        if isinstance(value, list):
            return [float(x) if isinstance(x, str) and _FLOAT.fullmatch(x) else x for x in value]
    elif scalar and isinstance(value, str) and _FLOAT.fullmatch(value):
        return float(value)
    return value


def _check(node: Any, cls: type, where: str, source: str) -> Any:
    """`node` (a dict) as an instance of the dataclass `cls`, or a LofiError naming the key."""
    if not isinstance(node, dict):
        raise LofiError(f"{source}: '{where.rstrip('.') or 'the config'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for key in node:
        if key not in known:
            raise LofiError(
                f"{source}: unknown config key {where + str(key)!r} "
                f"(known under '{where.rstrip('.') or 'the top level'}': {', '.join(known)})"
            )
    values = {}
    for name, f in known.items():
        key, kind = f"{where}{name}", hints[name]
        if name not in node:
            values[name] = (
                f.default_factory() if f.default_factory is not MISSING else f.default  # type: ignore[misc]
            )
            continue
        value = _yaml11_float(node[name], kind)
        if is_dataclass(kind):
            values[name] = _check(value, kind, f"{key}.", source)
        elif _value_ok(value, kind, f.metadata):
            values[name] = float(value) if kind is float else value
        else:
            raise LofiError(
                f"{source}: {key} = {value!r}: expected {_expectation(kind, dict(f.metadata))}"
            )
    return cls(**values)


def validate(cfg: dict, source: str = "config") -> Config:
    """The typed config of a config dict; the first bad key or value raises LofiError naming
    `source`. Missing keys take the schema's defaults, so older checkpoints still load."""
    return _check(cfg, Config, "", source)


def field_type(key: str) -> Any:
    """The declared type of a dotted key ('head.epochs' -> int), None for an unknown key."""
    cls: Any = Config
    kind: Any = None
    for part in key.split("."):
        if not is_dataclass(cls):
            return None
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return None
        kind = cls = hints[part]
    return kind
