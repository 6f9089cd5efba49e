"""Inference backends behind one call: ONNX Runtime (CPU, CUDA with I/O binding, or its
TensorRT execution provider) and serialized TensorRT engines run with cuda-python."""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from lofi.runtime.errors import LofiError, shown


@dataclass(frozen=True)
class TensorSpec:
    """A graph's input or output as the backend declares it: numpy dtype name and shape, None
    for a dimension left dynamic (an expected spec may name a rule instead of a size)."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]


class Backend(Protocol):
    outputs: list[str]
    input_spec: TensorSpec
    output_specs: list[TensorSpec]

    def __call__(self, x: np.ndarray) -> list[np.ndarray]: ...


# ONNX Runtime's type strings -> numpy dtype names
_ORT_DTYPES = {"float": "float32", "double": "float64"}


def _ort_spec(arg: Any) -> TensorSpec:
    kind = str(arg.type).removeprefix("tensor(").removesuffix(")")
    shape = tuple(d if isinstance(d, int) else None for d in (arg.shape or []))
    return TensorSpec(arg.name, _ORT_DTYPES.get(kind, kind), shape)


@contextmanager
def native_output_captured() -> Iterator[list[str]]:
    """Point file descriptors 1 and 2 at a temporary file while a native library loads, then
    restore them; yields a list that receives what was written. stdout carries JSON event
    lines, and ONNX Runtime (or TensorRT) writes multi-line blocks to either stream when a
    provider cannot load: the caller turns them into one line of its own. Used only around
    loading a model, before any stream prints."""
    captured: list[str] = []
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = (os.dup(1), os.dup(2))
    printed = io.StringIO()  # Python-level prints, wherever sys.stdout points
    try:
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            try:
                with redirect_stdout(printed), redirect_stderr(printed):
                    yield captured
            finally:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                tmp.seek(0)
                native = tmp.read(1 << 20).decode("utf-8", "replace")
                captured.append(printed.getvalue() + native)
    finally:
        os.close(saved[0])
        os.close(saved[1])


def native_reason(text: str) -> str:
    """The line of a native library's log that says why it failed, shortened for one error
    line ("" if none): e.g. 'libnvinfer.so.10: cannot open shared object file'."""
    lines = text.splitlines()
    for marks in (("with error: ",), ("[E:", "] "), ("error", "fail")):
        for line in lines:
            if any(m in line.lower() or m in line for m in marks) and line.strip("* \t"):
                if "EP Error" in line and "*" in line:
                    continue  # the Python fallback's banner says nothing
                reason = line.rsplit("with error: ", 1)[-1].rsplit("] ", 1)[-1].strip()
                return shown(reason, 160).strip("'\"")
    return ""


# the install profile (pyproject extra) whose versions load each device together
EXTRAS = {"cpu": "cpu", "cuda": "gpu", "ort-trt": "ort-trt", "trt": "gpu"}
# the providers each ONNX Runtime device asks for, the first being the one it must really get
ORT_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def _provider_options(device: str, cache: Path | None) -> list[dict[str, Any]]:
    """The TensorRT EP builds engines itself: keep them (and its timing cache) in a folder so a
    restart does not rebuild; fp16 follows the ONNX graph's own types."""
    opts: list[dict[str, Any]] = [{} for _ in ORT_PROVIDERS[device]]
    if device == "ort-trt":
        if cache is None:
            raise LofiError("device ort-trt needs an engine cache folder")
        cache.mkdir(parents=True, exist_ok=True)
        opts[0] = {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
        }
    return opts


