"""Video timelines that lie: timestamps that jump, go back or restart, durations announced far
beyond the data, numbers no container can mean, and frames the decoder repaired by concealment.
Each gets bounded work, a warning and a status; nothing is filled across a gap. `lofi-stream`
and `lofi-data prepare` read through the same reader, so `read_video` (prepare's) refuses what
the stream reports as damaged."""

from __future__ import annotations

import io
import struct
import time
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import numpy as np
import pytest
from lofi.runtime.decode import VideoReader, read_video
from lofi.runtime.errors import LofiError
from lofi.runtime.timeline import (
    JITTER,
    MAX_GAP,
    MAX_RATE,
    MAX_SECONDS,
    MAX_SIDE,
    MAX_TICK,
    Shown,
    Timeline,
    announced_seconds,
    frame_seconds,
    header_problem,
)

from tests.test_reliability_stream import lines
from tests.test_runtime_faults import stream_json

FPS = 8


def ts_part(start: float, n: int, second: bool = False, size: int = 16) -> bytes:
    """MPEG-TS bytes of n (<= 40) frames at 8 fps from `start` seconds; frame i is flat grey
    6 i (3 more in a `second` part), so `values` tells which frame of which part it is."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as c:
        s = c.add_stream("mpeg2video", rate=FPS)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.codec_context.time_base = Fraction(1, FPS)
        s.options = {"qscale": "1"}
        for i in range(n):
            img = np.full((size, size, 3), 6 * i + 3 * second, np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = round(start * FPS) + i
            f.time_base = Fraction(1, FPS)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def values(frames) -> list[int]:
    """Which frame each output frame shows: 2 i for frame i of a first part, 2 i + 1 of a
    second."""
    return [int(round(float(f.mean()) / 3)) for f in frames]


FIRST = list(range(0, 80, 2))  # the values of a first part's 40 frames
SECOND = list(range(1, 80, 2))


def read(path: Path) -> tuple[list[np.ndarray], VideoReader, float]:
    reader = VideoReader(path, FPS, (16, 16))
    t0 = time.monotonic()
    frames = list(reader)
    return frames, reader, time.monotonic() - t0


@pytest.mark.parametrize(
    "second,what",
    [(3 * 3600.0, "an hours-long jump"), (0.0, "a restart at 0"), (3.0, "a step back")],
)
def test_a_clock_that_jumps_is_a_discontinuity_with_every_frame_shown_once(tmp_path, second, what):
    # concatenated MPEG-TS: 5 s, then 5 s more whose clock starts at `second`
    path = tmp_path / "cat.ts"
    path.write_bytes(ts_part(0.0, 40) + ts_part(second, 40, second=True))
    frames, reader, seconds = read(path)
    assert seconds < 5, what
    # nothing filled across the gap, nothing dropped before the clock caught up: each once
    assert values(frames) == FIRST + SECOND, what
    (clause,) = reader.damage
    assert "timestamps jump 1 time(s)" in clause and "without filling" in clause, what
    # lofi-data prepare's reader refuses it in one line (the same rule, the same reader)
    with pytest.raises(LofiError, match=r"cat\.ts: timestamps jump"):
        read_video(path, FPS, (16, 16))


def test_a_frame_held_under_the_bound_stays_on_screen(tmp_path):
    # a gap of MAX_GAP - 2 s is a frame held on screen (VFR): filled, no damage
    path = tmp_path / "held.ts"
    gap = MAX_GAP - 2
    path.write_bytes(ts_part(0.0, 8) + ts_part(1.0 + gap, 8, second=True))
    frames, reader, _ = read(path)
    assert reader.damage == [] and reader.truncated is None
    got = values(frames)
    assert got[:8] == FIRST[:8] and got[-8:] == SECOND[:8] and set(got[8:-8]) == {FIRST[7]}
    # both parts' first frames are at +0.125 s (the encoder's delay), so the gap is 8 s less
    # one frame: held on screen for it
    assert len(got) == 16 + round(gap * FPS) - 1


def test_a_jump_in_matroska_milliseconds_is_bounded_too(tmp_path):
    path = tmp_path / "late.mkv"
    write_at(path, [0, 7_200_000, 7_200_125, 7_200_250])  # ms: a frame, then 2 h later three
    frames, reader, seconds = read(path)
    assert seconds < 5 and [int(f.mean()) for f in frames] == [0, 8, 16, 24]
    (clause,) = reader.damage
    assert "at 0.1 s: from 0.0 s to 7200.0 s" in clause


def write_at(path: Path, times_ms: list[int], size: int = 16) -> None:
    """A Matroska file (FFV1) with one frame at each time in ms; frame i is grey 8 i."""
    with av.open(str(path), "w", format="matroska") as c:
        s = c.add_stream("ffv1", rate=FPS)  # each frame lasts 125 ms
        s.width = s.height = size
        s.pix_fmt = "yuv444p"
        s.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times_ms):
            img = np.full((size, size, 3), 8 * i, np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = t
            f.time_base = Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def with_duration(path: Path, dest: Path, ms: float) -> Path:
    """A copy of a Matroska file whose header announces `ms` milliseconds (its Duration
    element, an 8-byte float, rewritten in place)."""
    data = bytearray(path.read_bytes())
    at = data.index(b"\x44\x89\x88")  # Duration, 8 bytes
    data[at + 3 : at + 11] = struct.pack(">d", ms)
    dest.write_bytes(bytes(data))
    return dest


@pytest.mark.parametrize(
    "ms,expect", [(3_600_000.0, "of the 3600.0 s announced"), (1e12, "not believed")]
)
def test_a_duration_announced_far_beyond_the_data_is_damage_not_work(tmp_path, ms, expect):
    write_at(tmp_path / "v.mkv", [0, 125, 250, 375])
    path = with_duration(tmp_path / "v.mkv", tmp_path / "long.mkv", ms)
    frames, reader, seconds = read(path)
    assert seconds < 5 and len(frames) == 4  # the data, not the header, sets the work
    problems = [reader.truncated or "", *reader.damage]
    assert any(expect in p for p in problems), problems
    with pytest.raises(LofiError, match="long.mkv"):
        read_video(path, FPS)


def test_the_numbers_a_header_gives_have_physical_bounds():
    assert header_problem(1920, 1080, 1 / 90000) is None
    assert header_problem(0, 0, 1 / 1000) is None  # not given: the decoder finds it
    assert header_problem(MAX_SIDE, MAX_SIDE, MAX_TICK) is None  # the bounds themselves
    assert "frame size 16385x16" in header_problem(MAX_SIDE + 1, 16, 1 / 25)
    assert "frame size 16x-1" in header_problem(16, -1, 1 / 25)
    for tb in (None, 0.0, -1.0, 1e4):
        assert "time base" in header_problem(16, 16, tb)
    assert announced_seconds(MAX_SECONDS) == (MAX_SECONDS, None)
    assert announced_seconds(0.0) == (0.0, None) and announced_seconds(0.5) == (0.5, None)
    for bad in (MAX_SECONDS * 1.01, float("inf"), float("nan"), -1.0):
        seconds, note = announced_seconds(bad)
        assert seconds == 0.0 and "not believed" in note
    assert frame_seconds(0.04, 25.0) == 0.04
    assert frame_seconds(None, 25.0) == 0.04 and frame_seconds(1e9, 25.0) == 0.04
    assert frame_seconds(float("nan"), None) == 0.0 and frame_seconds(-1.0, 1e9) == 0.0
    assert frame_seconds(None, 0.01) == MAX_GAP  # a rate of one frame in 100 s holds 10 s
    assert frame_seconds(MAX_GAP, None) == MAX_GAP and frame_seconds(0.5, None) == 0.5
    assert frame_seconds(0.0, 25.0) == 0.04 and frame_seconds(None, 0.0) == 0.0
    assert frame_seconds(None, MAX_RATE) == 1 / MAX_RATE and frame_seconds(None, 1.0) == 1.0


def test_the_timeline_rule_at_its_bounds():
    line = Timeline(0.0)
    assert line.place(0.0, 0.125) == 0.0
    assert line.place(0.125 + MAX_GAP, 0.125) == 0.125 + MAX_GAP  # exactly the bound: held
    assert line.jumps == []
    assert line.place(0.25 + 2 * MAX_GAP + 0.01, 0.125) == 0.25 + MAX_GAP  # past it: a jump
    # skipped packets explain a longer gap: the frame before stays on screen over them
    t = line.place(0.25 + 2 * MAX_GAP + 0.01 + 0.125 + MAX_GAP + 1.0, 0.125, allowance=1.0)
    assert len(line.jumps) == 1 and t == pytest.approx(0.25 + 2 * MAX_GAP + 1.0 + 0.125)
    # a step back of less than a frame is jitter, more is a jump
    line = Timeline(0.0)
    line.place(1.0, 0.125)
    line.place(0.9, 0.125)
    assert line.jumps == []
    line.place(0.7, 0.125)
    assert len(line.jumps) == 1 and line.jumps[0].after == 0.7
    line.place(0.575, 0.125)  # exactly one frame back: still jitter
    assert len(line.jumps) == 1
    # a frame without a duration tolerates JITTER seconds back, no more
    line = Timeline(0.0)
    line.place(1.0, 0.0)
    line.place(1.0 - JITTER / 2, 0.0)
    assert line.jumps == []
    line.place(1.0 - JITTER / 2 - 1.5 * JITTER, 0.0)
    assert len(line.jumps) == 1
    line = Timeline(0.0)
    line.place(0.0, 1 / 3)
    line.place(MAX_GAP + 1.0, 0.1)
    assert line.jumps[0].at == 0.333  # where it is, to the millisecond
    # a stream whose first frame is within MAX_GAP of its start keeps that offset; further
    # away (a start time that lies), the first frame starts the timeline
    line = Timeline(100.0)
    assert line.place(100.0 + MAX_GAP, 0.1) == MAX_GAP and line.jumps == []
    line = Timeline(100.0)
    assert line.place(100.0 + MAX_GAP + 0.01, 0.1) == 0.0 and line.jumps[0].before == 100.0
    line = Timeline(100.0)
    assert line.place(100.0 - MAX_GAP - 0.01, 0.1) == 0.0 and len(line.jumps) == 1


def test_a_replay_is_dropped_and_a_restarted_clock_is_not():
    shown = Shown()
    first = Timeline(0.0, shown)
    for i in range(10):
        first.place(i / 8, 0.125, fingerprint=lambda i=i: b"key%d" % i if i % 4 == 0 else None)
    assert shown.last == 9 / 8
    # the same key frame at the same time: a replay, dropped up to where the last one ended
    again = Timeline(None, shown)
    got = [again.place(i / 8, 0.125, fingerprint=lambda i=i: b"key%d" % i) for i in range(4, 12)]
    assert got[:6] == [None] * 6 and got[6:] == [0.0, 0.125] and again.replayed == 6
    # a replay starting at the very frame where the last connection ended
    shown = Shown()
    Timeline(0.0, shown).place(1.0, 0.125, fingerprint=lambda: b"last")
    again = Timeline(None, shown)
    assert again.place(1.0, 0.125, fingerprint=lambda: b"last") is None
    # different pixels at a time already passed: the source restarted its clock, nothing dropped
    restarted = Timeline(None, shown)
    got = [restarted.place(i / 8, 0.125, fingerprint=lambda: b"other") for i in range(3)]
    assert got == [0.0, 0.125, 0.25] and restarted.replayed == 0 and restarted.jumps == []


def lossless_h264(path: Path, n: int = 48, size: int = 48) -> Path:
    """Lossless H.264 (as Synth-TAL writes it) of moving noise, one key frame every 16."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.codec_context.thread_count = 1
        s.options = {"qp": "0", "preset": "veryfast", "g": "16"}
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.roll(base, i, axis=1), format="rgb24")
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def plain_decode(path: Path) -> tuple[list[np.ndarray], int, bool]:
    """Every frame as FFmpeg decodes it by default, how many packets raised, and whether FFmpeg
    logged an error it decoded past (its own words, independent of the frames' flags)."""
    frames, raised = [], 0
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture(local=False) as logs, av.open(str(path)) as c:
            for packet in c.demux(c.streams.video[0]):
                try:
                    frames += [f.to_ndarray(format="rgb24") for f in packet.decode()]
                except av.FFmpegError:
                    raised += 1
    finally:
        av.logging.set_level(level)
    words = ("error while decoding", "concealing")  # h264's own log lines for a damaged slice
    return frames, raised, any(w in line[2] for line in logs for w in words)


