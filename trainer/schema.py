"""The training config's schema: typed dataclasses with ranges and choices, checked before any
work starts, so a bad key or value costs one line instead of a traceback minutes into a run.

`validate(cfg)` checks a config dict (YAML + overrides merged, or a checkpoint's stored config)
and returns the typed `Config` the trainer reads; keys it lacks take the defaults declared here,
the only place they are written down. Every problem names the key, the value and what was
expected. Loading files and `--set` overrides is trainer/config.py's.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from typing import Any

from lofi.runtime.bounds import FRACTION, SEED, WORKERS, Bound
from lofi.runtime.errors import LofiError, shown
from lofi.runtime.evaluation import parse_tiou
from lofi.runtime.postprocess import PostConfig
from lofi.trainer.fidelity import SCHEDULES, SQRT2

BACKBONES = ("tiny", "resnet18", "resnet34", "resnet50", "mobilenet_v2")


def opt(
    default: Any,
    bound: Bound | None = None,
    *,
    choices: tuple[str, ...] | None = None,
    pattern: str | None = None,
    parse: Callable[[str], Any] | None = None,
    words: str | None = None,
    length: int | None = None,
) -> Any:
    """A config field: its default and the values it accepts (a `Bound` on every number, on each
    item of a list of numbers; choices; a regex, or the runtime's parser of such text, which
    `words` says in words; a list length)."""
    meta = dict(
        bound=bound, choices=choices, pattern=pattern, parse=parse, words=words, length=length
    )
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


# the physical bounds of the config's numbers (runtime/bounds.py has those shared with options)
FRAMES = Bound(1, 1024, integer=True)  # frames of a snippet, a stride, a hop; small sizes
SNIPPETS = Bound(1, 100_000, integer=True)  # a window or a reach in snippets
CHANNELS = Bound(1, 16384, integer=True)  # feature widths
LAYERS = Bound(0, 64, integer=True)  # blocks or convolutions (0: none)
EPOCHS = Bound(0, 100_000, integer=True)
EVERY = Bound(1, 100_000, integer=True)  # epochs or batches between two events
BATCH = Bound(1, 100_000, integer=True)
STEPS = Bound(0, 10**9, integer=True)  # optimizer steps between checkpoints (0: none)
LR = Bound(0, 100, open_low=True)
DECAY = Bound(0, 10)  # weight decay
MOMENTUM = Bound(0, 1, open_high=True)  # momentum, EMA decay, dropout
NORM = Bound(0, 1e6)  # a gradient norm (0: no clipping)
RATIO = Bound(1, 64)  # a fidelity's down-sampling
AREA = Bound(0.001, 1)  # a crop's share of the frame or of the video
MEAN = Bound(0, 1)  # pixels are in [0, 1]
STD = Bound(0.001, 1)
SIGMA = Bound(0.001, 100)


@dataclass
class DataConfig:
    annotations: str | None = None
    cache: str | None = None
    clips: str | None = None
    clip_cache: str | None = None
    k: int = opt(4, FRAMES)
    frame_stride: int = opt(1, FRAMES)
    hop: int = opt(4, FRAMES)
    window: int = opt(64, SNIPPETS)
    mode: str = opt("window", choices=("window", "resize"))
    mean: list[float] = opt([0.45, 0.45, 0.45], MEAN, length=3)
    std: list[float] = opt([0.225, 0.225, 0.225], STD, length=3)
    # validation thresholds: anet (0.5:0.05:0.95), thumos (0.3:0.1:0.7) or a list like 0.3,0.5
    tiou: str = opt("anet", parse=parse_tiou, words="anet, thumos or thresholds like 0.3,0.5")
    # frame-decoding processes (JPEG caches) per trainer process; default min(8, cores)
    workers: int | None = opt(None, WORKERS)


@dataclass
class GTADConfig:
    """G-TAD's sizes (model.head: gtad; resize protocol, T = data.window)."""

    max_duration: int | None = opt(None, SNIPPETS)
    dim: int = opt(256, CHANNELS)
    groups: int = opt(32, CHANNELS)
    width_group: int = opt(4, CHANNELS)
    k: int = opt(3, FRAMES)
    samples: int = opt(16, FRAMES)
    context: float = opt(0.5, Bound(0, 10))
    map_dim: int = opt(512, CHANNELS)
    hidden_2d: int = opt(128, CHANNELS)


@dataclass
class ModelConfig:
    backbone: str = opt("tiny", choices=BACKBONES)
    head: str = opt("pyramid", choices=("pyramid", "gtad"))
    gtad: GTADConfig = field(default_factory=GTADConfig)
    width: int = opt(16, CHANNELS)
    weights: str | None = None
    head_dim: int = opt(128, CHANNELS)
    levels: int = opt(4, Bound(1, 16, integer=True))  # strides up to 2**(levels - 1)
    max_reach: int = opt(32, SNIPPETS)
    head_window: int = opt(32, SNIPPETS)
    head_dropout: float = opt(0.1, MOMENTUM)
    # pyramid head (trainer/head.py), all local so the streaming context stays finite:
    # embedding convs, blocks per level (residual: two convs each), convs per
    # classification/regression head, kernel size, channel LayerNorm after each conv
    head_embed: int = opt(2, LAYERS)
    head_blocks: int = opt(1, LAYERS)
    head_residual: bool = True
    head_layers: int = opt(3, Bound(1, 64, integer=True))
    head_kernel: int = opt(3, FRAMES)
    head_norm: bool = False


