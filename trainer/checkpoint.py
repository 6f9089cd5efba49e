"""Checkpoint files: safe loading, atomic writes, RNG state, and models rebuilt from them.

Checkpoints hold tensors and plain containers only (the config is stored as `Config.to_dict()`),
so they load with `weights_only=True`: a file that needs arbitrary unpickling is refused and its
code never runs. `checkpoint_config` reads the stored config back through the schema.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lofi.runtime.errors import LofiError, shown
from lofi.trainer.encoder import SnippetEncoder
from lofi.trainer.head import PyramidHead
from lofi.trainer.schema import Config, validate

FORMAT = "lofi-tal-checkpoint"
# torch.save's zip: one entry per tensor storage plus a few; data.pkl holds the containers
MAX_ENTRIES = 1 << 16
MAX_PICKLE_BYTES = 256 * 1024**2


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write-then-rename with an fsync, so a kill at any moment leaves the old file or the new."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, "version": 2, **payload}, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def check_archive(path: Path, what: str) -> None:
    """Refuse a zip bomb before torch reads it: torch.load allocates what the zip's directory
    claims for each entry before reading it. torch.save stores entries uncompressed, so every
    honest entry's size is its stored size and all of them fit in the file; anything else (a
    compressed entry, sizes beyond the file, a huge entry count or pickle) is one line."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError):
        raise LofiError(
            f"cannot read {what} {path}: not a PyTorch zip archive (as torch.save writes)"
        ) from None
    if len(entries) > MAX_ENTRIES:
        raise LofiError(f"refusing {what} {path}: {len(entries)} entries (at most {MAX_ENTRIES})")
    total = 0
    for e in entries:
        name = shown(e.filename)
        if e.compress_type != zipfile.ZIP_STORED:
            raise LofiError(
                f"refusing {what} {path}: entry {name} is compressed (torch.save stores entries)"
            )
        if e.file_size != e.compress_size or e.file_size > size:
            raise LofiError(
                f"refusing {what} {path}: entry {name} claims {e.file_size} bytes in a file "
                f"of {size}"
            )
        if e.filename.endswith(".pkl") and e.file_size > MAX_PICKLE_BYTES:
            raise LofiError(
                f"refusing {what} {path}: entry {name} is {e.file_size} bytes "
                f"(at most {MAX_PICKLE_BYTES})"
            )
        total += e.file_size
    if total > size:
        raise LofiError(
            f"refusing {what} {path}: its entries claim {total} bytes in a file of {size}"
        )


def safe_load(path: str | Path, what: str) -> Any:
    """`torch.load(weights_only=True)` with one-line errors; never runs code from the file, and
    never allocates more than the file holds (`check_archive` first; torch itself refuses a
    tensor storage whose record is smaller than the pickle claims)."""
    path = Path(path)
    if not path.is_file():
        raise LofiError(f"{what} not found: {path}")
    check_archive(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc):  # the weights-only unpickler met a class or function to call
            raise LofiError(
                f"refusing {what} {path}: it needs arbitrary code to unpickle "
                "(only tensors and plain containers are loaded)"
            ) from None
        raise LofiError(f"cannot read {what} {path}: {type(exc).__name__}") from None
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        first = (str(exc).strip().splitlines() or [""])[0]
        detail = f": {shown(first, 160)}" if first else ""
        raise LofiError(f"cannot read {what} {path}: {type(exc).__name__}{detail}") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    ckpt = safe_load(path, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise LofiError(f"{path} is not a LoFi-TAL checkpoint")
    return ckpt


def rng_state() -> dict[str, Any]:
    """Every RNG a step draws from (python, numpy's legacy global, torch CPU and CUDA)."""
    state = {
        "python": random.getstate(),
        "numpy": _plain(np.random.get_state(legacy=False)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _plain(state: dict) -> dict:
    """numpy's MT19937 key as a list, so the state loads with `weights_only=True`."""
    inner = dict(state["state"], key=[int(v) for v in state["state"]["key"]])
    return dict(state, state=inner)


def _numpy_state(state: dict) -> dict:
    inner = dict(state["state"], key=np.asarray(state["state"]["key"], dtype=np.uint32))
    return dict(state, state=inner)


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(_numpy_state(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def init_encoder(encoder: torch.nn.Module, path: str | None) -> None:
    """Start an encoder from another stage's checkpoint (e.g. lofi from pretrain)."""
    if path:
        load_state(encoder, load_checkpoint(path)["encoder"], "encoder", path)


def checkpoint_config(ckpt: dict, path: str | Path) -> Config:
    """The config a checkpoint was trained with, read back through the schema: keys added since
    it was written take their defaults, and a damaged one is one line naming the file."""
    return validate(ckpt.get("config"), f"checkpoint {path}")


def build_encoder(cfg: Config, pretrained: bool = True) -> SnippetEncoder:
    """`pretrained=False` skips `model.weights`: a checkpoint's own weights replace them anyway,
    and the file need not exist where the checkpoint is exported."""
    m = cfg.model
    weights = m.weights if pretrained else None
    return SnippetEncoder(m.backbone, cfg.data.k, m.width, weights)


def build_head(cfg: Config, in_dim: int, num_classes: int) -> torch.nn.Module:
    m = cfg.model
    if m.head == "gtad":
        from lofi.trainer.gtad import GTADHead

        return GTADHead(in_dim, num_classes, length=cfg.data.window, **asdict(m.gtad))
    if m.head != "pyramid":
        raise LofiError(f"model.head must be pyramid or gtad, not {m.head!r}")
    return PyramidHead(
        in_dim,
        num_classes,
        m.head_dim,
        m.levels,
        dropout=m.head_dropout,
        norm=m.head_norm,
        blocks=m.head_blocks,
        head_layers=m.head_layers,
        kernel=m.head_kernel,
        embed_layers=m.head_embed,
        residual=m.head_residual,
    )


def load_state(module: torch.nn.Module, state: dict, what: str, path: str | Path) -> None:
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError):
        raise LofiError(
            f"{path}: the {what} weights do not fit the configured model "
            "(checkpoint of another model?)"
        ) from None


def models_from_checkpoint(ckpt: dict, path: str | Path) -> tuple[SnippetEncoder, PyramidHead]:
    """Encoder and head of a `head`- or `lofi`-stage checkpoint, in eval mode."""
    if ckpt.get("head") is None:
        raise LofiError(
            f"{path} has no localization head (a '{ckpt.get('stage')}' checkpoint); "
            "export a 'lofi' or 'head' stage checkpoint"
        )
    cfg = checkpoint_config(ckpt, path)
    labels = ckpt.get("labels")
    if not isinstance(labels, list):
        raise LofiError(f"{path}: checkpoint has no list of labels")
    encoder = build_encoder(cfg, pretrained=False)
    head = build_head(cfg, encoder.out_dim, len(labels))
    load_state(encoder, ckpt["encoder"], "encoder", path)
    load_state(head, ckpt["head"], "head", path)
    check_finite(encoder, "encoder", path)
    check_finite(head, "head", path)
    return encoder.eval(), head.eval()


def check_finite(module: torch.nn.Module, what: str, path: str | Path) -> None:
    """Refuse weights with NaN or infinity (a diverged run's checkpoint): exported, they make a
    bundle whose every score is NaN. Checked on the module after loading, so the shapes are the
    model's own, not whatever the file claims."""
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise LofiError(
                f"{path}: {what} tensor {name} has {bad} non-finite value(s) (NaN or infinity): "
                "the run diverged; export an earlier checkpoint"
            )
