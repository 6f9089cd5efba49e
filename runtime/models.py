"""A loaded bundle: encoder and head behind a backend, with the windowing the head needs."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from lofi.runtime.backends import (
    Backend,
    OrtBackend,
    TrtBackend,
    gpu_compute_capability,
    tensorrt_version,
)
from lofi.runtime.bundle import (
    ENCODER_FILE,
    HEAD_FILE,
    Manifest,
    engine_problem,
    load_manifest,
    manifest_digest_of,
)
from lofi.runtime.errors import LofiError
from lofi.runtime.postprocess import LevelOutputs

# cpu / cuda: ONNX Runtime (CUDA with I/O binding); ort-trt: ONNX Runtime's TensorRT execution
# provider (engines cached per bundle); trt: the bundle's own TensorRT engines
DEVICES = ("cpu", "cuda", "ort-trt", "trt")

# G-TAD: start (T,), end (T,), confidence (2, D, T), class_probs (K, T)
GTADArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _engine_for(folder: Path, manifest: Manifest, part: str) -> Path:
    for e in manifest.engines:
        if e.get("part") == part:
            problem = engine_problem(e, tensorrt_version(), gpu_compute_capability())
            if problem:
                raise LofiError(f"{e['file']} cannot load here: {problem}: rebuild with --trt")
            return folder / e["file"]
    raise LofiError(f"bundle has no TensorRT engine for the {part}: export it with --trt")


def ort_trt_cache(folder: Path) -> Path:
    """Where ONNX Runtime's TensorRT provider keeps the engines it builds for this bundle (one
    folder per manifest digest, so a re-exported bundle never meets a stale engine)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "lofi-tal" / "ort-trt" / manifest_digest_of(folder)[:16]


class BundleModels:
    def __init__(
        self, bundle: str | Path, device: str = "cpu", threads: int = 0, spin: bool = False
    ) -> None:
        if device not in DEVICES:
            raise LofiError(f"device must be one of {', '.join(DEVICES)}")
        self.folder, self.manifest = load_manifest(bundle)
        self.device = device
        if device == "trt":
            self.encoder: Backend = TrtBackend(_engine_for(self.folder, self.manifest, "encoder"))
            self.head_net: Backend = TrtBackend(_engine_for(self.folder, self.manifest, "head"))
        else:
            cache = ort_trt_cache(self.folder) if device == "ort-trt" else None
            self.encoder = OrtBackend(self.folder / ENCODER_FILE, device, threads, cache, spin)
            self.head_net = OrtBackend(self.folder / HEAD_FILE, device, threads, cache, spin)
        # outputs by name, as the manifest lists them, whatever order a backend reports
        if "features" not in self.encoder.outputs:
            raise LofiError("the bundle's encoder has no output 'features'")
        self._features = self.encoder.outputs.index("features")
        names = list(self.head_net.outputs)
        missing = [n for n in self.manifest.head_outputs if n not in names]
        if missing:
            raise LofiError(f"the bundle's head has no output {', '.join(missing)}")
        self._order = [names.index(n) for n in self.manifest.head_outputs]
        self._max_batch = int(getattr(self.encoder, "max_batch", 0))
        # ONNX Runtime sessions take concurrent runs; a TensorRT context holds one call's buffers
        self.concurrent = device != "trt"

    def encode(self, snippets: np.ndarray) -> np.ndarray:
        """(N, k, H, W, 3) uint8 -> (N, D) float32, in chunks an engine's profile accepts."""
        step = self._max_batch or max(len(snippets), 1)
        parts = [
            np.asarray(self.encoder(snippets[i : i + step])[self._features], dtype=np.float32)
            for i in range(0, len(snippets), step)
        ]
        return np.concatenate(parts) if len(parts) != 1 else parts[0]

    def head(self, features: np.ndarray) -> LevelOutputs:
        """(L, D) features, L a multiple of the largest stride -> outputs per pyramid level."""
        if self.manifest.head_type != "pyramid":
            raise LofiError("this bundle's head is not a pyramid head")
        raw = self.head_net(np.ascontiguousarray(features.T[None], dtype=np.float32))
        outs = [raw[i] for i in self._order]
        return [(outs[2 * i][0], outs[2 * i + 1][0]) for i in range(len(self.manifest.strides))]

    def gtad_head(self, features: np.ndarray) -> GTADArrays:
        """(T, D) features of the video's `length` resize-grid snippets -> the G-TAD head's four
        outputs without the batch axis, in the manifest's order."""
        m = self.manifest
        if m.head_type != "gtad":
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
