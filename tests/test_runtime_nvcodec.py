"""--decode nvdec / auto through PyNvVideoCodec. No GPU here, so a stand-in module with
PyNvVideoCodec's API (demuxer, decoder, host RGB frames behind a raw pointer) decodes with PyAV
underneath: what is checked is everything around NVDEC (what is asked of the library, pointer
reads, timestamps, sampling, scaling, corrupt packets, the fallbacks and the refusals).

NVDEC decodes H.264 only as 8-bit 4:2:0 Baseline/Main/High (nvcodec.SUPPORTED), so the videos
given to it are `synth_h264_420`; the Synth-TAL files themselves are lossless H.264 (profile
High 4:4:4 Predictive), which `nvdec` refuses and `auto` decodes on the CPU."""

from __future__ import annotations

import types
import warnings
from fractions import Fraction
from types import SimpleNamespace

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


def fake_nvc(corrupt_packets: set[int] = frozenset(), no_gpu: bool = False, silent=False):
    """A PyNvVideoCodec stand-in; `calls` records what the reader asked for. `silent`: a decoder
    that takes every packet and returns no frame, what PyNvVideoCodec did on an H100 with a
    stream NVDEC cannot decode."""
    calls: dict = {"decoder": None, "decoded": 0, "packets": 0}

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
            calls["packets"] += 1
            if silent:
                return []
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
    """Lossless H.264 (profile High 4:4:4 Predictive): NVDEC cannot decode it."""
    return tiny_synth / "videos" / "synth_val_0000.mp4"


@pytest.fixture
def video420(synth_h264_420):
    """The same frames as 8-bit 4:2:0 H.264 High: what NVDEC decodes."""
    return synth_h264_420


@pytest.fixture(autouse=True)
def fresh_notices(monkeypatch):
    """`auto`'s CPU-fallback warning is said once per process: each test starts afresh."""
    monkeypatch.setattr(decode, "_told", set())


def test_nvdec_uses_pynvvideocodec_for_files_with_host_rgb_frames(monkeypatch, video420):
    nvc, calls = fake_nvc()
    monkeypatch.setattr(nvcodec, "load", lambda: nvc)
    monkeypatch.setattr(decode, "HWAccel", lambda *a, **kw: pytest.fail("FFmpeg hwaccel asked"))
    gpu = np.stack(list(VideoReader(video420, 8.0, decode="nvdec")))
    cpu = read_video(video420, 8.0)
    assert calls["decoder"]["usedevicememory"] is False
    assert calls["decoder"]["outputColorType"] == "RGB"
    assert calls["decoded"] > 0
    # the stand-in converts to RGB with PyAV, at full size as NVDEC does: the CPU's pixels
    np.testing.assert_array_equal(gpu, cpu)


def test_timestamps_drive_the_sampling(monkeypatch, tmp_path):
    """A video at 4 fps read at 8 fps shows each decoded frame twice, at its own time."""
    path = tmp_path / "slow.mp4"
    with av.open(str(path), "w") as out:  # 8-bit 4:2:0 High: NVDEC's
        s = out.add_stream("libx264", rate=4, options={"crf": "10", "profile": "high"})
        s.width = s.height = 16
        s.pix_fmt = "yuv420p"
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


def test_a_packet_nvdec_rejects_is_skipped_and_counted(monkeypatch, video420):
    nvc, _ = fake_nvc(corrupt_packets={5})
    monkeypatch.setattr(nvcodec, "load", lambda: nvc)
    reader = VideoReader(video420, 8.0, (32, 32), decode="nvdec")
    frames = list(reader)
    assert reader.corrupt == 1 and not reader.cut_short
    assert len(frames) == len(read_video(video420, 8.0, (32, 32)))


def test_a_run_of_rejected_packets_cuts_the_source_short(monkeypatch, video420):
    nvc, _ = fake_nvc(corrupt_packets=set(range(6, 10_000)))
    monkeypatch.setattr(nvcodec, "load", lambda: nvc)
    monkeypatch.setattr(decode, "MAX_CORRUPT_RUN", 4)
    reader = VideoReader(video420, 8.0, (32, 32), decode="nvdec")
    assert list(reader)
    assert reader.corrupt == 4 and "4 corrupt packets in a row" in reader.cut_short


