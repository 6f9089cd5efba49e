"""ONNX Runtime against PyTorch on the same inputs; errors go to the bundle's parity.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lofi.runtime.backends import OrtBackend
from lofi.runtime.bundle import ENCODER_FILE, HEAD_FILE
from lofi.trainer.encoder import ExportableEncoder, SnippetEncoder
from lofi.trainer.head import ExportableHead, PyramidHead

TOLERANCE = {"fp32": 1e-4, "fp16": 5e-2}


@torch.no_grad()
def check_parity(
    folder: Path,
    encoder: SnippetEncoder,
    head: PyramidHead,
    mean: list[float],
    std: list[float],
    k: int,
    height: int,
    width: int,
    precision: str,
    seed: int = 0,
) -> dict:
    """Max abs error of encoder features (several batch sizes) and head outputs (several lengths)."""
    g = torch.Generator().manual_seed(seed)
    enc_t = ExportableEncoder(encoder, mean, std).eval()
    head_t = ExportableHead(head).eval()
    enc_o = OrtBackend(folder / ENCODER_FILE)
    head_o = OrtBackend(folder / HEAD_FILE)
    enc_err, head_err = 0.0, 0.0
    for n in (1, 3, 8):
        frames = torch.randint(0, 256, (n, k, height, width, 3), dtype=torch.uint8, generator=g)
        ref = enc_t(frames).numpy()
        got = enc_o(frames.numpy())[0]
        enc_err = max(enc_err, float(np.abs(ref - got).max()))
    top = max(head.strides)
    dim = enc_t.encoder.out_dim
    for length in (top, 5 * top, 16 * top):
        feats = torch.randn(1, dim, length, generator=g)
        ref = [t.numpy() for t in head_t(feats)]
        got = head_o(feats.numpy())
        head_err = max(head_err, max(float(np.abs(a - b).max()) for a, b in zip(ref, got)))
    tol = TOLERANCE[precision]
    return {
        "precision": precision,
        "tolerance": tol,
        "encoder_max_abs_err": enc_err,
        "head_max_abs_err": head_err,
        "ok": enc_err <= tol and head_err <= tol,
    }
