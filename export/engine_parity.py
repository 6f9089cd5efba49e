"""Each TensorRT engine against ONNX Runtime on the same inputs, at its profile's min, opt and
max shapes; errors go to parity.json beside the ONNX parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lofi.export.parity import max_abs_err
from lofi.runtime.backends import OrtBackend, TrtBackend

# GPU kernels sum in other orders than the CPU's (TF32 is off for fp32 engines)
ENGINE_TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2}


def _input(shape: list[int], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    if dtype == np.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.standard_normal(shape).astype(dtype)


def engine_parity(folder: Path, engine: dict, onnx_file: str, seed: int = 0) -> dict:
    """Max abs error per output (by name) of one engine against its ONNX model."""
    rng = np.random.default_rng(seed)
    trt_b = TrtBackend(folder / engine["file"])
    ort_b = OrtBackend(folder / onnx_file)
    try:
        dtype = np.dtype(np.uint8) if engine["part"] == "encoder" else np.dtype(np.float32)
        errors = {name: 0.0 for name in ort_b.outputs}
        for shape in engine["profile"].values():
            x = _input(shape, dtype, rng)
            ref = dict(zip(ort_b.outputs, ort_b(x)))
            got = dict(zip(trt_b.outputs, trt_b(x)))
            for name in errors:
                errors[name] = max(errors[name], max_abs_err(ref[name], got[name]))
    finally:
        trt_b.close()
    tol = ENGINE_TOLERANCE[engine["precision"]]
    worst = max(errors.values())
    return {
        "max_abs_err": worst,
        "outputs_max_abs_err": errors,
        "tolerance": tol,
        "ok": worst <= tol,
    }
