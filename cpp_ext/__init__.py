"""LoFi sampling ops: uint8 frames -> encoder input, in one call.

`lofi_sample` runs the fused C++/CUDA op (built on first use, cached) and falls back to
`lofi_sample_reference`, the pure-torch oracle whose signature it keeps.
"""

from lofi.cpp_ext.ops import fused_op, lofi_sample
from lofi.cpp_ext.reference import lofi_sample_reference

__all__ = ["fused_op", "lofi_sample", "lofi_sample_reference"]
