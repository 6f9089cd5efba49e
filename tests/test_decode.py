"""Decoding by timestamp and clear errors on bad video files."""

from fractions import Fraction

import av
import numpy as np
import pytest
from lofi.runtime.decode import VideoReader, read_video
from lofi.runtime.errors import LofiError


def write_vfr(path, times, size=16):
    """Frames of constant value i at the given timestamps (ms): a variable-frame-rate file."""
    with av.open(str(path), "w", format="matroska") as c:
        s = c.add_stream("ffv1", rate=1000)
        s.width = s.height = size
        s.pix_fmt = "yuv444p"
        s.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            f = av.VideoFrame.from_ndarray(
                np.full((size, size, 3), 10 * i, np.uint8), format="rgb24"
            )
            f.pts = t
            f.time_base = Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_frames_chosen_by_timestamp(tmp_path):
    path = tmp_path / "vfr.mkv"
    write_vfr(path, [0, 100, 150, 400, 500])  # ms; the last frame lasts ~1 ms
    frames = read_video(path, fps=10.0)
    values = [int(round(f[0, 0, 0] / 10)) * 10 for f in frames]
    # output frame n shows what is on screen at n/10 s
    assert values[:5] == [0, 10, 20, 20, 30]


def test_missing_empty_truncated_and_not_video(tmp_path, tiny_synth):
    with pytest.raises(LofiError, match="not found"):
        list(VideoReader(tmp_path / "nope.mp4", 8.0))
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(LofiError, match="empty"):
        list(VideoReader(tmp_path / "empty.mp4", 8.0))
    good = (tiny_synth / "videos" / "synth_val_0000.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(good[: len(good) // 2])
    with pytest.raises(LofiError):
        list(VideoReader(tmp_path / "cut.mp4", 8.0))
    (tmp_path / "text.mp4").write_text("hello, not a video\n" * 20)
    with pytest.raises(LofiError):
        list(VideoReader(tmp_path / "text.mp4", 8.0))
