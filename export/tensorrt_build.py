"""ONNX -> serialized TensorRT engines, with one code path for TensorRT 10.x and 11.x.

Precision comes from the ONNX graph itself: the network is always created strongly typed, so an
fp16 bundle's fp16 graph builds an fp16 engine on both versions (11.x removed the precision
builder flags; 10.x would otherwise pick kernel precisions itself), and an fp32 engine has TF32
turned off so it matches ONNX Runtime's fp32. Every attribute of `tensorrt` used here is checked
against both versions' documented Python API in tests/test_trt_api.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from lofi.runtime.backends import gpu_compute_capability
from lofi.runtime.errors import LofiError

Shapes = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


@dataclass(frozen=True)
class BuildOptions:
    workspace_gib: float = 2.0
    timing_cache: Path | None = None  # read before each build if present, written after


def require_tensorrt() -> tuple[ModuleType, str]:
    """The tensorrt module and this GPU's compute capability, or one line saying what is
    missing (checked before any export work, so `--trt` fails fast)."""
    try:
        import tensorrt as trt
    except ImportError:
        raise LofiError(
            "--trt needs TensorRT: pip install 'lofi-tal[gpu]' on a machine with an NVIDIA GPU"
        ) from None
    cc = gpu_compute_capability()
    if cc is None:
        raise LofiError("--trt needs an NVIDIA GPU and cuda-python to build engines")
    return trt, cc


def _load_timing_cache(trt: ModuleType, config, path: Path | None):
    """A timing cache shared by every build (of this and later exports): tactics timed once are
    reused. A cache from another TensorRT version or GPU is not loaded; a fresh one replaces it."""
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def _save_timing_cache(config, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    os.replace(tmp, path)


def build_engine(
    trt: ModuleType,
    onnx_path: Path,
    plan_path: Path,
    input_name: str,
    shapes: Shapes,
    precision: str,
    options: BuildOptions,
) -> dict:
    """Build one engine with one optimisation profile (min, opt, max) for its one input."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise LofiError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(
        trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * (1 << 30))
    )
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    _load_timing_cache(trt, config, options.timing_cache)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, *shapes)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise LofiError(f"TensorRT failed to build an engine from {onnx_path.name}")
    plan_path.write_bytes(bytes(serialized))
    if options.timing_cache is not None:
        _save_timing_cache(config, options.timing_cache)
    return {
        "file": plan_path.name,
        "precision": precision,
        "tensorrt_version": str(trt.__version__),
        "input": input_name,
        "profile": {"min": list(shapes[0]), "opt": list(shapes[1]), "max": list(shapes[2])},
        "workspace_gib": options.workspace_gib,
    }
