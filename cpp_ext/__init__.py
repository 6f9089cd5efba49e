"""LoFi sampling ops: frames (uint8) -> encoder input, in one call.

`lofi_sample` is the public entry point; `reference.lofi_sample_reference` is the pure-torch
oracle whose signature the fused kernels keep.
"""

from lofi.cpp_ext.reference import lofi_sample_reference

lofi_sample = lofi_sample_reference

__all__ = ["lofi_sample", "lofi_sample_reference"]