@pytest.fixture(scope="module")
def concealed(tmp_path_factory) -> tuple[Path, Path]:
    """A clean lossless H.264 MP4 and a copy with bytes overwritten mid-file that FFmpeg
    decodes without raising, with changed pixels, logging a decoding error it went past.
    The offsets are searched (the first that conceals), so the input is what the test says.
    (Damage that still parses as valid H.264 gives no signal at all: see the known gaps.)"""
    folder = tmp_path_factory.mktemp("conceal")
    clean = lossless_h264(folder / "clean.mp4")
    want, _, _ = plain_decode(clean)
    data = clean.read_bytes()
    rng = np.random.default_rng(0)
    for at in range(len(data) // 2, 3 * len(data) // 4, 97):
        bad = bytearray(data)
        bad[at : at + 24] = rng.integers(0, 256, 24, dtype=np.uint8).tobytes()
        path = folder / "damaged.mp4"
        path.write_bytes(bytes(bad))
        got, raised, concealing = plain_decode(path)
        same = len(got) == len(want) and all(map(np.array_equal, got, want))
        if concealing and not raised and len(got) == len(want) and not same:
            return clean, path
    raise AssertionError("no overwrite FFmpeg conceals was found")


def test_corruption_the_decoder_conceals_is_reported_as_damage(concealed):
    clean, damaged = concealed
    frames, reader, _ = read(damaged)
    assert reader.concealed >= 1 and reader.corrupt == 0
    (clause,) = reader.damage
    assert "concealed" in clause
    with pytest.raises(LofiError, match="concealed"):
        read_video(damaged, FPS)
    # no false positive on the clean file
    frames, reader, _ = read(clean)
    assert reader.concealed == 0 and reader.damage == [] and len(frames) == 48


def test_synth_tal_videos_show_no_damage(tiny_synth):
    videos = sorted((tiny_synth / "videos").glob("*.mp4"))
    assert videos
    for path in videos:
        reader = VideoReader(path, FPS, (16, 16))
        assert sum(1 for _ in reader) > 0
        assert (reader.concealed, reader.damage, reader.corrupt, reader.truncated) == (
            0,
            [],
            0,
            None,
        ), path


def test_lofi_stream_reports_concealed_corruption_as_damaged(tmp_path, tiny_bundle, concealed):
    _, damaged = concealed
    p, results, stats = stream_json(tmp_path, tiny_bundle, str(damaged))
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    (warning,) = [x for x in lines(p.stderr) if x.startswith("warning:")]
    assert "damaged.mp4" in warning and "concealed" in warning
    (record,) = stats["sources"]
    assert record["status"] == "damaged" and record["concealed_frames"] >= 1
    assert stats["damaged"] == 1 and stats["warnings"] == 1 and results is not None


def test_a_live_source_remembers_a_bounded_number_of_key_frames(monkeypatch):
    import lofi.runtime.timeline as timeline

    monkeypatch.setattr(timeline, "MAX_KEYS", 2)
    shown = Shown()
    for i in range(3):
        shown.remember(float(i), b"k%d" % i)
    shown.remember(3.0, None)  # not a key frame: nothing to remember but where it ended
    assert list(shown.keys) == [1.0, 2.0] and shown.last == 3.0
    assert shown.replays(2.0, b"k2") and not shown.replays(0.0, b"k0")
    assert not shown.replays(2.0, None) and not shown.replays(2.0, b"k1")
