"""Torch-free runtime: bundle reading, decoding, inference, streaming, post-processing, evaluation.

Nothing in this package imports torch, so an edge box can install it alone.
"""

from lofi.runtime.errors import LofiError

__all__ = ["LofiError"]