@dataclass
class TrainConfig:
    """Memory and scale options shared by every stage (README: "Training for memory")."""

    precision: str = opt("fp32", choices=("fp32", "bf16", "fp16"))
    checkpointing: str = opt(
        "none",
        pattern=r"none|stages|chunks:[1-9][0-9]{0,4}",
        words="none, stages or chunks:N (1 <= N <= 99999)",
    )
    accumulate: int = opt(1, BATCH)
    channels_last: bool = False
    sync_bn: bool = False
    checkpoint_every: int = opt(0, STEPS)


@dataclass
class PretrainConfig:
    source: str = opt("clips", choices=("clips", "segments"))
    init: str | None = None
    epochs: int = opt(8, EPOCHS)
    batch_size: int = opt(32, BATCH)
    optimizer: str = opt("adamw", choices=("adamw", "sgd"))
    lr: float = opt(2e-3, LR)
    weight_decay: float = opt(1e-4, DECAY)
    momentum: float = opt(0.9, MOMENTUM)
    crop_scale: list[float] | None = opt([0.8, 1.0], AREA, length=2)
    validate_every: int = opt(1, EVERY)
    clip_grad: float = opt(0.0, NORM)


@dataclass
class LofiConfig:
    init: str | None = None
    epochs: int = opt(6, EPOCHS)
    batch_size: int = opt(2, BATCH)
    optimizer: str = opt("adamw", choices=("adamw", "sgd"))
    lr: float = opt(5e-4, LR)
    head_lr: float = opt(1e-3, LR)
    weight_decay: float = opt(1e-4, DECAY)
    momentum: float = opt(0.0, MOMENTUM)
    lr_halve_every: int = opt(5, EVERY)
    schedule: str = opt("long_cycle", choices=SCHEDULES)
    s_ratio: float = opt(2.0, RATIO)
    t_ratio: int = opt(4, Bound(1, 64, integer=True))
    st_ratio: list[float] = opt([2, SQRT2], RATIO, length=2)
    short_every: int = opt(16, EVERY)
    freeze_bn: bool = True
    crop_scale: list[float] | None = opt([0.8, 1.0], AREA, length=2)
    validate_every: int = opt(1, EVERY)
    clip_grad: float = opt(0.0, NORM)


@dataclass
class HeadConfig:
    """ActionFormer's recipe on frozen features (trainer/head_stage.py)."""

    init: str | None = None
    epochs: int = opt(40, EPOCHS)
    batch_size: int = opt(8, BATCH)
    optimizer: str = opt("adamw", choices=("adamw", "sgd"))
    lr: float = opt(1e-3, LR)
    weight_decay: float = opt(0.05, DECAY)  # convolution weights only
    momentum: float = opt(0.9, MOMENTUM)
    # linear warm-up then cosine to 0; or "halve" (lr_halve_every)
    schedule: str = opt("cosine", choices=("cosine", "halve"))
    warmup_epochs: int = opt(5, EPOCHS)
    lr_halve_every: int = opt(15, EVERY)
    clip_grad: float = opt(1.0, NORM)
    ema: float = opt(0.999, MOMENTUM)  # EMA decay of the weights; 0: none
    # whole videos, a random crop of this fraction; null: fixed windows
    crop: list[float] | None = opt([0.9, 1.0], AREA, length=2)
    standardize: bool = True  # head input standardised with the training features' statistics
    validate_every: int = opt(1, EVERY)


@dataclass
class PostprocessConfig:
    score_threshold: float = opt(0.05, FRACTION)
    nms: str = opt("soft", choices=("soft", "hard"))
    iou_threshold: float = opt(0.5, FRACTION)
    sigma: float = opt(0.5, SIGMA)
    min_score: float = opt(0.001, FRACTION)
    max_segments: int = opt(100, SNIPPETS)

    def runtime(self) -> PostConfig:
        """The runtime's post-processing settings (what bundles and validation apply)."""
        return PostConfig.from_dict(asdict(self))


@dataclass
class Config:
    seed: int = opt(0, SEED)
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
    """What a field accepts, in words: 'an integer >= 1 and <= 1024', 'one of soft, hard', ..."""
    args = typing.get_args(kind)
    if type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return _expectation(inner, meta) + " or null"
    if typing.get_origin(kind) is list:
        item = _expectation(typing.get_args(kind)[0], meta)
        return f"a list of {meta['length']} {item.replace('a number', 'numbers')}"
    if meta.get("choices"):
        return "one of " + ", ".join(meta["choices"])
    if meta.get("words"):
        return meta["words"]
    if kind in (int, float):
        return meta["bound"].expected()
    return {bool: "true or false", str: "a string"}[kind]


def _parses(parse: Callable[[str], Any], value: str) -> bool:
    try:
        parse(value)
    except LofiError:
        return False
    return True


def _scalar_ok(value: Any, kind: Any, meta: dict) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is str:
        if not isinstance(value, str):
            return False
        if meta.get("choices"):
            return value in meta["choices"]
        if meta.get("pattern"):
            return re.fullmatch(meta["pattern"], value) is not None
        return meta.get("parse") is None or _parses(meta["parse"], value)
    if kind is int and not isinstance(value, int):
        return False
    return meta["bound"].holds(value)


def _value_ok(value: Any, kind: Any, meta: dict) -> bool:
    args = typing.get_args(kind)
    if type(None) in args:
        if value is None:
            return True
        kind = next(a for a in args if a is not type(None))
    if typing.get_origin(kind) is list:
        item = typing.get_args(kind)[0]
        return (
            isinstance(value, list)
            and len(value) == meta["length"]
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
            name = key if isinstance(key, str) else shown(key)
            raise LofiError(
                f"{source}: unknown config key {shown(where + name)} "
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
                f"{source}: {key} = {shown(value)}: expected {_expectation(kind, dict(f.metadata))}"
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
