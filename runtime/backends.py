"""Inference backends behind one call: ONNX Runtime (CPU or CUDA) and TensorRT engines."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
from lofi.runtime.errors import LofiError


class Backend(Protocol):
    def __call__(self, x: np.ndarray) -> list[np.ndarray]: ...


class OrtBackend:
    """One ONNX model with one input; outputs in the model's declared order."""

    def __init__(self, path: Path, device: str = "cpu", threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise LofiError(
                "onnxruntime is not installed: pip install 'lofi-tal[cpu]' "
                "(or [gpu] for onnxruntime-gpu)"
            ) from None
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise LofiError("--device cuda needs onnxruntime-gpu with a CUDA GPU")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own non-exported exception types
            raise LofiError(f"cannot load {path}: {str(exc).splitlines()[0]}") from None
        self.input = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.outputs, {self.input: x})


def _cudart():
    """cuda-python's runtime module (cuda.bindings.runtime since 12.6, cuda.cudart before)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime
    return runtime


class TrtBackend:
    """A serialized TensorRT engine (TensorRT 10/11 tensor API) run with cuda-python."""

    def __init__(self, plan: Path) -> None:
        try:
            import tensorrt as trt

            cudart = _cudart()
        except ImportError:
            raise LofiError(
                "--device trt needs tensorrt and cuda-python: pip install 'lofi-tal[gpu]'"
            ) from None
        self.trt, self.cudart = trt, cudart
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(
            plan.read_bytes()
        )
        if self.engine is None:
            raise LofiError(f"TensorRT could not load {plan} (built for another GPU or version?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = [self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names]
        self.input = next(n for n, inp in zip(names, is_input) if inp)
        self.outputs = [n for n, inp in zip(names, is_input) if not inp]
        self.stream = self._check(cudart.cudaStreamCreate())
        self.buffers: dict[str, tuple[int, int]] = {}

    def _check(self, result: tuple):
        err, *rest = result
        if int(err) != 0:
            raise LofiError(f"CUDA error {err}")
        return rest[0] if rest else None

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self._check(self.cudart.cudaFree(ptr))
            ptr, size = self._check(self.cudart.cudaMalloc(nbytes)), nbytes
            self.buffers[name] = (ptr, size)
        self.context.set_tensor_address(name, ptr)
        return ptr

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        cudart, kind = self.cudart, self.cudart.cudaMemcpyKind
        x = np.ascontiguousarray(x, dtype=self.trt.nptype(self.engine.get_tensor_dtype(self.input)))
        self.context.set_input_shape(self.input, x.shape)
        ptr = self._buffer(self.input, x.nbytes)
        self._check(
            cudart.cudaMemcpyAsync(
                ptr, x.ctypes.data, x.nbytes, kind.cudaMemcpyHostToDevice, self.stream
            )
        )
        outs = []
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            out = np.empty(shape, dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))
            self._buffer(name, max(out.nbytes, 1))
            outs.append(out)
        if not self.context.execute_async_v3(int(self.stream)):
            raise LofiError("TensorRT execution failed")
        for name, out in zip(self.outputs, outs):
            self._check(
                cudart.cudaMemcpyAsync(
                    out.ctypes.data,
                    self.buffers[name][0],
                    out.nbytes,
                    kind.cudaMemcpyDeviceToHost,
                    self.stream,
                )
            )
        self._check(cudart.cudaStreamSynchronize(self.stream))
        return [o.astype(np.float32, copy=False) for o in outs]


def gpu_compute_capability() -> str | None:
    """'major.minor' of GPU 0 via cuda-python, or None without one."""
    try:
        cudart = _cudart()
    except ImportError:
        return None
    err, props = cudart.cudaGetDeviceProperties(0)
    return None if int(err) != 0 else f"{props.major}.{props.minor}"
