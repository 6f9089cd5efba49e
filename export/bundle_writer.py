"""Checkpoint -> bundle folder: ONNX files, parity.json, optional engines, manifest.json last."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lofi.export.onnx_export import export_encoder, export_gtad_head, export_head
from lofi.export.parity import check_parity
from lofi.runtime.bundle import (
    ENCODER_FILE,
    GTAD_OUTPUTS,
    HEAD_FILE,
    MANIFEST,
    Manifest,
    write_manifest,
)
from lofi.runtime.errors import LofiError
from lofi.runtime.postprocess import PostConfig
from lofi.runtime.snippets import SnippetGrid
from lofi.trainer.checkpoint import load_checkpoint, models_from_checkpoint
from lofi.trainer.gtad import GTADHead


def export_bundle(
    checkpoint: Path, out: Path, fp16: bool = False, trt: bool = False, encoder_batch: int = 16
) -> tuple[Path, dict]:
    """Write the bundle; returns it with the parity report (caller decides on failure).

    The pyramid head needs the `window` protocol (the streaming runtime); the G-TAD head is a
    whole-video head under the `resize` protocol (the runtime's whole-video path)."""
    ckpt = load_checkpoint(checkpoint)
    encoder, head = models_from_checkpoint(ckpt, checkpoint)
    mode = ckpt["config"]["data"]["mode"]
    if isinstance(head, GTADHead):
        if mode != "resize":
            raise LofiError("a G-TAD head needs a model trained with data.mode=resize")
    elif mode != "window":
        raise LofiError("the streaming runtime needs a model trained with data.mode=window")
    h, w = _input_size(ckpt)
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise LofiError(f"{out} exists and is not a bundle; refusing to overwrite it")
    final, out = out, out.with_name(out.name + ".partial")  # a failed export leaves no half bundle
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    try:
        parity = _write(ckpt, encoder, head, out, h, w, fp16, trt, encoder_batch)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    out.rename(final)
    return final, parity


def _write(
    ckpt: dict, encoder, head, out: Path, h: int, w: int, fp16: bool, trt: bool, encoder_batch: int
) -> dict:
    cfg = ckpt["config"]
    d = cfg["data"]
    precision = "fp16" if fp16 else "fp32"
    export_encoder(encoder, d["mean"], d["std"], d["k"], h, w, out / ENCODER_FILE, fp16)
    if isinstance(head, GTADHead):
        names = export_gtad_head(head, encoder.out_dim, out / HEAD_FILE, fp16)
        if names != GTAD_OUTPUTS:
            raise LofiError(f"G-TAD head outputs {names} are not the bundle's {GTAD_OUTPUTS}")
        head_fields = _gtad_fields(head)
        head_shapes = _gtad_shapes(head, encoder.out_dim)
    else:
        export_head(head, encoder.out_dim, out / HEAD_FILE, fp16)
        head_fields = _pyramid_fields(cfg, head)
        head_shapes = _pyramid_shapes(head, encoder.out_dim, head_fields)
    parity = check_parity(out, encoder, head, d["mean"], d["std"], d["k"], h, w, precision)
    (out / "parity.json").write_text(json.dumps(parity, indent=1))
    engines = []
    files = [ENCODER_FILE, HEAD_FILE]
    if trt:
        from lofi.export.tensorrt_build import build_engine

        enc = build_engine(
            out / ENCODER_FILE,
            out / "encoder.plan",
            "frames",
            (
                (1, d["k"], h, w, 3),
                (encoder_batch, d["k"], h, w, 3),
                (4 * encoder_batch, d["k"], h, w, 3),
            ),
        )
        hd = build_engine(out / HEAD_FILE, out / "head.plan", "features", head_shapes)
        engines = [
            {"part": "encoder", "precision": precision, **enc},
            {"part": "head", "precision": precision, **hd},
        ]
        files += ["encoder.plan", "head.plan"]
    hop = float("nan") if isinstance(head, GTADHead) else float(d["hop"])
    manifest = Manifest(
        labels=list(ckpt["labels"]),
        grid=SnippetGrid(float(ckpt["fps"]), int(d["k"]), int(d["frame_stride"]), hop),
        height=h,
        width=w,
        mean=list(d["mean"]),
        std=list(d["std"]),
        feature_dim=encoder.out_dim,
        post=PostConfig.from_dict(cfg["postprocess"]),
        precision=precision,
        files={f: "" for f in files},
        engines=engines,
        **head_fields,
    )
    write_manifest(out, manifest)
    return parity


def _pyramid_fields(cfg: dict, head) -> dict:
    window = int(cfg["model"]["head_window"])
    top = max(head.strides)
    if window % top:
        raise LofiError(f"model.head_window must be a multiple of the largest stride {top}")
    return {
        "head_type": "pyramid",
        "strides": list(head.strides),
        "window": window,
        "context": head.context(),
        "max_reach": float(cfg["model"]["max_reach"]),
    }


def _pyramid_shapes(head, dim: int, fields: dict) -> tuple[tuple, tuple, tuple]:
    span = fields["window"] + 2 * fields["context"]
    return (1, dim, max(head.strides)), (1, dim, span), (1, dim, 64 * span)


def _gtad_fields(head: GTADHead) -> dict:
    return {"head_type": "gtad", "length": head.length, "max_duration": head.max_duration}


def _gtad_shapes(head: GTADHead, dim: int) -> tuple[tuple, tuple, tuple]:
    """The runtime feeds one video at a time; the batch axis stays dynamic up to 8."""
    return (1, dim, head.length), (1, dim, head.length), (8, dim, head.length)


def _input_size(ckpt: dict) -> tuple[int, int]:
    size = ckpt.get("input_size")
    if not size:
        raise LofiError("checkpoint has no input_size (not a lofi or head stage checkpoint)")
    return int(size[0]), int(size[1])
