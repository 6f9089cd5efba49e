"""ONNX -> serialized TensorRT engines (TensorRT 10.x and 11.x Python API)."""

from __future__ import annotations

from pathlib import Path

from lofi.runtime.backends import gpu_compute_capability
from lofi.runtime.errors import LofiError


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    input_name: str,
    shapes: tuple[tuple, tuple, tuple],
    workspace_gib: float = 2.0,
) -> dict:
    """Build one engine with a dynamic-shape profile (min, opt, max). Precision follows the ONNX
    types: an fp16 bundle's graph is fp16, built strongly typed (always so in TensorRT 11)."""
    try:
        import tensorrt as trt
    except ImportError:
        raise LofiError(
            "--trt needs TensorRT: pip install 'lofi-tal[gpu]' on a machine with an NVIDIA GPU"
        ) from None
    cc = gpu_compute_capability()
    if cc is None:
        raise LofiError("--trt needs an NVIDIA GPU and cuda-python to build engines")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly is not None and int(trt.__version__.split(".")[0]) < 11:
        flags |= 1 << int(strongly)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise LofiError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, *shapes)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise LofiError(f"TensorRT failed to build an engine from {onnx_path.name}")
    plan_path.write_bytes(bytes(serialized))
    return {
        "file": plan_path.name,
        "tensorrt_version": trt.__version__,
        "compute_capability": cc,
        "profile": {"min": list(shapes[0]), "opt": list(shapes[1]), "max": list(shapes[2])},
    }