def _preload_gpu_libraries(ort: Any, device: str) -> None:
    """Best effort, before a GPU session: the CUDA and cuDNN libraries of the nvidia-* wheels
    the gpu/ort-trt extras install (onnxruntime >= 1.21's preload_dlls; the CUDA provider
    would not find them in site-packages by itself), and for ort-trt TensorRT's own libraries
    (importing the tensorrt package loads libnvinfer from its wheel). A library that is still
    missing makes the provider fail to load, which is then refused in one line."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        with contextlib.suppress(Exception):
            preload(directory="")
    if device == "ort-trt":
        with contextlib.suppress(Exception):
            import tensorrt  # noqa: F401


class OrtBackend:
    """One ONNX model with one input; outputs in the model's declared order, named in `outputs`.

    The model comes as a path (the exporter's own files) or as bytes already verified against a
    bundle's manifest, with its external-data files as bytes by location: ONNX Runtime then
    opens no file, so it runs exactly what was hashed.

    With a GPU device the session must really run on it: ONNX Runtime falls back to the CPU
    silently when a provider cannot load (missing CUDA libraries, no GPU), so its fallback is
    turned off, the providers the session got are checked, and a failure is one line (what
    ONNX Runtime writes to stdout or stderr meanwhile is captured: stdout carries JSON events).
    The CUDA provider binds the input and the outputs with I/O binding (one copy each way, no
    per-call allocation by the session)."""

    def __init__(
        self,
        model: Path | bytes,
        device: str = "cpu",
        threads: int = 0,
        cache: Path | None = None,
        spin: bool = False,
        name: str = "",
        external: dict[str, bytes] | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise LofiError(
                "onnxruntime is not installed: pip install 'lofi-tal[cpu]' "
                "(or [gpu] for onnxruntime-gpu)"
            ) from None
        if device not in ORT_PROVIDERS:
            raise LofiError(f"ONNX Runtime device must be one of {', '.join(ORT_PROVIDERS)}")
        label = name or (model.name if isinstance(model, Path) else "model")
        wanted = ORT_PROVIDERS[device]
        if wanted[0] not in ort.get_available_providers():
            raise LofiError(
                f"device {device} needs onnxruntime-gpu with {wanted[0]} "
                f"(this onnxruntime has {', '.join(ort.get_available_providers())}): "
                f"pip install 'lofi-tal[{EXTRAS[device]}]'"
            )
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        # spinning workers burn the cores decoding needs between calls: streaming on 2 cores ran
        # 1.4x slower with it; off for every device (GPU ones leave the CPU to decoding too)
        config = getattr(opts, "add_session_config_entry", None)
        if config:
            for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
                config(key, "1" if spin else "0")
        # kept for the session's life: ONNX Runtime may use these buffers in place
        self._external = [np.frombuffer(data, np.uint8) for data in (external or {}).values()]
        if external:
            if not hasattr(opts, "add_external_initializers_from_files_in_memory"):
                raise LofiError(f"{label} has external data: this needs onnxruntime >= 1.20")
            opts.add_external_initializers_from_files_in_memory(
                list(external), self._external, [len(b) for b in self._external]
            )
        source = str(model) if isinstance(model, Path) else model
        captured: list[str] = []
        try:
            with native_output_captured() as captured:
                if device != "cpu":
                    _preload_gpu_libraries(ort, device)
                self.session = ort.InferenceSession(
                    source,
                    opts,
                    providers=wanted,
                    provider_options=_provider_options(device, cache),
                    enable_fallback=0,
                )
        except Exception as exc:  # onnxruntime raises its own non-exported exception types
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LofiError(
                f"cannot load {label} on device {device}: {shown(reason, 200)}"
            ) from None
        got = self.session.get_providers()
        if not got or got[0] != wanted[0]:
            why = native_reason("".join(captured))
            runs_on = "the CPU" if got[:1] == ["CPUExecutionProvider"] else ", ".join(got[:1])
            raise LofiError(
                f"{label}: ONNX Runtime gave providers {', '.join(got)} instead of "
                f"{wanted[0]} (would run on {runs_on}): check the CUDA/TensorRT libraries"
                + (f" ({why})" if why else "")
                + f"; the {device} device loads with pip install 'lofi-tal[{EXTRAS[device]}]'"
            )
        if "".join(captured).strip():  # warnings of a session that loaded: stderr, not stdout
            sys.stderr.write("".join(captured))
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise LofiError(f"{label} has {len(inputs)} inputs; a bundle graph has one")
        self.device = device
        self.input_spec = _ort_spec(inputs[0])
        self.output_specs = [_ort_spec(o) for o in self.session.get_outputs()]
        self.input = self.input_spec.name
        self.outputs = [o.name for o in self.output_specs]

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        if self.device != "cuda":
            return self.session.run(self.outputs, {self.input: x})
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input, np.ascontiguousarray(x))
        for name in self.outputs:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()


def _cudart():
    """cuda-python's runtime module (cuda.bindings.runtime since 12.6, cuda.cudart before)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        from cuda import cudart as runtime
    return runtime


def _check(result: tuple, call: str) -> Any:
    """cuda-python returns (error, *values): raise on an error, return the value (if any)."""
    err, *rest = result
    if int(err) != 0:
        raise LofiError(f"CUDA error in {call}: {err}")
    return rest[0] if rest else None


class _Buffers:
    """Device and pinned host buffers per tensor name, grown on demand and freed on close."""

    def __init__(self, cudart: Any) -> None:
        self.cudart = cudart
        self.device: dict[str, tuple[int, int]] = {}
        self.host: dict[str, tuple[int, int]] = {}

    def device_ptr(self, name: str, nbytes: int) -> int:
        ptr, size = self.device.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self.cudart.cudaFree(ptr), "cudaFree")
                del self.device[name]
            ptr = int(_check(self.cudart.cudaMalloc(nbytes), "cudaMalloc"))
            self.device[name] = (ptr, nbytes)
        return ptr

    def host_array(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A numpy view of page-locked memory: copies to and from it can run asynchronously."""
        nbytes = max(int(np.prod(shape)) * dtype.itemsize, 1)
        ptr, size = self.host.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self.cudart.cudaFreeHost(ptr), "cudaFreeHost")
                del self.host[name]
            ptr = int(_check(self.cudart.cudaMallocHost(nbytes), "cudaMallocHost"))
            self.host[name] = (ptr, nbytes)
        raw = (ctypes.c_uint8 * nbytes).from_address(ptr)
        count = int(np.prod(shape))
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def free(self) -> None:
        for ptr, _ in self.device.values():
            self.cudart.cudaFree(ptr)
        for ptr, _ in self.host.values():
            self.cudart.cudaFreeHost(ptr)
        self.device.clear()
        self.host.clear()


class TrtBackend:
    """A serialized TensorRT engine (TensorRT 10.x/11.x name-based tensor API): one input with
    one optimisation profile, outputs by name; inputs outside the profile are refused in one
    line; page-locked host buffers for the copies; buffers and stream freed by `close`."""

    def __init__(self, plan: Path | bytes, name: str = "") -> None:
        try:
            import tensorrt as trt

            cudart = _cudart()
        except ImportError:
            raise LofiError(
                "device trt needs tensorrt and cuda-python: pip install 'lofi-tal[gpu]' "
                "(TensorRT 11) or 'lofi-tal[ort-trt]' (TensorRT 10)"
            ) from None
        self.trt, self.cudart = trt, cudart
        self.plan = name or (plan.name if isinstance(plan, Path) else "engine")
        data = plan.read_bytes() if isinstance(plan, Path) else plan
        with native_output_captured() as captured:
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            why = native_reason("".join(captured))
            raise LofiError(
                f"TensorRT could not load {self.plan} (built for another GPU or version?)"
                + (f": {why}" if why else "")
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise LofiError(f"{self.plan} has {len(inputs)} inputs; a bundle engine has one")
        self.input = inputs[0]
        self.outputs = [n for n in names if n != self.input]
        self.input_spec = self._spec(self.input)
        self.output_specs = [self._spec(n) for n in self.outputs]
        lo, _, hi = self.engine.get_tensor_profile_shape(self.input, 0)
        self.profile = (tuple(lo), tuple(hi))
        self.buffers = _Buffers(cudart)
        self.stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")

    def _spec(self, name: str) -> TensorSpec:
        """The engine's declared shape (-1 for a dimension its profile leaves open)."""
        shape = tuple(int(d) for d in self.engine.get_tensor_shape(name))
        dims = tuple(None if d < 0 else d for d in shape)
        return TensorSpec(name, self._dtype(name).name, dims)

    @property
    def max_batch(self) -> int:
        return int(self.profile[1][0])

    def _dtype(self, name: str) -> np.dtype:
        return np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))

    def _set_shape(self, shape: tuple[int, ...]) -> None:
        lo, hi = self.profile
        if len(shape) != len(lo) or any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
            raise LofiError(
                f"{self.plan}: input {self.input} shape {shape} is outside the engine's profile "
                f"{lo}..{hi}: rebuild with lofi-export --trt --trt-shapes"
            )
        if not self.context.set_input_shape(self.input, shape):
            raise LofiError(f"{self.plan}: TensorRT refused input shape {shape}")

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        cudart, kind = self.cudart, self.cudart.cudaMemcpyKind
        x = np.asarray(x)
        self._set_shape(tuple(int(s) for s in x.shape))
        host_in = self.buffers.host_array(self.input, x.shape, self._dtype(self.input))
        host_in[...] = x
        ptr = self.buffers.device_ptr(self.input, max(host_in.nbytes, 1))
        self.context.set_tensor_address(self.input, ptr)
        h2d, d2h = kind.cudaMemcpyHostToDevice, kind.cudaMemcpyDeviceToHost
        _check(
            cudart.cudaMemcpyAsync(ptr, host_in.ctypes.data, host_in.nbytes, h2d, self.stream),
            "cudaMemcpyAsync",
        )
        hosts = []
        for name in self.outputs:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise LofiError(f"{self.plan}: output {name} has unresolved shape {shape}")
            host = self.buffers.host_array(name, shape, self._dtype(name))
            out_ptr = self.buffers.device_ptr(name, max(host.nbytes, 1))
            self.context.set_tensor_address(name, out_ptr)
            hosts.append((host, out_ptr))
        if not self.context.execute_async_v3(int(self.stream)):
            raise LofiError(f"{self.plan}: TensorRT execution failed")
        for host, out_ptr in hosts:
            _check(
                cudart.cudaMemcpyAsync(host.ctypes.data, out_ptr, host.nbytes, d2h, self.stream),
                "cudaMemcpyAsync",
            )
        _check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return [np.array(host, dtype=np.float32) for host, _ in hosts]  # copies out of pinned

    def close(self) -> None:
        """Free device and pinned buffers and the stream (idempotent)."""
        if getattr(self, "stream", None) is not None:
            self.buffers.free()
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None

    def __del__(self) -> None:
        self.close()


def tensorrt_version() -> str | None:
    """This machine's TensorRT version, or None without the tensorrt package."""
    try:
        import tensorrt as trt
    except ImportError:
        return None
    return str(trt.__version__)


def gpu_compute_capability() -> str | None:
    """'major.minor' of GPU 0 via cuda-python, or None without one."""
    try:
        cudart = _cudart()
    except ImportError:
        return None
    err, props = cudart.cudaGetDeviceProperties(0)
    return None if int(err) != 0 else f"{props.major}.{props.minor}"
