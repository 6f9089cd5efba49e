"""Build the C++/CUDA LoFi ops on first use (torch.utils.cpp_extension + ninja), cached per torch.

Where no compiler is available the caller falls back to the torch reference with one warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = [CSRC / "lofi_sample.cpp"]
CUDA_SOURCES = [CSRC / "cuda" / "lofi_sample.cu"]
# no fused multiply-add: the kernels must round like the reference's separate ops
CFLAGS = ["-O3", "-ffp-contract=off"]
CUDA_FLAGS = ["-O3", "--fmad=false"]


def cuda_home() -> str | None:
    for candidate in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if candidate and (Path(candidate) / "bin" / "nvcc").exists():
            return candidate
    nvcc = shutil.which("nvcc")
    return str(Path(nvcc).resolve().parent.parent) if nvcc else None


def _wheel_cuda_includes() -> list[str]:
    """Headers of the nvidia-* wheels that come with a CUDA build of torch (cusparse.h, ...)."""
    try:
        import nvidia
    except ImportError:
        return []
    found = []
    for root in nvidia.__path__:
        for inc in Path(root).glob("*/include"):
            found.append(str(inc))
    return sorted(found)


def _build_dir(with_cuda: bool) -> Path:
    stamp = hashlib.sha256()
    for f in SOURCES + (CUDA_SOURCES if with_cuda else []) + [CSRC / "lofi_sample.h"]:
        stamp.update(f.read_bytes())
    stamp.update(
        f"{torch.__version__}|{torch.version.cuda}|{with_cuda}|{CFLAGS}|{CUDA_FLAGS}".encode()
    )
    root = Path(
        os.environ.get("LOFI_EXT_CACHE", Path.home() / ".cache" / "lofi-tal" / "torch_extensions")
    )
    path = root / stamp.hexdigest()[:16]
    path.mkdir(parents=True, exist_ok=True)
    return path


def wants_cuda() -> bool:
    """Build the CUDA part where it can run: a CUDA build of torch, a GPU and nvcc. (CI compiles
    it without a GPU through build(with_cuda=True) in a process of its own.)"""
    return torch.version.cuda is not None and torch.cuda.is_available() and cuda_home() is not None


def build(verbose: bool = False, with_cuda: bool | None = None) -> None:
    """Compile (or load from the cache) and register torch.ops.lofi.sample."""
    home = cuda_home()
    if home:
        os.environ.setdefault("CUDA_HOME", home)  # before cpp_extension reads it at import
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)  # its "no CUDA runtime" warning is expected on GPU-less machines
    try:
        from torch.utils import cpp_extension
    finally:
        log.setLevel(level)

    with_cuda = wants_cuda() if with_cuda is None else with_cuda
    sources = SOURCES + (CUDA_SOURCES if with_cuda else [])
    if with_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.7;9.0"  # Jetson Orin and Hopper when no GPU to ask
    cpp_extension.load(
        name="lofi_cpp_ext",
        sources=[str(s) for s in sources],
        extra_cflags=CFLAGS,
        extra_cuda_cflags=CUDA_FLAGS if with_cuda else None,
        extra_include_paths=[str(CSRC)] + (_wheel_cuda_includes() if with_cuda else []),
        build_directory=str(_build_dir(with_cuda)),
        with_cuda=with_cuda,
        is_python_module=False,
        verbose=verbose,
    )
