"""A loaded bundle: encoder and head behind a backend, with the windowing the head needs."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from lofi.runtime.backends import (
    Backend,
    OrtBackend,
    TensorSpec,
    TrtBackend,
    gpu_compute_capability,
    tensorrt_version,
)
from lofi.runtime.bundle import (
    ENCODER_FILE,
    HEAD_FILE,
    Manifest,
    engine_problem,
    graph_files,
    load_manifest,
    manifest_digest_of,
    read_verified,
)
from lofi.runtime.errors import LofiError
from lofi.runtime.postprocess import LevelOutputs

# cpu / cuda: ONNX Runtime (CUDA with I/O binding); ort-trt: ONNX Runtime's TensorRT execution
# provider (engines cached per bundle); trt: the bundle's own TensorRT engines
DEVICES = ("cpu", "cuda", "ort-trt", "trt")

# G-TAD: start (T,), end (T,), confidence (2, D, T), class_probs (K, T)
GTADArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


# a graph dimension the runtime varies call by call (must be left dynamic), and the batch
# dimension of a head the runtime calls with one sequence (1 or dynamic)
DYNAMIC, BATCH = "dynamic", "batch"


def _engine_for(folder: Path, manifest: Manifest, part: str) -> TrtBackend:
    for e in manifest.engines:
        if e.get("part") == part:
            problem = engine_problem(e, tensorrt_version(), gpu_compute_capability())
            if problem:
                raise LofiError(f"{e['file']} cannot load here: {problem}: rebuild with --trt")
            return TrtBackend(read_verified(folder, manifest, e["file"]), e["file"])
    raise LofiError(f"bundle has no TensorRT engine for the {part}: export it with --trt")


def expected_specs(m: Manifest) -> dict[str, tuple[TensorSpec, list[TensorSpec]]]:
    """What each graph must declare for the manifest to describe it: its one input and its
    outputs, by name, dtype and shape (`DYNAMIC` / `BATCH` where the runtime varies a size)."""
    k, classes, dim = m.grid.k, len(m.labels), m.feature_dim
    encoder = (
        TensorSpec("frames", "uint8", (DYNAMIC, k, m.height, m.width, 3)),
        [TensorSpec("features", "float32", (DYNAMIC, dim))],
    )
    if m.head_type == "gtad":
        t, d = m.length, m.max_duration
        shapes = {
            "start": (BATCH, t),
            "end": (BATCH, t),
            "confidence": (BATCH, 2, d, t),
            "class_probs": (BATCH, classes, t),
        }
        head_in: tuple[int | str, ...] = (BATCH, dim, t)
    else:
        shapes = {
            name: (BATCH, classes if name.startswith("cls") else 2, DYNAMIC)
            for name in m.head_outputs
        }
        head_in = (BATCH, dim, DYNAMIC)
    head = (
        TensorSpec("features", "float32", head_in),
        [TensorSpec(n, "float32", shapes[n]) for n in m.head_outputs],
    )
    return {ENCODER_FILE: encoder, HEAD_FILE: head}


def _shape(dims: tuple) -> str:
    names = {None: "?", DYNAMIC: "?", BATCH: "1"}
    return "(" + ", ".join(str(names.get(d, d)) for d in dims) + ")"


def _fits(got: tuple, want: tuple) -> bool:
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        if w == DYNAMIC and g is not None:
            return False
        if w == BATCH and g not in (None, 1):
            return False
        if isinstance(w, int) and g != w:
            return False
    return True


def spec_problem(graph: str, role: str, got: TensorSpec, want: TensorSpec, labels: int) -> str:
    """Why a declared input/output does not match the manifest ("" if it does)."""
    if got.dtype == want.dtype and _fits(got.shape, want.shape):
        return ""
    classes = want.name.startswith("cls") or want.name == "class_probs"
    note = f" ({labels} labels)" if classes else ""
    return (
        f"{graph}: {role} {got.name} is {got.dtype} {_shape(got.shape)}, the manifest needs "
        f"{want.dtype} {_shape(want.shape)}{note} (?: dynamic)"
    )


def check_graphs(m: Manifest, backends: dict[str, Backend]) -> None:
    """The manifest and the graphs agree, or one line at load (not an ONNX Runtime error or an
    IndexError once streaming has begun): input name, dtype and shape; the outputs, exactly;
    the class count against the labels."""
    for graph, (want_in, want_out) in expected_specs(m).items():
        b = backends[graph]
        if b.input_spec.name != want_in.name:
            raise LofiError(
                f"{graph}: input {b.input_spec.name!r}, the manifest needs {want_in.name!r}"
            )
        problem = spec_problem(graph, "input", b.input_spec, want_in, len(m.labels))
        got = {s.name: s for s in b.output_specs}
        wanted = {s.name: s for s in want_out}
        missing = [n for n in wanted if n not in got]
        extra = [n for n in got if n not in wanted]
        if not problem and (missing or extra):
            problem = f"{graph}: outputs {', '.join(got)}, the manifest needs {', '.join(wanted)}"
        for name in wanted:
            problem = problem or spec_problem(
                graph, "output", got[name], wanted[name], len(m.labels)
            )
        if problem:
            raise LofiError(problem)


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
            self.encoder: Backend = _engine_for(self.folder, self.manifest, "encoder")
            self.head_net: Backend = _engine_for(self.folder, self.manifest, "head")
        else:
            cache = ort_trt_cache(self.folder) if device == "ort-trt" else None
            loaded = []
            for graph in (ENCODER_FILE, HEAD_FILE):
                data, external = graph_files(self.folder, self.manifest, graph)
                loaded.append(OrtBackend(data, device, threads, cache, spin, graph, external))
            self.encoder, self.head_net = loaded
        check_graphs(self.manifest, {ENCODER_FILE: self.encoder, HEAD_FILE: self.head_net})
        # outputs by name, as the manifest lists them, whatever order a backend reports
        self._features = self.encoder.outputs.index("features")
        names = list(self.head_net.outputs)
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
