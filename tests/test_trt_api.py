"""Every `tensorrt` attribute the engine builder and the TensorRT backend use, checked against
the documented TensorRT 10.x and 11.x Python APIs, by running them (export with --trt, engine
parity, --check, lofi-stream's TensorRT device) against a fake `tensorrt` that has exactly the
documented attributes of one version, and a fake cuda-python runtime backed by host memory.

The lists below are the Python bindings' names, taken from NVIDIA/TensorRT's binding sources
(python/src/infer/pyCore.cpp, pyFoundationalTypes.cpp, pyGraph.cpp, python/src/parsers/pyOnnx.cpp
and the package's __init__.py for nptype/volume) on the release/10.0 and release/11.1
branches; ILogger's Severity values are exported onto Logger there. They agree with NVIDIA's
"Migrating from TensorRT 10.x to 11.x" Python reference (e.g. BuilderFlag.FP16 removed in 11).
The module-level lists leave out the I*Layer classes. Nothing here runs real TensorRT or CUDA.
"""

from __future__ import annotations

import ast
import base64
import ctypes
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from lofi.runtime.errors import LofiError

TRT_10_0 = {
    "tensorrt": "APILanguage ActivationType AllocatorFlag BoundingBoxFormat Builder BuilderFlag DataType DeviceType Dims Dims2 Dims3 Dims4 DimsHW ElementWiseOperation EngineCapability EngineInspector ErrorCode ErrorCodeTRT ExecutionContextAllocationStrategy FillOperation GatherMode HardwareCompatibilityLevel IBuilderConfig ICudaEngine IDebugListener IErrorRecorder IExecutionContext IGpuAllocator IGpuAsyncAllocator IHostMemory IIfConditional ILogger ILoop INetworkDefinition IOptimizationProfile IOutputAllocator IProfiler IProgressMonitor ISerializationConfig IStreamReader ITensor ITimingCache IVersionedInterface InterfaceInfo InterpolationMode LayerInformationFormat LayerType Logger LoopOutput MatrixOperation MemoryPoolType NetworkDefinitionCreationFlag OnnxParser OnnxParserFlag OnnxParserRefitter PaddingMode ParserError Permutation PoolingType PreviewFeature Profiler ProfilingVerbosity QuantizationFlag ReduceOperation Refitter ResizeCoordinateTransformation ResizeRoundMode ResizeSelector Runtime SampleMode ScaleMode ScatterMode SerializationFlag TacticSource TempfileControlFlag TensorFormat TensorIOMode TensorLocation TopKOperation TripLimit UnaryOperation Weights WeightsRole __version__ nptype volume",
    "Logger": "ERROR INFO INTERNAL_ERROR VERBOSE WARNING log min_severity",
    "Builder": "build_serialized_network create_builder_config create_network create_optimization_profile error_recorder get_plugin_registry gpu_allocator is_network_supported logger max_DLA_batch_size max_threads num_DLA_cores platform_has_fast_fp16 platform_has_fast_int8 platform_has_tf32 reset",
    "IBuilderConfig": "DLA_core add_optimization_profile algorithm_selector avg_timing_iterations builder_optimization_level can_run_on_DLA clear_flag clear_quantization_flag create_timing_cache default_device_type engine_capability flags get_calibration_profile get_device_type get_flag get_memory_pool_limit get_preview_feature get_quantization_flag get_tactic_sources get_timing_cache hardware_compatibility_level int8_calibrator is_device_type_set max_aux_streams num_optimization_profiles plugins_to_serialize profile_stream profiling_verbosity progress_monitor quantization_flags reset reset_device_type set_calibration_profile set_device_type set_flag set_memory_pool_limit set_preview_feature set_quantization_flag set_tactic_sources set_timing_cache",
    "OnnxParser": "clear_errors clear_flag flags get_error get_flag get_layer_output_tensor get_used_vc_plugin_libraries num_errors parse parse_from_file parse_with_weight_descriptors set_flag supports_model supports_operator",
    "IOptimizationProfile": "extra_memory_target get_shape get_shape_input set_shape set_shape_input",
    "ITimingCache": "combine reset serialize",
    "Runtime": "DLA_core deserialize_cuda_engine engine_host_code_allowed error_recorder get_plugin_registry gpu_allocator load_runtime logger max_threads num_DLA_cores tempfile_control_flags temporary_directory",
    "ICudaEngine": "create_engine_inspector create_execution_context create_execution_context_without_device_memory create_serialization_config device_memory_size engine_capability error_recorder get_device_memory_size_for_profile get_tensor_bytes_per_component get_tensor_components_per_element get_tensor_dtype get_tensor_format get_tensor_format_desc get_tensor_location get_tensor_mode get_tensor_name get_tensor_profile_shape get_tensor_profile_values get_tensor_shape get_tensor_vectorized_dim hardware_compatibility_level has_implicit_batch_dimension is_debug_tensor is_shape_inference_io minimum_weight_streaming_budget name num_aux_streams num_io_tensors num_layers num_optimization_profiles profiling_verbosity refittable serialize serialize_with_config streamable_weights_size tactic_sources weight_streaming_budget",
    "IExecutionContext": "active_optimization_profile all_binding_shapes_specified all_shape_inputs_specified debug_sync device_memory engine enqueue_emits_profile error_recorder execute_async_v3 execute_v2 get_debug_listener get_debug_state get_input_consumed_event get_max_output_size get_output_allocator get_tensor_address get_tensor_shape get_tensor_strides infer_shapes name nvtx_verbosity persistent_cache_limit profiler report_to_profiler set_all_tensors_debug_state set_aux_streams set_debug_listener set_input_consumed_event set_input_shape set_optimization_profile_async set_output_allocator set_tensor_address set_tensor_debug_state temporary_allocator update_device_memory_size_for_shapes",
    "NetworkDefinitionCreationFlag": "EXPLICIT_BATCH STRONGLY_TYPED",
    "BuilderFlag": "BF16 DEBUG DIRECT_IO DISABLE_COMPILATION_CACHE DISABLE_TIMING_CACHE ERROR_ON_TIMING_CACHE_MISS EXCLUDE_LEAN_RUNTIME FP16 FP8 GPU_FALLBACK INT8 OBEY_PRECISION_CONSTRAINTS PREFER_PRECISION_CONSTRAINTS REFIT REFIT_IDENTICAL REJECT_EMPTY_ALGORITHMS SAFETY_SCOPE SPARSE_WEIGHTS STRIP_PLAN TF32 VERSION_COMPATIBLE WEIGHTLESS WEIGHT_STREAMING",
    "MemoryPoolType": "DLA_GLOBAL_DRAM DLA_LOCAL_DRAM DLA_MANAGED_SRAM TACTIC_DRAM TACTIC_SHARED_MEMORY WORKSPACE",
    "TensorIOMode": "INPUT NONE OUTPUT",
    "DataType": "BF16 BOOL FLOAT FP8 HALF INT32 INT4 INT64 INT8 UINT8",
}
TRT_11_1 = {
    "tensorrt": "APILanguage ActivationType AllocatorFlag AttentionIOForm AttentionNormalizationOp BoundingBoxFormat Builder BuilderFlag CausalMaskKind CollectiveOperation CumulativeOperation DataType DeviceType Dims Dims2 Dims3 Dims4 DimsHW ElementWiseOperation EngineCapability EngineInspector EngineStat ErrorCode ErrorCodeTRT ExecutionContextAllocationStrategy FillOperation GatherMode HardwareCompatibilityLevel IAttention IBuilderConfig ICudaEngine IDebugListener IErrorRecorder IExecutionContext IGpuAllocator IGpuAsyncAllocator IHostMemory IIfConditional ILogger ILoop INetworkDefinition IOptimizationProfile IOutputAllocator IProfiler IProgressMonitor IRuntimeConfig ISerializationConfig IStreamReaderV2 IStreamWriter ITensor ITimingCache IVersionedInterface InterfaceInfo InterpolationMode KVCacheMode LayerInformationFormat LayerType Logger LoopOutput MatrixOperation MemoryPoolType MoEActType NetworkDefinitionCreationFlag OnnxParser OnnxParserFlag OnnxParserRefitter PaddingMode ParserError Permutation PoolingType PreviewFeature Profiler ProfilingVerbosity ReduceOperation Refitter ResizeCoordinateTransformation ResizeRoundMode ResizeSelector Runtime RuntimePlatform SampleMode ScaleMode ScatterMode SeekPosition SerializationFlag TacticSource TempfileControlFlag TensorFormat TensorIOMode TensorLocation TilingOptimizationLevel TimingCacheKey TimingCacheValue TopKOperation TripLimit UnaryOperation Weights WeightsRole __version__ nptype volume",
    "Logger": "ERROR INFO INTERNAL_ERROR VERBOSE WARNING log min_severity",
    "Builder": "build_engine_with_config build_serialized_network build_serialized_network_to_stream create_builder_config create_network create_optimization_profile error_recorder get_plugin_registry gpu_allocator is_network_supported logger max_DLA_batch_size max_threads num_DLA_cores reset",
    "IBuilderConfig": "DLA_core add_optimization_profile all_build_routes avg_timing_iterations build_route builder_optimization_level can_run_on_DLA clear_flag create_timing_cache default_device_type engine_capability flags get_device_type get_flag get_memory_pool_limit get_preview_feature get_tactic_sources get_timing_cache hardware_compatibility_level is_device_type_set l2_limit_for_tiling max_aux_streams max_num_tactics num_optimization_profiles plugins_to_serialize profile_stream profiling_verbosity progress_monitor remote_auto_tuning_config reset reset_device_type runtime_platform set_device_type set_flag set_memory_pool_limit set_preview_feature set_tactic_sources set_timing_cache tiling_optimization_level",
    "OnnxParser": "clear_errors clear_flag flags get_error get_flag get_layer_output_tensor get_subgraph_nodes get_used_vc_plugin_libraries is_subgraph_supported load_initializer load_model_proto num_errors num_subgraphs parse parse_from_file parse_model_proto set_builder_config set_flag supports_model_v2 supports_operator",
    "IOptimizationProfile": "extra_memory_target get_shape get_shape_input set_shape set_shape_input",
    "ITimingCache": "combine query queryKeys reset serialize update",
    "Runtime": "DLA_core deserialize_cuda_engine engine_host_code_allowed error_recorder get_plugin_registry gpu_allocator load_runtime logger max_threads num_DLA_cores tempfile_control_flags temporary_directory",
    "ICudaEngine": "create_engine_inspector create_execution_context create_runtime_config create_serialization_config device_memory_size_v2 engine_capability error_recorder get_aliased_input_tensor get_device_memory_size_for_profile_v2 get_engine_stat get_tensor_bytes_per_component get_tensor_components_per_element get_tensor_dtype get_tensor_format get_tensor_format_desc get_tensor_location get_tensor_mode get_tensor_name get_tensor_profile_shape get_tensor_profile_values get_tensor_shape get_tensor_vectorized_dim get_weight_streaming_automatic_budget hardware_compatibility_level is_debug_tensor is_shape_inference_io name num_aux_streams num_io_tensors num_layers num_optimization_profiles profiling_verbosity refittable serialize serialize_with_config streamable_weights_size tactic_sources weight_streaming_budget_v2 weight_streaming_scratch_memory_size",
    "IExecutionContext": "active_optimization_profile all_binding_shapes_specified debug_sync device_memory engine enqueue_emits_profile error_recorder execute_async_v3 execute_v2 get_debug_listener get_debug_state get_input_consumed_event get_max_output_size get_output_allocator get_runtime_config get_tensor_address get_tensor_shape get_tensor_strides infer_shapes name nvtx_verbosity persistent_cache_limit profiler report_to_profiler set_all_tensors_debug_state set_aux_streams set_communicator set_debug_listener set_device_memory set_input_consumed_event set_input_shape set_optimization_profile_async set_output_allocator set_tensor_address set_tensor_debug_state temporary_allocator unfused_tensors_debug_state update_device_memory_size_for_shapes",
    "NetworkDefinitionCreationFlag": "PREFER_AOT_PYTHON_PLUGINS PREFER_JIT_PYTHON_PLUGINS STRONGLY_TYPED",
    "BuilderFlag": "DEBUG DIRECT_IO DISABLE_COMPILATION_CACHE DISABLE_TIMING_CACHE DISTRIBUTIVE_INDEPENDENCE EDITABLE_TIMING_CACHE ERROR_ON_TIMING_CACHE_MISS EXCLUDE_LEAN_RUNTIME GPU_FALLBACK MONITOR_MEMORY REFIT REFIT_IDENTICAL REFIT_INDIVIDUAL SAFETY_SCOPE SPARSE_WEIGHTS STRICT_NANS STRIP_PLAN TF32 VERSION_COMPATIBLE WEIGHT_STREAMING",
    "MemoryPoolType": "DLA_GLOBAL_DRAM DLA_LOCAL_DRAM DLA_MANAGED_SRAM TACTIC_DRAM TACTIC_SHARED_MEMORY WORKSPACE",
    "TensorIOMode": "INPUT NONE OUTPUT",
    "DataType": "BF16 BOOL E8M0 FLOAT FP4 FP8 HALF INT32 INT4 INT64 INT8 UINT8",
}

