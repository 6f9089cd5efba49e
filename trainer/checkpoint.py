"""Checkpoint files and rebuilding models from them (used by the trainer and the exporter)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lofi.runtime.errors import LofiError
from lofi.trainer.encoder import SnippetEncoder
from lofi.trainer.head import PyramidHead

FORMAT = "lofi-tal-checkpoint"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"format": FORMAT, "version": 1, **payload}, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise LofiError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise LofiError(f"cannot read checkpoint {path}: {type(exc).__name__}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise LofiError(f"{path} is not a LoFi-TAL checkpoint")
    return ckpt


def build_encoder(cfg: dict, pretrained: bool = True) -> SnippetEncoder:
    """`pretrained=False` skips `model.weights`: a checkpoint's own weights replace them anyway,
    and the file need not exist where the checkpoint is exported."""
    m = cfg["model"]
    weights = m["weights"] if pretrained else None
    return SnippetEncoder(m["backbone"], cfg["data"]["k"], m["width"], weights)


def build_head(cfg: dict, in_dim: int, num_classes: int) -> PyramidHead:
    m = cfg["model"]
    return PyramidHead(in_dim, num_classes, m["head_dim"], m["levels"])


def load_state(module: torch.nn.Module, state: dict, what: str, path: str | Path) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError:
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
    cfg = ckpt["config"]
    try:
        encoder = build_encoder(cfg, pretrained=False)
        head = build_head(cfg, encoder.out_dim, len(ckpt["labels"]))
    except (KeyError, TypeError):
        raise LofiError(f"{path}: checkpoint config is incomplete") from None
    load_state(encoder, ckpt["encoder"], "encoder", path)
    load_state(head, ckpt["head"], "head", path)
    return encoder.eval(), head.eval()
