"""NVDEC decoding of video files through NVIDIA's PyNvVideoCodec (the `nvdec` extra).

PyNvVideoCodec demuxes with its own FFmpeg and decodes on the GPU's NVDEC engines; frames come
back as interleaved RGB in host memory with their presentation timestamps, so the reader's
timestamp sampling, scaler and fault rules stay the same as with CPU decoding. Written against
PyNvVideoCodec 2.x (`CreateDemuxer`, `CreateDecoder(usedevicememory=False,
outputColorType=OutputColorType.RGB)`, `DecodedFrame.getPTS/GetPtrToPlane/framesize`).

Also the one table of what NVDEC decodes (`SUPPORTED`), checked on the stream's header before any
stream goes to NVDEC, whether through PyNvVideoCodec or FFmpeg's CUDA hwaccel."""

from __future__ import annotations

import ctypes
import importlib
from collections.abc import Iterator
from fractions import Fraction
from types import ModuleType

import numpy as np
from lofi.runtime.errors import LofiError

MODULE = "PyNvVideoCodec"

# What NVDEC decodes, by FFmpeg's codec name: (profiles, pixel formats) as FFmpeg (PyAV's
# `codec_context.profile` and `.pix_fmt`) names them, both read from the container's header
# without decoding. Source: NVIDIA Video Codec SDK 13.0, NVDEC Application Note, table "NVDEC
# Hardware Capabilities" (docs.nvidia.com/video-technologies/video-codec-sdk/13.0/
# nvdec-application-note/): H.264 Baseline, Main, High on every GPU from Maxwell on (High 10 and
# High 4:2:2 on Blackwell only, High 4:4:4 Predictive on none: it is also what libx264 writes for
# any lossless stream, 4:2:0 included); HEVC Main and Main 10, and 4:4:4 (Rext) from Turing on;
# VP9 Profile 0; AV1 Main on Ampere GA10x, Ada and Blackwell only (not Turing, GA100 or
# Hopper). The GPU's generation is unknown here, so a stream NVDEC still cannot take (AV1 on a
# Hopper) is caught by the reader's guard against a decoder that decodes nothing.
SUPPORTED: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "h264": (
        frozenset({"Baseline", "Constrained Baseline", "Main", "High"}),
        frozenset({"yuv420p", "yuvj420p"}),
    ),
    "hevc": (
        frozenset({"Main", "Main 10", "Rext"}),
        frozenset({"yuv420p", "yuvj420p", "yuv420p10le", "yuv444p", "yuvj444p", "yuv444p10le"}),
    ),
    "vp9": (frozenset({"Profile 0"}), frozenset({"yuv420p", "yuvj420p"})),
    "av1": (frozenset({"Main"}), frozenset({"yuv420p", "yuv420p10le"})),
}

StreamFormat = tuple[str, str | None, str | None]  # codec, profile, pixel format


def stream_format(codec_context: object) -> StreamFormat:
    """A stream's codec (FFmpeg's codec name, not its decoder's: `av1`, not `libdav1d`), profile
    and pixel format, from PyAV's codec context of a container opened for reading (header only:
    nothing is decoded). A profile or pixel format the header does not give is None."""
    codec = getattr(codec_context.codec, "canonical_name", None) or codec_context.name
    pix_fmt = getattr(codec_context, "pix_fmt", None)
    # opened with FFmpeg's CUDA hwaccel the context reports its surfaces' format, not the stream's
    return codec, codec_context.profile or None, None if pix_fmt in (None, "cuda") else pix_fmt


def describe(fmt: StreamFormat) -> str:
    codec, profile, pix_fmt = fmt
    return " ".join(x for x in (codec, f"profile {profile}" if profile else "", pix_fmt) if x)


def unsupported(fmt: StreamFormat) -> str | None:
    """Why NVDEC cannot decode a stream of this format (one clause, for an error message), or
    None where `SUPPORTED` takes it. A profile or pixel format the header leaves out is not held
    against the stream: NVDEC tries, and a stream it then decodes nothing of is reported by the
    reader."""
    codec, profile, pix_fmt = fmt
    if codec not in SUPPORTED:
        return f"{describe(fmt)}: NVDEC decodes only {', '.join(sorted(SUPPORTED))} here"
    profiles, formats = SUPPORTED[codec]
    if (profile is None or profile in profiles) and (pix_fmt is None or pix_fmt in formats):
        return None
    why = (
        f"{describe(fmt)}: NVDEC decodes {codec} only as {'/'.join(sorted(profiles))} in "
        f"{'/'.join(sorted(formats))}"
    )
    if codec == "h264" and profile == "High 4:4:4 Predictive":
        why += " (lossless H.264 is High 4:4:4 Predictive)"
    return why


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


class NoDecoder(LofiError):
    """PyNvVideoCodec loaded but made no decoder (no usable NVIDIA GPU or driver)."""


class NvFrames:
    """Iterates `(seconds, rgb)` for every decoded frame of a file, in presentation order.

    A packet NVDEC rejects is skipped and counted in `corrupt` (what the CPU path does with a
    corrupt packet); `on_corrupt(run)` returning True stops the iteration. `packets` counts the
    packets handed to the decoder, so a decoder that takes packets and returns no frame (a
    stream NVDEC cannot decode) can be told from an empty file."""

    def __init__(self, nvc: ModuleType, source: str, gpu: int = 0) -> None:
        self.source = source
        self.corrupt = 0
        self.packets = 0
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
            raise NoDecoder(f"PyNvVideoCodec could not create an NVDEC decoder ({exc})") from None
        self.time_base = Fraction(self.demuxer.GetTimebaseNum(), self.demuxer.GetTimebaseDen())
        self.rate = float(self.demuxer.FrameRate() or 0) or None  # frames/s; None: not said

    def frames(self, on_corrupt=lambda run: False) -> Iterator[tuple[float, np.ndarray]]:
        run = 0
        for packet in self.demuxer:
            self.packets += 1
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