# what the code uses: a change of usage must be re-checked against the lists above
USED = {
    "tensorrt": "Builder BuilderFlag Logger MemoryPoolType NetworkDefinitionCreationFlag "
    "OnnxParser Runtime TensorIOMode __version__ nptype",
    "Logger": "WARNING",
    "Builder": "build_serialized_network create_builder_config create_network "
    "create_optimization_profile",
    "IBuilderConfig": "add_optimization_profile clear_flag create_timing_cache get_timing_cache "
    "set_memory_pool_limit set_timing_cache",
    "OnnxParser": "parse",
    "IOptimizationProfile": "set_shape",
    "ITimingCache": "serialize",
    "Runtime": "deserialize_cuda_engine",
    "ICudaEngine": "create_execution_context get_tensor_dtype get_tensor_mode get_tensor_name "
    "get_tensor_profile_shape get_tensor_shape num_io_tensors",
    "IExecutionContext": "execute_async_v3 get_tensor_shape set_input_shape set_tensor_address",
    "NetworkDefinitionCreationFlag": "STRONGLY_TYPED",
    "BuilderFlag": "TF32",
    "MemoryPoolType": "WORKSPACE",
    "TensorIOMode": "INPUT",
}
APIS = {"10.0.1.6": TRT_10_0, "11.1.0.2": TRT_11_1}