def test_no_decoder_is_refused_in_one_line(monkeypatch, video420):
    nvc, _ = fake_nvc(no_gpu=True)
    monkeypatch.setattr(nvcodec, "load", lambda: nvc)
    with pytest.raises(LofiError, match="PyNvVideoCodec could not create an NVDEC decoder") as e:
        list(VideoReader(video420, 8.0, (32, 32), decode="nvdec"))
    assert "\n" not in str(e.value) and "use --decode cpu" in str(e.value)
    # auto takes the CPU instead: PyNvVideoCodec installed on a machine without a usable GPU
    reader = VideoReader(video420, 8.0, (32, 32), decode="auto")
    with pytest.warns(RuntimeWarning, match="could not create an NVDEC decoder"):
        frames = np.stack(list(reader))
    np.testing.assert_array_equal(frames, read_video(video420, 8.0, (32, 32)))
    assert "decoded on the CPU" in reader.fallback


def test_the_support_table_reads_the_header():
    assert nvcodec.unsupported(("h264", "High", "yuv420p")) is None
    assert nvcodec.unsupported(("h264", "Constrained Baseline", "yuvj420p")) is None
    assert nvcodec.unsupported(("hevc", "Main 10", "yuv420p10le")) is None
    assert nvcodec.unsupported(("h264", None, None)) is None  # a header that does not say
    lossless = nvcodec.unsupported(("h264", "High 4:4:4 Predictive", "yuv420p"))
    assert "High 4:4:4 Predictive" in lossless and "lossless" in lossless
    assert nvcodec.unsupported(("h264", "High 10", "yuv420p10le"))
    assert nvcodec.unsupported(("h264", "High", "yuv444p"))
    assert "mpeg4" in nvcodec.unsupported(("mpeg4", "Simple Profile", "yuv420p"))


def test_stream_format_comes_from_the_header(video, video420):
    with av.open(str(video)) as c:
        fmt = nvcodec.stream_format(c.streams.video[0].codec_context)
    assert fmt == ("h264", "High 4:4:4 Predictive", "yuv420p")
    with av.open(str(video420)) as c:
        assert nvcodec.stream_format(c.streams.video[0].codec_context) == (
            "h264",
            "High",
            "yuv420p",
        )
    # opened with FFmpeg's CUDA hwaccel, the context names its GPU surfaces' format: not held
    # against the stream (on the H100 the table refused every stream for "cuda")
    hw = SimpleNamespace(
        codec=SimpleNamespace(canonical_name="h264"), profile="High", pix_fmt="cuda"
    )
    assert nvcodec.stream_format(hw) == ("h264", "High", None)


def test_nvdec_refuses_lossless_h264_in_one_line(monkeypatch, video):
    nvc, calls = fake_nvc()
    monkeypatch.setattr(nvcodec, "load", lambda: nvc)
    with pytest.raises(LofiError) as e:
        list(VideoReader(video, 8.0, (32, 32), decode="nvdec"))
    msg = str(e.value)
    assert msg.startswith(f"--decode nvdec: NVDEC cannot decode {video} (h264 profile High 4:4:4")
    assert "yuv420p" in msg and msg.endswith("use --decode cpu") and "\n" not in msg
    assert calls["decoder"] is None and calls["packets"] == 0  # refused before NVDEC saw it


def test_auto_decodes_lossless_h264_on_the_cpu_and_says_so_once(monkeypatch, video, tiny_synth):
    nvc, calls = fake_nvc()
    monkeypatch.setattr(nvcodec, "load", lambda: nvc)
    other = tiny_synth / "videos" / "synth_val_0001.mp4"
    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        reader = VideoReader(video, 8.0, (32, 32), decode="auto")
        frames = np.stack(list(reader))
        again = VideoReader(other, 8.0, (32, 32), decode="auto")
        list(again)
    np.testing.assert_array_equal(frames, read_video(video, 8.0, (32, 32)))
    assert calls["decoder"] is None and calls["packets"] == 0
    assert "High 4:4:4 Predictive" in reader.fallback and "on the CPU" in reader.fallback
    assert again.fallback == reader.fallback  # each reader says why ...
    (line,) = [str(w.message) for w in told]  # ... the process once
    assert line.startswith("--decode auto: NVDEC cannot decode h264 profile High 4:4:4")
    assert str(video) in line and "\n" not in line


