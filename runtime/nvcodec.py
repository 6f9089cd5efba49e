"""NVDEC decoding of video files through NVIDIA's PyNvVideoCodec (the `nvdec` extra).

PyNvVideoCodec demuxes with its own FFmpeg and decodes on the GPU's NVDEC engines; frames come
back as interleaved RGB in host memory with their presentation timestamps, so the reader's
timestamp sampling, scaler and fault rules stay the same as with CPU decoding. Written against
PyNvVideoCodec 2.x (`CreateDemuxer`, `CreateDecoder(usedevicememory=False,
outputColorType=OutputColorType.RGB)`, `DecodedFrame.getPTS/GetPtrToPlane/framesize`)."""

from __future__ import annotations

import ctypes
import importlib
from collections.abc import Iterator
from fractions import Fraction
from types import ModuleType

import numpy as np
from lofi.runtime.errors import LofiError

MODULE = "PyNvVideoCodec"


def load() -> ModuleType | None:
    """The PyNvVideoCodec module, or None when it is not installed (or cannot load, e.g. on a
    machine without the NVIDIA driver's libcuda)."""
    try:
        return importlib.import_module(MODULE)
    except (ImportError, OSError):
        return None


def host_rgb(frame: object, height: int, width: int) -> np.ndarray:
    """A decoded frame's interleaved RGB host buffer as an owned (H, W, 3) array: the decoder
    reuses its surfaces, so the pixels are copied out before the next Decode call."""
    size = int(frame.framesize())
    if size != height * width * 3:
        raise LofiError(f"NVDEC returned {size} bytes for a {width}x{height} RGB frame")
    buf = (ctypes.c_uint8 * size).from_address(int(frame.GetPtrToPlane(0)))
    return np.frombuffer(buf, np.uint8).reshape(height, width, 3).copy()


class NvFrames:
    """Iterates `(seconds, rgb)` for every decoded frame of a file, in presentation order.

    A packet NVDEC rejects is skipped and counted in `corrupt` (what the CPU path does with a
    corrupt packet); `on_corrupt(run)` returning True stops the iteration."""

    def __init__(self, nvc: ModuleType, source: str, gpu: int = 0) -> None:
        self.source = source
        self.corrupt = 0
        try:
            self.demuxer = nvc.CreateDemuxer(filename=source)
        except Exception as exc:  # PyNvVideoCodec raises its own and RuntimeError alike
            raise LofiError(f"cannot open video {source} with PyNvVideoCodec: {exc}") from None
        try:
            self.decoder = nvc.CreateDecoder(
                gpuid=gpu,
                codec=self.demuxer.GetNvCodecId(),
                usedevicememory=False,
                outputColorType=nvc.OutputColorType.RGB,
            )
        except Exception as exc:
            raise LofiError(
                f"--decode nvdec: PyNvVideoCodec could not create an NVDEC decoder ({exc}): it "
                "needs an NVIDIA GPU and driver; use --decode cpu"
            ) from None
        self.time_base = Fraction(self.demuxer.GetTimebaseNum(), self.demuxer.GetTimebaseDen())
        self.frame_seconds = 1.0 / float(self.demuxer.FrameRate() or 25.0)

    def frames(self, on_corrupt=lambda run: False) -> Iterator[tuple[float, np.ndarray]]:
        run = 0
        for packet in self.demuxer:
            try:
                decoded = self.decoder.Decode(packet)
            except Exception:
                self.corrupt += 1
                run += 1
                if on_corrupt(run):
                    return
                continue
            run = 0
            for frame in decoded:
                h, w = self.decoder.GetHeight(), self.decoder.GetWidth()
                yield float(frame.getPTS() * self.time_base), host_rgb(frame, h, w)