class Documented:
    """Exposes only the documented attributes of one TensorRT class, recording each use."""

    def __init__(self, api: dict, cls: str, impl: object, used: set) -> None:
        self._api, self._cls, self._impl, self._used = api, cls, impl, used

    def __getattr__(self, name: str):
        if name not in self._api[self._cls].split():
            raise AttributeError(f"{self._cls}.{name} is not in this TensorRT's documented API")
        self._used.add(f"{self._cls}.{name}")
        return getattr(self._impl, name)


class Enum:
    def __init__(self, names: str) -> None:
        for i, n in enumerate(names.split()):
            setattr(self, n, i)


NP = {"FLOAT": np.float32, "HALF": np.float16, "UINT8": np.uint8, "INT64": np.int64}


def fake_tensorrt(version: str, used: set, log: dict) -> Documented:
    """TensorRT whose 'engines' are the ONNX model run by ONNX Runtime (so parity is exact)."""
    import onnxruntime as ort

    api = APIS[version]
    wrap = lambda cls, impl: Documented(api, cls, impl, used)  # noqa: E731
    enums = {c: Enum(api[c]) for c in ("BuilderFlag", "MemoryPoolType", "TensorIOMode")}
    enums["NetworkDefinitionCreationFlag"] = Enum(api["NetworkDefinitionCreationFlag"])
    dtypes = Enum(api["DataType"])
    names_of = {getattr(dtypes, n): n for n in NP}

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return self.data + b"+"

    class Config:
        def __init__(self) -> None:
            self.cleared, self.profiles, self.cache = [], [], None

        def set_memory_pool_limit(self, pool, size) -> None:
            log["workspace"] = (pool, size)

        def clear_flag(self, flag) -> None:
            self.cleared.append(flag)

        def create_timing_cache(self, data: bytes):
            log.setdefault("timing_cache_in", []).append(bytes(data))
            return wrap("ITimingCache", TimingCache(bytes(data)))

        def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
            self.cache = cache
            return cache._impl.data != b"stale"

        def get_timing_cache(self):
            return self.cache

        def add_optimization_profile(self, profile) -> int:
            self.profiles.append(profile._impl.shapes)
            return 0

    class Profile:
        shapes: dict = {}

        def set_shape(self, name, lo, opt, hi) -> None:
            self.shapes = {"name": name, "shapes": [list(lo), list(opt), list(hi)]}

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags, self.onnx = flags, b""

    class Builder:
        def __init__(self, logger) -> None:
            pass

        def create_network(self, flags: int):
            return Network(flags)

        def create_builder_config(self):
            return wrap("IBuilderConfig", Config())

        def create_optimization_profile(self):
            return wrap("IOptimizationProfile", Profile())

        def build_serialized_network(self, network, config) -> bytes:
            strongly = 1 << enums["NetworkDefinitionCreationFlag"].STRONGLY_TYPED
            plan = {
                "onnx": base64.b64encode(network.onnx).decode(),
                "profile": config._impl.profiles[0],
                "strongly_typed": bool(network.flags & strongly),
                "tf32_off": enums["BuilderFlag"].TF32 in config._impl.cleared,
            }
            log.setdefault("plans", []).append(plan)
            return json.dumps(plan).encode()

    class Parser:
        def __init__(self, network, logger) -> None:
            self.network = network

        def parse(self, data: bytes) -> bool:
            self.network.onnx = bytes(data)
            return True

    class Context:
        def __init__(self, engine) -> None:
            self.engine, self.shape, self.addr, self.out_shapes = engine, None, {}, {}

        def set_input_shape(self, name, shape) -> bool:
            lo, _, hi = self.engine.profile
            if any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
                return False
            self.shape = tuple(shape)
            x = np.zeros(self.shape, NP[names_of[self.engine.dtype(name)]])
            outs = self.engine.session.run(None, {name: x})
            self.out_shapes = {o.name: v.shape for o, v in zip(self.engine.outs, outs)}
            return True

        def get_tensor_shape(self, name):
            return self.out_shapes[name]

        def set_tensor_address(self, name, ptr) -> None:
            self.addr[name] = ptr

        def execute_async_v3(self, stream) -> bool:
            e = self.engine
            dt = np.dtype(NP[names_of[e.dtype(e.input)]])
            n = int(np.prod(self.shape)) * dt.itemsize
            raw = ctypes.string_at(self.addr[e.input], n)
            x = np.frombuffer(raw, dt).reshape(self.shape)
            for o, v in zip(e.outs, e.session.run(None, {e.input: x})):
                v = np.ascontiguousarray(v, np.float32)
                ctypes.memmove(self.addr[o.name], v.ctypes.data, v.nbytes)
            return True

    class Engine:
        def __init__(self, plan: dict) -> None:
            self.session = ort.InferenceSession(base64.b64decode(plan["onnx"]))
            self.input = self.session.get_inputs()[0].name
            self.outs = self.session.get_outputs()
            self.profile = [tuple(s) for s in plan["profile"]["shapes"]]
            # outputs listed in reverse: an engine's order need not be the ONNX graph's
            self.names = [self.input] + [o.name for o in self.outs][::-1]
            self.num_io_tensors = len(self.names)

        def get_tensor_name(self, i: int) -> str:
            return self.names[i]

        def get_tensor_mode(self, name: str) -> int:
            modes = enums["TensorIOMode"]
            return modes.INPUT if name == self.input else modes.OUTPUT

        def dtype(self, name: str) -> int:
            if name != self.input:
                return dtypes.FLOAT
            t = self.session.get_inputs()[0].type
            return dtypes.UINT8 if "uint8" in t else dtypes.FLOAT

        get_tensor_dtype = dtype

        def get_tensor_shape(self, name: str):
            """The network's declared shape: -1 where the ONNX graph's dimension is symbolic."""
            args = {a.name: a for a in [*self.session.get_inputs(), *self.outs]}
            return [d if isinstance(d, int) else -1 for d in args[name].shape]

        def get_tensor_profile_shape(self, name: str, profile: int):
            return self.profile

        def create_execution_context(self):
            return wrap("IExecutionContext", Context(self))

    class Runtime:
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes):
            return wrap("ICudaEngine", Engine(json.loads(bytes(data))))

    logger = Enum(api["Logger"])
    module = types.SimpleNamespace(
        __version__=version,
        Logger=wrap("Logger", types.SimpleNamespace(**vars(logger))),
        Builder=lambda logger: wrap("Builder", Builder(logger)),
        OnnxParser=lambda net, logger: wrap("OnnxParser", Parser(net, logger)),
        Runtime=lambda logger: wrap("Runtime", Runtime(logger)),
        nptype=lambda t: NP[names_of[t]],
        DataType=wrap("DataType", dtypes),
        **{k: wrap(k, v) for k, v in enums.items()},
    )
    module.Logger._impl.__call__ = None
    return Documented({"tensorrt": api["tensorrt"], **api}, "tensorrt", _Module(module), used)


