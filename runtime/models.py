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
# G-TAD: start (T,), end (T,), confidence (2, D, T), class_probs (K, T)
GTADArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


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
        self._order: list[int] | None = None
        if self.manifest.head_type == "gtad":  # outputs by name, as the manifest lists them
            names = list(getattr(self.head_net, "outputs", []))
            missing = [n for n in self.manifest.head_outputs if n not in names]
            if missing:
                raise LofiError(f"the bundle's head has no output {', '.join(missing)}")
            self._order = [names.index(n) for n in self.manifest.head_outputs]

    def encode(self, snippets: np.ndarray) -> np.ndarray:
        """(N, k, H, W, 3) uint8 -> (N, D) float32."""
        return np.asarray(self.encoder(snippets)[0], dtype=np.float32)

    def head(self, features: np.ndarray) -> LevelOutputs:
        """(L, D) features, L a multiple of the largest stride -> outputs per pyramid level."""
        if self.manifest.head_type != "pyramid":
            raise LofiError("this bundle's head is not a pyramid head")
        outs = self.head_net(np.ascontiguousarray(features.T[None], dtype=np.float32))
        return [(outs[2 * i][0], outs[2 * i + 1][0]) for i in range(len(self.manifest.strides))]

    def gtad_head(self, features: np.ndarray) -> GTADArrays:
        """(T, D) features of the video's `length` resize-grid snippets -> the G-TAD head's four
        outputs without the batch axis, in the manifest's order."""
        m = self.manifest
        if m.head_type != "gtad" or self._order is None:
            raise LofiError("this bundle's head is not a G-TAD head")
        if features.shape != (m.length, m.feature_dim):
            raise LofiError(
                f"the G-TAD head takes ({m.length}, {m.feature_dim}) features, "
                f"not {tuple(features.shape)}"
            )
        outs = self.head_net(np.ascontiguousarray(features.T[None], dtype=np.float32))
        start, end, conf, probs = (np.asarray(outs[i][0], dtype=np.float32) for i in self._order)
        return start, end, conf, probs

    def padded_length(self, n: int) -> int:
        s = self.manifest.max_stride
        return max(s, math.ceil(n / s) * s)
