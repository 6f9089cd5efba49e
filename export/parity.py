"""ONNX Runtime against PyTorch on the same inputs; errors go to the bundle's parity.json."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from lofi.runtime.backends import OrtBackend
from lofi.runtime.bundle import ENCODER_FILE, HEAD_FILE
from lofi.runtime.errors import LofiError
from lofi.trainer.encoder import ExportableEncoder, SnippetEncoder
from lofi.trainer.gtad import ExportableGTAD, GTADHead
from lofi.trainer.head import ExportableHead, PyramidHead

TOLERANCE = {"fp32": 1e-4, "fp16": 5e-2}


def max_abs_err(ref: np.ndarray, got: np.ndarray) -> float:
    """Largest |ref - got|, infinite where either side is not finite: a NaN output must fail
    parity, and `max(0.0, nan)` (or numpy's comparisons) would quietly report 0."""
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    if ref.shape != got.shape:
        return math.inf
    diff = np.abs(ref - got)
    if not np.isfinite(diff).all():
        return math.inf
    return float(diff.max()) if diff.size else 0.0


def in_distribution(head: PyramidHead, noise: torch.Tensor) -> torch.Tensor:
    """Features at the scale the head was trained on: its frozen input standardisation undone
    on unit noise. Plain unit noise would be multiplied by up to 1/std of the weakest feature
    channel, and parity would then measure float error at activations no real input produces."""
    return head.in_mean[:, None] + noise / head.in_scale[:, None]


@torch.no_grad()
def check_parity(
    folder: Path,
    encoder: SnippetEncoder,
    head: PyramidHead | GTADHead,
    mean: list[float],
    std: list[float],
    k: int,
    height: int,
    width: int,
    precision: str,
    seed: int = 0,
) -> dict:
    """Max abs error of encoder features (several batch sizes) and of every head output (the
    pyramid head: several lengths; G-TAD: its fixed length T, several batch sizes)."""
    g = torch.Generator().manual_seed(seed)
    enc_t = ExportableEncoder(encoder, mean, std).eval()
    enc_o = OrtBackend(folder / ENCODER_FILE)
    head_o = OrtBackend(folder / HEAD_FILE)
    enc_err = 0.0
    for n in (1, 3, 8):
        frames = torch.randint(0, 256, (n, k, height, width, 3), dtype=torch.uint8, generator=g)
        ref = enc_t(frames).numpy()
        got = enc_o(frames.numpy())[0]
        enc_err = max(enc_err, max_abs_err(ref, got))
    dim = enc_t.encoder.out_dim
    if isinstance(head, GTADHead):
        head_t: torch.nn.Module = ExportableGTAD(head).eval()
        inputs = [torch.randn(n, dim, head.length, generator=g) for n in (1, 3)]
    else:
        head_t = ExportableHead(head).eval()
        top = max(head.strides)
        inputs = [
            in_distribution(head, torch.randn(1, dim, n * top, generator=g)) for n in (1, 5, 16)
        ]
    per_output = {name: 0.0 for name in head_o.outputs}
    for feats in inputs:
        ref = [t.numpy() for t in head_t(feats)]
        got = head_o(feats.numpy())
        if len(ref) != len(got):
            raise LofiError(f"head.onnx has {len(got)} outputs, PyTorch's head {len(ref)}")
        for name, a, b in zip(head_o.outputs, ref, got):
            if a.shape != b.shape:
                raise LofiError(f"head.onnx output {name} has shape {b.shape}, not {a.shape}")
            per_output[name] = max(per_output[name], max_abs_err(a, b))
    head_err = max(per_output.values())
    tol = TOLERANCE[precision]
    return {
        "precision": precision,
        "tolerance": tol,
        "encoder_max_abs_err": enc_err,
        "head_max_abs_err": head_err,
        "head_outputs_max_abs_err": per_output,
        "ok": enc_err <= tol and head_err <= tol,
    }
