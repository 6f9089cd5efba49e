"""--decode nvdec / auto through PyNvVideoCodec. No GPU here, so a stand-in module with
PyNvVideoCodec's API (demuxer, decoder, host RGB frames behind a raw pointer) decodes with PyAV
underneath: what is checked is everything around NVDEC (what is asked of the library, pointer
reads, timestamps, sampling, scaling, corrupt packets, the fallbacks and the refusals)."""

from __future__ import annotations

import types
from fractions import Fraction

import av
import numpy as np
import pytest
from lofi.runtime import decode, nvcodec
from lofi.runtime.decode import VideoReader, read_video
from lofi.runtime.errors import LofiError


class FakeFrame:
    def __init__(self, rgb: np.ndarray, pts: int) -> None:
        self.rgb, self.pts = np.ascontiguousarray(rgb), pts

    def getPTS(self) -> int:  # noqa: N802 - PyNvVideoCodec's name
        return self.pts

    def GetPtrToPlane(self, plane: int) -> int:  # noqa: N802
        assert plane == 0
        return self.rgb.ctypes.data

    def framesize(self) -> int:
        return self.rgb.nbytes


def fake_nvc(corrupt_packets: set[int] = frozenset(), no_gpu: bool = False):
    """A PyNvVideoCodec stand-in; `calls` records what the reader asked for."""
    calls: dict = {"decoder": None, "decoded": 0}

    class Demuxer:
        def __init__(self, filename: str) -> None:
            self.container = av.open(filename)
            self.stream = self.container.streams.video[0]
            self.codec = self.stream.codec_context

        def GetNvCodecId(self) -> str:  # noqa: N802
            return "H264"

        def GetTimebaseNum(self) -> int:  # noqa: N802
            return self.stream.time_base.numerator

        def GetTimebaseDen(self) -> int:  # noqa: N802
            return self.stream.time_base.denominator

        def FrameRate(self) -> float:  # noqa: N802
            return float(self.stream.average_rate)

        def __iter__(self):
            for i, packet in enumerate(self.container.demux(self.stream)):
                yield (i, packet, self.codec)

    class Decoder:
        def __init__(self, **kw) -> None:
            if no_gpu:
                raise RuntimeError("cuInit failed: no CUDA-capable device is detected")
            calls["decoder"] = kw
            self.size = (0, 0)

        def Decode(self, item):  # noqa: N802
            i, packet, codec = item
            if i in corrupt_packets:
                raise RuntimeError("NVDEC: bitstream error")
            out = []
            for frame in codec.decode(packet if packet.size else None):
                rgb = frame.to_ndarray(format="rgb24")
                self.size = rgb.shape[:2]
                out.append(FakeFrame(rgb, frame.pts))
            calls["decoded"] += len(out)
            return out

        def GetHeight(self) -> int:  # noqa: N802
            return self.size[0]

        def GetWidth(self) -> int:  # noqa: N802
            return self.size[1]

    module = types.SimpleNamespace(
        CreateDemuxer=lambda filename: Demuxer(filename),
        CreateDecoder=lambda **kw: Decoder(**kw),
        OutputColorType=types.SimpleNamespace(RGB="RGB", NATIVE="NATIVE"),
    )
    return module, calls


@pytest.fixture
def video(tiny_synth):
    return tiny_synth / "videos" / "synth_val_0000.mp4"


def test_nvdec_uses_pynvvideocodec_for_files_with_host_rgb_frames(monkeypatch, video):
    nvc, calls = fake_nvc()
    monkeypatch.setattr(nvcodec, "load", lambda: nvc)
    monkeypatch.setattr(decode, "HWAccel", lambda *a, **kw: pytest.fail("FFmpeg hwaccel asked"))
    gpu = np.stack(list(VideoReader(video, 8.0, (32, 32), decode="nvdec")))
    cpu = read_video(video, 8.0, (32, 32))
    assert calls["decoder"]["usedevicememory"] is False
    assert calls["decoder"]["outputColorType"] == "RGB"
    assert calls["decoded"] > 0
    assert gpu.shape == cpu.shape
    # full-size RGB then scaled, against YUV scaled straight to RGB: rounding differs only
    assert np.abs(gpu.astype(int) - cpu.astype(int)).mean() < 2.0


