"""LoFi sampling ops: uint8 frames -> encoder input, in one call.

`lofi_sample` runs the fused C++/CUDA op (built on first use, cached) on a device whose kernel the
build registered (`has_kernel`), and otherwise `lofi_sample_reference`, the pure-torch oracle
whose signature it keeps, with one warning. Both check their input the same way first
(`lofi.cpp_ext.checks`): bad input is a one-line ValueError on every device.
"""

from lofi.cpp_ext.ops import fused_op, has_kernel, lofi_sample
from lofi.cpp_ext.reference import lofi_sample_reference

__all__ = ["fused_op", "has_kernel", "lofi_sample", "lofi_sample_reference"]
