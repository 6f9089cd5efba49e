"""Torch-free runtime: bundle reading, decoding, inference, streaming, post-processing, evaluation.

Nothing in this package imports torch, so an edge box can install it alone. `Localizer` (the
Python API) is imported on first use, so `import lofi.runtime` stays light for the trainer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lofi.runtime.errors import LofiError

if TYPE_CHECKING:
    from lofi.runtime.localizer import Event, Localizer

__all__ = ["Event", "LofiError", "Localizer"]


def __getattr__(name: str) -> Any:
    if name in ("Localizer", "Event"):
        from lofi.runtime import localizer

        return getattr(localizer, name)
    raise AttributeError(f"module 'lofi.runtime' has no attribute {name!r}")
