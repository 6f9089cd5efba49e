"""--decode nvdec without PyNvVideoCodec: FFmpeg's CUDA hwaccel inside PyAV, never a silent CPU
fallback; refused in one line where no NVIDIA GPU can be used; on a GPU, the same frames as CPU
decoding (test_runtime_nvcodec covers the PyNvVideoCodec path)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from lofi.runtime import decode, nvcodec
from lofi.runtime.decode import VideoReader, read_video

from tests.test_reliability_stream import lines, run_stream

HAS_GPU = Path("/dev/nvidiactl").exists()


def test_nvdec_asks_ffmpeg_for_cuda_without_a_software_fallback(monkeypatch, tiny_synth):
    asked = []
    real_open = av.open

    def fake_open(source, **kw):
        asked.append(kw.pop("hwaccel"))
        return real_open(source, **kw)  # decoded on the CPU here: only the request is checked

    monkeypatch.setattr(decode.av, "open", fake_open)
    monkeypatch.setattr(decode, "HWAccel", lambda *args, **kw: (args, kw))
    monkeypatch.setattr(nvcodec, "load", lambda: None)
    video = tiny_synth / "videos" / "synth_val_0000.mp4"
    frames = list(VideoReader(video, 8.0, (32, 32), decode="nvdec"))
    assert asked == [(("cuda",), {"allow_software_fallback": False})]
    list(VideoReader(video, 8.0, (32, 32)))
    assert asked[1] is None  # CPU decoding asks for no device
    assert len(frames) == len(read_video(video, 8.0, (32, 32)))


@pytest.mark.skipif(HAS_GPU, reason="an NVIDIA GPU is present")
def test_without_a_gpu_nvdec_is_refused_in_one_line_per_source(tiny_bundle, tiny_synth):
    video = str(tiny_synth / "videos" / "synth_val_0000.mp4")
    p = run_stream(video, "--bundle", str(tiny_bundle), "--decode", "nvdec")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    (line,) = lines(p.stderr)
    assert line.startswith("error:") and "nvdec" in line and "use --decode cpu" in line


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU")
def test_nvdec_decodes_the_same_frames_as_the_cpu(tiny_synth):
    video = tiny_synth / "videos" / "synth_val_0000.mp4"  # lossless H.264: exact frames
    gpu = np.stack(list(VideoReader(video, 8.0, (32, 32), decode="nvdec")))
    np.testing.assert_array_equal(gpu, read_video(video, 8.0, (32, 32)))
