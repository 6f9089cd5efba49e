"""A loaded bundle: encoder and head behind a backend, with the windowing the head needs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from lofi.runtime.backends import Backend, OrtBackend, TrtBackend, gpu_compute_capability
from lofi.runtime.bundle import ENCODER_FILE, HEAD_FILE, Manifest, load_manifest
from lofi.runtime.errors import LofiError

DEVICES = ("cpu", "cuda", "trt")

# per level: (cls logits (C, n), regression (2, n))
LevelOutputs = list[tuple[np.ndarray, np.ndarray]]


def _engine_for(folder: Path, manifest: Manifest, part: str) -> Path:
    cc = gpu_compute_capability()
    for e in manifest.engines:
        if e.get("part") == part:
            if cc is not None and e.get("compute_capability") != cc:
                raise LofiError(
                    f"{e['file']} was built for compute capability "
                    f"{e.get('compute_capability')}, this GPU is {cc}: rebuild with lofi-export --trt"
                )
            return folder / e["file"]
    raise LofiError(f"bundle has no TensorRT engine for the {part}: export it with --trt")


class BundleModels:
    def __init__(self, bundle: str | Path, device: str = "cpu", threads: int = 0) -> None:
        if device not in DEVICES:
            raise LofiError(f"device must be one of {', '.join(DEVICES)}")
        self.folder, self.manifest = load_manifest(bundle)
        if device == "trt":
            self.encoder: Backend = TrtBackend(_engine_for(self.folder, self.manifest, "encoder"))
            self.head_net: Backend = TrtBackend(_engine_for(self.folder, self.manifest, "head"))
        else:
            self.encoder = OrtBackend(self.folder / ENCODER_FILE, device, threads)
            self.head_net = OrtBackend(self.folder / HEAD_FILE, device, threads)

    def encode(self, snippets: np.ndarray) -> np.ndarray:
        """(N, k, H, W, 3) uint8 -> (N, D) float32."""
        return np.asarray(self.encoder(snippets)[0], dtype=np.float32)

    def head(self, features: np.ndarray) -> LevelOutputs:
        """(L, D) features, L a multiple of the largest stride -> outputs per pyramid level."""
        outs = self.head_net(np.ascontiguousarray(features.T[None], dtype=np.float32))
        return [(outs[2 * i][0], outs[2 * i + 1][0]) for i in range(len(self.manifest.strides))]

    def padded_length(self, n: int) -> int:
        s = self.manifest.max_stride
        return max(s, math.ceil(n / s) * s)