def test_timestamps_drive_the_sampling(monkeypatch, tmp_path):
    """A video at 4 fps read at 8 fps shows each decoded frame twice, at its own time."""
    path = tmp_path / "slow.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=4, options={"qp": "0"})
        s.width = s.height = 16
        s.pix_fmt = "yuv444p"
        for i in range(6):
            img = np.full((16, 16, 3), 40 * i, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    nvc, _ = fake_nvc()
    monkeypatch.setattr(nvcodec, "load", lambda: nvc)
    frames = np.stack(list(VideoReader(path, 8.0, decode="nvdec")))
    levels = frames[:, 8, 8, 0].astype(int)
    assert len(levels) == 12
    assert np.allclose(levels, np.repeat(40 * np.arange(6), 2), atol=2)


def test_a_packet_nvdec_rejects_is_skipped_and_counted(monkeypatch, video):
    nvc, _ = fake_nvc(corrupt_packets={5})
    monkeypatch.setattr(nvcodec, "load", lambda: nvc)
    reader = VideoReader(video, 8.0, (32, 32), decode="nvdec")
    frames = list(reader)
    assert reader.corrupt == 1 and not reader.cut_short
    assert len(frames) == len(read_video(video, 8.0, (32, 32)))


def test_a_run_of_rejected_packets_cuts_the_source_short(monkeypatch, video):
    nvc, _ = fake_nvc(corrupt_packets=set(range(3, 10_000)))
    monkeypatch.setattr(nvcodec, "load", lambda: nvc)
    monkeypatch.setattr(decode, "MAX_CORRUPT_RUN", 4)
    reader = VideoReader(video, 8.0, (32, 32), decode="nvdec")
    list(reader)
    assert reader.corrupt == 4 and "4 corrupt packets in a row" in reader.cut_short


def test_no_decoder_is_refused_in_one_line(monkeypatch, video):
    nvc, _ = fake_nvc(no_gpu=True)
    monkeypatch.setattr(nvcodec, "load", lambda: nvc)
    with pytest.raises(LofiError, match="PyNvVideoCodec could not create an NVDEC decoder") as e:
        list(VideoReader(video, 8.0, (32, 32), decode="nvdec"))
    assert "\n" not in str(e.value) and "use --decode cpu" in str(e.value)


def test_auto_decodes_on_the_cpu_without_pynvvideocodec(monkeypatch, video):
    monkeypatch.setattr(nvcodec, "load", lambda: None)
    monkeypatch.setattr(decode, "HWAccel", lambda *a, **kw: pytest.fail("FFmpeg hwaccel asked"))
    frames = np.stack(list(VideoReader(video, 8.0, (32, 32), decode="auto")))
    np.testing.assert_array_equal(frames, read_video(video, 8.0, (32, 32)))


def test_auto_uses_pynvvideocodec_when_installed(monkeypatch, video):
    nvc, calls = fake_nvc()
    monkeypatch.setattr(nvcodec, "load", lambda: nvc)
    list(VideoReader(video, 8.0, (32, 32), decode="auto"))
    assert calls["decoded"] > 0


def test_live_sources_never_go_to_pynvvideocodec(monkeypatch):
    monkeypatch.setattr(nvcodec, "load", lambda: pytest.fail("PyNvVideoCodec asked"))
    reader = VideoReader("rtsp://127.0.0.1:9/none", 8.0, decode="auto", open_timeout=0.5)
    with pytest.raises(LofiError, match="cannot open video rtsp://"):
        list(reader)


def test_host_rgb_rejects_a_buffer_of_the_wrong_size():
    frame = FakeFrame(np.zeros((4, 4, 3), np.uint8), 0)
    assert nvcodec.host_rgb(frame, 4, 4).shape == (4, 4, 3)
    with pytest.raises(LofiError, match="NVDEC returned 48 bytes for a 5x4 RGB frame"):
        nvcodec.host_rgb(frame, 4, 5)


def test_time_base_comes_from_the_demuxer(monkeypatch, video):
    nvc, _ = fake_nvc()
    source = nvcodec.NvFrames(nvc, str(video))
    with av.open(str(video)) as c:
        assert source.time_base == Fraction(c.streams.video[0].time_base)


@pytest.mark.gpu
@pytest.mark.skipif(nvcodec.load() is None, reason="needs PyNvVideoCodec (and an NVIDIA GPU)")
def test_pynvvideocodec_on_a_gpu_decodes_what_the_cpu_decodes(video):
    """Lossless H.264, so the only differences are NVDEC's YUV-to-RGB conversion and scaling
    from full size: a few levels on average, never a different picture."""
    gpu = np.stack(list(VideoReader(video, 8.0, (32, 32), decode="nvdec")))
    cpu = read_video(video, 8.0, (32, 32))
    assert gpu.shape == cpu.shape
    assert np.abs(gpu.astype(int) - cpu.astype(int)).mean() < 4.0