class _Module:
    """The fake module: `trt.Logger(...)` constructs, `trt.Logger.WARNING` reads an enum."""

    def __init__(self, ns) -> None:
        self.__dict__.update(vars(ns))
        self.Logger = _Callable(ns.Logger)


class _Callable:
    def __init__(self, documented: Documented) -> None:
        self.documented = documented

    def __call__(self, *args) -> object:
        return object()

    def __getattr__(self, name: str):
        return getattr(self.documented, name)


class FakeCudart:
    """cuda-python's runtime calls, with 'device' and pinned memory in host buffers."""

    def __init__(self) -> None:
        self.device: dict[int, ctypes.Array] = {}
        self.pinned: dict[int, ctypes.Array] = {}
        self.pinned_calls = 0
        self.cudaMemcpyKind = types.SimpleNamespace(
            cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2
        )

    def _alloc(self, pool: dict, n: int) -> tuple[int, int]:
        buf = ctypes.create_string_buffer(n)
        pool[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    def cudaMalloc(self, n):
        return self._alloc(self.device, n)

    def cudaMallocHost(self, n):
        self.pinned_calls += 1
        return self._alloc(self.pinned, n)

    def cudaFree(self, ptr):
        del self.device[ptr]
        return (0,)

    def cudaFreeHost(self, ptr):
        del self.pinned[ptr]
        return (0,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        pools = (self.device, self.pinned)
        assert any(dst in p for p in pools) or any(src in p for p in pools)
        ctypes.memmove(dst, src, n)
        return (0,)

    def cudaStreamCreate(self):
        return 0, 7

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaStreamDestroy(self, stream):
        return (0,)

    def cudaGetDeviceProperties(self, i):
        return 0, types.SimpleNamespace(major=8, minor=9)


@pytest.fixture(params=sorted(APIS))
def fake_gpu(request, monkeypatch):
    used: set = set()
    log: dict = {}
    cudart = FakeCudart()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(request.param, used, log))
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart
    monkeypatch.setitem(sys.modules, "cuda", types.ModuleType("cuda"))
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    return types.SimpleNamespace(version=request.param, used=used, log=log, cudart=cudart)


def test_trt_export_engines_and_runtime_use_only_documented_api(
    fake_gpu, tmp_path, random_checkpoint
):
    from lofi.export.bundle_writer import export_bundle
    from lofi.export.check import check_bundle
    from lofi.export.tensorrt_build import BuildOptions
    from lofi.export.trt_shapes import Profiles
    from lofi.runtime.models import BundleModels
    from lofi.runtime.streaming import localize_offline

    cache = tmp_path / "timing.cache"
    build = BuildOptions(workspace_gib=0.5, timing_cache=cache)
    profiles = Profiles.parse("batch=1:4:8,length=8:48:96")
    folder, parity = export_bundle(
        random_checkpoint, tmp_path / "b", trt=True, profiles=profiles, build=build
    )
    # profiles from the CLI, strongly typed, TF32 off for fp32, the workspace limit
    plans = fake_gpu.log["plans"]
    assert [p["profile"]["shapes"] for p in plans] == [
        [[1, 4, 32, 32, 3], [4, 4, 32, 32, 3], [8, 4, 32, 32, 3]],
        [[1, 48, 8], [1, 48, 48], [1, 48, 96]],
    ]
    assert all(p["strongly_typed"] and p["tf32_off"] for p in plans)
    assert fake_gpu.log["workspace"][1] == 1 << 29
    # the timing cache file is read by the next build and rewritten after each
    assert fake_gpu.log["timing_cache_in"] == [b"", b"+"] and cache.read_bytes() == b"++"
    # engine parity recorded per engine; the manifest records version and GPU per engine
    assert set(parity["engines"]) == {"encoder.plan", "head.plan"}
    assert all(e["ok"] and e["max_abs_err"] == 0.0 for e in parity["engines"].values())
    m = json.loads((folder / "manifest.json").read_text())
    assert {"encoder.plan", "head.plan", "parity.json"} <= set(m["files"])
    assert {(e["tensorrt_version"], e["compute_capability"]) for e in m["engines"]} == {
        (fake_gpu.version, "8.9")
    }
    assert [line.endswith("loads here") for line in check_bundle(folder)[1:]] == [True, True]

    # the runtime's TensorRT device gives ONNX Runtime's results; outputs bound by name
    frames = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    ref_segs, ref = localize_offline(BundleModels(folder), frames, "v")
    models = BundleModels(folder, device="trt")
    segs, out = localize_offline(models, frames, "v", encoder_batch=16)  # chunked to 8
    for (c0, r0), (c1, r1) in zip(ref, out):
        np.testing.assert_allclose(c0, c1, atol=1e-6)
        np.testing.assert_allclose(r0, r1, atol=1e-6)
    assert segs == ref_segs
    assert fake_gpu.cudart.pinned_calls > 0  # copies go through page-locked memory
    # a shape outside the profile: one clear line, not a TensorRT error
    with pytest.raises(LofiError, match=r"outside the engine's profile .*--trt-shapes"):
        models.head_net(np.zeros((1, 48, 200), np.float32))
    for backend in (models.encoder, models.head_net):
        backend.close()
    assert not fake_gpu.cudart.device and not fake_gpu.cudart.pinned  # all freed

    used = {k: set(v.split()) for k, v in USED.items()}
    got: dict[str, set] = {k: set() for k in USED}
    for item in fake_gpu.used:
        cls, name = item.split(".", 1)
        got[cls].add(name)
    assert got == used
    for api in APIS.values():  # documented in both versions
        for cls, names in used.items():
            assert names <= set(api[cls].split()), (cls, names - set(api[cls].split()))


def test_a_stale_timing_cache_is_replaced(fake_gpu, tmp_path):
    import tensorrt as trt
    from lofi.export.tensorrt_build import _load_timing_cache

    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    config = builder.create_builder_config()
    path = tmp_path / "stale.cache"
    path.write_bytes(b"stale")
    _load_timing_cache(trt, config, path)
    assert fake_gpu.log["timing_cache_in"] == [b"stale", b""]


def test_an_engine_for_another_version_or_gpu_is_refused(fake_gpu, tmp_path, random_checkpoint):
    from lofi.export.bundle_writer import export_bundle
    from lofi.export.check import check_bundle
    from lofi.runtime.models import BundleModels

    folder, _ = export_bundle(random_checkpoint, tmp_path / "b", trt=True)
    fake_gpu.cudart.cudaGetDeviceProperties = lambda i: (0, types.SimpleNamespace(major=7, minor=5))
    assert "built for compute capability 8.9, this GPU is 7.5" in check_bundle(folder)[1]
    with pytest.raises(LofiError, match="encoder.plan cannot load here: built for compute"):
        BundleModels(folder, device="trt")


def _trt_chain(node: ast.AST) -> list[str] | None:
    """`trt.A.B` or `self.trt.A.B` -> ["A", "B"]; None for anything else."""
    names = []
    while isinstance(node, ast.Attribute):
        if node.attr == "trt" and isinstance(node.value, ast.Name) and node.value.id == "self":
            return names[::-1]
        names.append(node.attr)
        node = node.value
    return names[::-1] if isinstance(node, ast.Name) and node.id == "trt" else None


def test_every_trt_attribute_in_the_source_is_documented():
    """Static complement of the run above: every `trt.X` / `trt.X.Y` written in the source."""
    root = Path(__file__).resolve().parents[1]
    seen = set()
    for path in (root / "export" / "tensorrt_build.py", root / "runtime" / "backends.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            chain = _trt_chain(node)
            if not chain:
                continue
            seen.add(".".join(chain[:2]))
            for api in APIS.values():
                assert chain[0] in api["tensorrt"].split(), (path.name, chain)
                if len(chain) > 1 and chain[0] in api:
                    assert chain[1] in api[chain[0]].split(), (path.name, chain)
    assert {"nptype", "Logger.WARNING", "BuilderFlag.TF32", "TensorIOMode.INPUT"} <= seen
