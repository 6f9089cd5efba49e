"""Local pretrained backbone weights: torchvision files and the public TSM release checkpoints.

Loading is all-or-nothing: a wrong file must fail loudly rather than leave a half-initialised
backbone that trains to a silently worse model. Files are always read with weights_only=True, so a
pickle that would run code on load is refused instead of executed.
"""

from __future__ import annotations

import pickle
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from lofi.runtime.errors import LofiError
from torchvision.models.mobilenetv2 import InvertedResidual

# top-level modules that hold a classifier: never loaded (the encoder drops the classifier)
CLASSIFIER_HEADS = ("fc", "classifier", "new_fc")
# wrappers in DataParallel / TSM's TSN checkpoints, stripped from the front of each key
_PREFIXES = ("module", "base_model")
# TSM's TemporalShift keeps the wrapped conv as `.net`; the tensors are the conv's own
_WRAPPER = "net"


@dataclass
class LoadReport:
    """What a weights file gave the backbone; missing/unexpected/mismatched must be empty to load."""

    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"loaded {self.loaded} tensors", f"ignored {len(self.ignored)} classifier"]
        for name, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape mismatch", self.mismatched),
        ):
            if keys:
                parts.append(f"{len(keys)} {name} (first: {keys[0]})")
        return ", ".join(parts)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def _is_classifier(name: str) -> bool:
    return name.split(".", 1)[0] in CLASSIFIER_HEADS


def _torchvision_name(key: str) -> str:
    """`module.base_model.layer1.0.conv1.net.weight` -> `layer1.0.conv1.weight`."""
    parts = key.split(".")
    while len(parts) > 1 and parts[0] in _PREFIXES:
        parts.pop(0)
    return ".".join(p for p in parts if p != _WRAPPER)


def _unflatten_mobilenet(state: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """TSM's MobileNetV2 (archs/mobilenet_v2.py) keeps each block's layers in one flat Sequential
    (`conv.0` conv, `conv.1` bn, `conv.2` relu, `conv.3` conv...), torchvision nests them
    (`conv.0.0`, `conv.0.1`, `conv.0.2`, `conv.1.0`...). The leaves line up one to one, so a flat
    index is the index of the torchvision leaf module. Blocks already nested are left alone."""
    out = dict(state)
    for name, block in net.named_modules():
        prefix = f"{name}.conv."
        # torchvision never has `conv.0.weight` (conv.0 is a Conv2dNormActivation); TSM always does
        if not isinstance(block, InvertedResidual) or f"{prefix}0.weight" not in state:
            continue
        leaves = [n for n, m in block.conv.named_modules() if n and not list(m.children())]
        for key in state:
            if not key.startswith(prefix):
                continue
            index, _, rest = key[len(prefix) :].partition(".")
            if index.isdigit() and int(index) < len(leaves) and "." not in rest:
                del out[key]
                out[f"{prefix}{leaves[int(index)]}.{rest}"] = state[key]
    return out


def _read(path: Path) -> Mapping:
    """A zip archive (torch >= 1.6) gets the checkpoint's zip-bomb checks first; the legacy
    format of older releases (TSM's) is read as before."""
    from lofi.trainer.checkpoint import check_archive

    if not path.is_file():
        raise LofiError(f"pretrained weights not found: {path}")
    if zipfile.is_zipfile(path):
        check_archive(path, "pretrained weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines()]
        why = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), "")
        raise LofiError(
            f"cannot read pretrained weights {path}: refused, it is not a plain tensor file "
            f"loadable with weights_only=True ({why or type(exc).__name__})"
        ) from None
    except Exception as exc:  # torch raises many types for a file that is not a torch file
        raise LofiError(f"cannot read pretrained weights {path}: {type(exc).__name__}") from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if (
        not isinstance(state, Mapping)
        or not state
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise LofiError(f"cannot read pretrained weights {path}: not a mapping of names to tensors")
    return state


def load_backbone_weights(net: nn.Module, path: Path, arch: str) -> LoadReport:
    """Load a local torchvision-layout or TSM-release file into a plain torchvision `net` (before
    any shift wrappers). Classifier tensors are ignored; every other tensor must be present with
    its shape, else LofiError and `net` is left untouched."""
    path = Path(path)
    state: dict[str, torch.Tensor] = {}
    for key, value in _read(path).items():
        name = _torchvision_name(key)
        if name in state:
            raise LofiError(f"{path}: two tensors map to '{name}' (one is '{key}')")
        state[name] = value
    state = _unflatten_mobilenet(state, net)

    expected = net.state_dict()
    report = LoadReport()
    report.ignored = sorted(k for k in state if _is_classifier(k))
    body = {k: v for k, v in state.items() if not _is_classifier(k)}
    report.missing = [
        k
        for k in expected
        if not _is_classifier(k)
        and k not in body
        # BatchNorm's step counter only matters with momentum=None; pre-0.4.1 files lack it
        and not k.endswith("num_batches_tracked")
    ]
    report.unexpected = [k for k in body if k not in expected]
    report.mismatched = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in body.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if not report.ok:
        raise LofiError(f"{path} does not fit {arch}: {report.summary()}")
    net.load_state_dict(body, strict=False)
    report.loaded = len(body)
    print(f"pretrained {arch} weights {path.name}: {report.summary()}", file=sys.stderr)
    return report
