"""--decode nvdec without PyNvVideoCodec: FFmpeg's CUDA hwaccel inside PyAV, never a silent CPU
fallback; refused in one line where no NVIDIA GPU can be used, for a stream NVDEC cannot decode
(nvcodec.SUPPORTED) and when NVDEC decodes nothing; on a GPU, the same frames as CPU decoding
(test_runtime_nvcodec covers the PyNvVideoCodec path)."""

from __future__ import annotations

import types
from pathlib import Path

import av
import numpy as np
import pytest
from av.codec.hwaccel import hwdevices_available
from lofi.runtime import decode, nvcodec
from lofi.runtime.decode import VideoReader, read_video
from lofi.runtime.errors import LofiError

from tests.test_reliability_stream import lines, run_stream

HAS_GPU = Path("/dev/nvidiactl").exists()


def hwaccel_on_the_cpu(monkeypatch, asked: list | None = None, wrap=lambda c: c):
    """av.open as the reader calls it with FFmpeg's CUDA hwaccel, decoding on the CPU instead:
    what is checked is what the reader asks for and what it does with the result."""
    real_open = av.open

    def fake_open(source, **kw):
        hw = kw.pop("hwaccel")
        if asked is not None:
            asked.append(hw)
        return wrap(real_open(source, **kw)) if hw is not None else real_open(source, **kw)

    monkeypatch.setattr(decode.av, "open", fake_open)
    monkeypatch.setattr(decode, "HWAccel", lambda *args, **kw: (args, kw))
    monkeypatch.setattr(nvcodec, "load", lambda: None)


def test_nvdec_asks_ffmpeg_for_cuda_without_a_software_fallback(monkeypatch, synth_h264_420):
    asked: list = []
    hwaccel_on_the_cpu(monkeypatch, asked)
    video = synth_h264_420  # 8-bit 4:2:0 H.264 High, which NVDEC decodes
    frames = list(VideoReader(video, 8.0, (32, 32), decode="nvdec"))
    assert asked == [(("cuda",), {"allow_software_fallback": False})]
    list(VideoReader(video, 8.0, (32, 32)))
    assert asked[1] is None  # CPU decoding asks for no device
    assert len(frames) == len(read_video(video, 8.0, (32, 32)))


def test_nvdec_refuses_lossless_h264_before_asking_for_frames(monkeypatch, tiny_synth):
    hwaccel_on_the_cpu(monkeypatch)
    monkeypatch.setattr(decode.VideoReader, "_pyav_frames", lambda *a: pytest.fail("decoded"))
    video = tiny_synth / "videos" / "synth_val_0000.mp4"  # lossless: High 4:4:4 Predictive
    with pytest.raises(LofiError) as e:
        list(VideoReader(video, 8.0, (32, 32), decode="nvdec"))
    msg = str(e.value)
    assert msg.startswith(f"--decode nvdec: NVDEC cannot decode {video} (h264 profile High 4:4:4")
    assert msg.endswith("use --decode cpu") and "\n" not in msg


class Rejecting:
    """A container whose every packet fails to decode: FFmpeg's CUDA hwaccel without a software
    fallback on a stream NVDEC does not take."""

    def __init__(self, container) -> None:
        self.container = container

    def __getattr__(self, name):
        return getattr(self.container, name)

    def demux(self, stream):
        def fail():
            raise av.InvalidDataError(1094995529, "Invalid data found when processing input")

        for packet in self.container.demux(stream):
            yield types.SimpleNamespace(size=packet.size, decode=fail)


def test_an_nvdec_that_decodes_nothing_is_named_not_the_file(monkeypatch, synth_h264_420):
    hwaccel_on_the_cpu(monkeypatch, wrap=Rejecting)
    reader = VideoReader(synth_h264_420, 8.0, (32, 32), decode="nvdec")
    with pytest.raises(LofiError) as e:
        list(reader)
    msg = str(e.value)
    assert msg.startswith(f"--decode nvdec: NVDEC decoded nothing from {synth_h264_420} (")
    assert f"{reader.corrupt} rejected" in msg and reader.corrupt > 80
    assert "no decodable" not in msg and msg.endswith("use --decode cpu")


@pytest.mark.skipif(HAS_GPU, reason="an NVIDIA GPU is present")
def test_without_a_gpu_nvdec_is_refused_in_one_line_per_source(tiny_bundle, tiny_synth):
    video = str(tiny_synth / "videos" / "synth_val_0000.mp4")
    p = run_stream(video, "--bundle", str(tiny_bundle), "--decode", "nvdec")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    (line,) = lines(p.stderr)
    assert line.startswith("error:") and "nvdec" in line and "use --decode cpu" in line


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")
@pytest.mark.skipif("cuda" not in hwdevices_available(), reason="PyAV's FFmpeg has no CUDA")
def test_nvdec_decodes_the_same_frames_as_the_cpu(monkeypatch, synth_h264_420):
    """FFmpeg's CUDA hwaccel (PyNvVideoCodec kept out) against CPU decoding of the same file.
    H.264 decoding is exact (the standard defines the decoded YUV bit for bit), and the frames
    NVDEC gives (NV12, downloaded) go through the same scaler as the CPU's (YUV 4:2:0 planar),
    so the pixels are the same when scaled: converted at the file's own size FFmpeg takes
    another path for NV12 (chroma interpolated) than for planar 4:2:0 (chroma repeated), 43
    levels apart at Synth-TAL's sharp coloured edges, while scaled to 64x64 both give the same
    RGB (checked on the CPU with the planes re-packed as NV12). One level is left for rounding;
    the wrong frame or matrix is tens of levels off."""
    monkeypatch.setattr(nvcodec, "load", lambda: None)
    gpu = np.stack(list(VideoReader(synth_h264_420, 8.0, (64, 64), decode="nvdec")))
    cpu = read_video(synth_h264_420, 8.0, (64, 64))
    assert gpu.shape == cpu.shape
    assert np.abs(gpu.astype(int) - cpu.astype(int)).max() <= 1