def test_a_decoder_that_decodes_nothing_is_named_not_the_file(monkeypatch, video420):
    nvc, calls = fake_nvc(silent=True)
    monkeypatch.setattr(nvcodec, "load", lambda: nvc)
    with pytest.raises(LofiError) as e:
        list(VideoReader(video420, 8.0, (32, 32), decode="nvdec"))
    msg = str(e.value)
    n = calls["packets"]
    assert n > 80
    assert msg == (
        f"--decode nvdec: NVDEC decoded nothing from {video420} ({n} packets of h264 profile High "
        "yuv420p 256x256 fed, 0 rejected); use --decode cpu"
    )


def test_auto_decodes_on_the_cpu_what_nvdec_decodes_nothing_of(monkeypatch, video420):
    nvc, calls = fake_nvc(silent=True)
    monkeypatch.setattr(nvcodec, "load", lambda: nvc)
    reader = VideoReader(video420, 8.0, (32, 32), decode="auto")
    with pytest.warns(RuntimeWarning, match="NVDEC decoded nothing from"):
        frames = np.stack(list(reader))
    np.testing.assert_array_equal(frames, read_video(video420, 8.0, (32, 32)))
    assert calls["packets"] > 80 and reader.corrupt == 0 and not reader.cut_short
    assert reader.fallback.endswith("decoded on the CPU instead")


def test_auto_decodes_on_the_cpu_without_pynvvideocodec(monkeypatch, video):
    monkeypatch.setattr(nvcodec, "load", lambda: None)
    monkeypatch.setattr(decode, "HWAccel", lambda *a, **kw: pytest.fail("FFmpeg hwaccel asked"))
    frames = np.stack(list(VideoReader(video, 8.0, (32, 32), decode="auto")))
    np.testing.assert_array_equal(frames, read_video(video, 8.0, (32, 32)))


def test_auto_uses_pynvvideocodec_when_installed(monkeypatch, video420):
    nvc, calls = fake_nvc()
    monkeypatch.setattr(nvcodec, "load", lambda: nvc)
    reader = VideoReader(video420, 8.0, (32, 32), decode="auto")
    list(reader)
    assert calls["decoded"] > 0 and reader.fallback is None


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
def test_pynvvideocodec_on_a_gpu_decodes_what_the_cpu_decodes(video420, video):
    """The same file decoded both ways, at its own size (no scaling). H.264 decoding is exact
    (the standard defines the decoded YUV bit for bit), so only the YUV-to-RGB conversion
    differs: NVIDIA's (Video Codec SDK ColorSpace.cu: float matrix, values truncated, one chroma
    sample per 2x2 block) against FFmpeg's (fixed point, rounded, also one chroma sample per 2x2
    block here), both BT.601 limited range as the file is tagged. That conversion, written out
    in numpy over this file's CPU-decoded YUV, differs from the CPU's RGB by 0.65 levels on
    average and 2 at most; the bounds leave twice that. The wrong matrix (BT.709) gives 2.7 on
    average and 25 at most, a wrong frame far more."""
    gpu = np.stack(list(VideoReader(video420, 8.0, decode="nvdec")))
    cpu = read_video(video420, 8.0)
    assert gpu.shape == cpu.shape
    diff = np.abs(gpu.astype(int) - cpu.astype(int))
    assert diff.mean() < 1.5 and diff.max() <= 4, (diff.mean(), diff.max())
    # and a stream NVDEC cannot decode goes to the CPU with `auto`, before PyNvVideoCodec
    with pytest.warns(RuntimeWarning, match="NVDEC cannot decode"):
        frames = np.stack(list(VideoReader(video, 8.0, (32, 32), decode="auto")))
    np.testing.assert_array_equal(frames, read_video(video, 8.0, (32, 32)))
