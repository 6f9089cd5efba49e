"""The compact frame cache: packed JPEG frames read back like arrays, worker processes decode
the same cache as one process, loader threads return the same frames as one thread, and caches
of another format or damaged files are refused in one line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from lofi.runtime.errors import LofiError
from lofi.trainer.data import FrameCache, prepare_cache
from lofi.trainer.frame_store import open_frames, write_frames


def smooth_frames(n: int = 6, h: int = 24, w: int = 40) -> np.ndarray:
    """Gradients that move: what JPEG keeps almost exactly (unlike noise)."""
    y, x = np.mgrid[0:h, 0:w]
    t = np.arange(n)[:, None, None]
    r = 120 + 80 * np.sin((x + 2 * t) / 9.0)
    g = 100 + 60 * np.cos((y - t) / 7.0)
    b = np.broadcast_to(90 + 2 * (x + y), r.shape)
    return np.stack([r, g, b], -1).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["jpeg", "npy"])
def test_stored_frames_read_back_like_an_array(tmp_path, fmt):
    frames = smooth_frames()
    digest = write_frames(tmp_path / "v", frames, fmt, quality=95)
    assert digest == hashlib.sha256((tmp_path / "v").read_bytes()).hexdigest()
    store = open_frames(tmp_path / "v", fmt)
    whole = np.asarray(store)
    assert len(store) == 6 and whole.shape == frames.shape and whole.dtype == np.uint8
    err = np.abs(whole.astype(int) - frames).mean()
    assert err == 0 if fmt == "npy" else err < 2.0
    idx = np.array([[5, 0], [2, 2]])
    for key in (3, -1, slice(1, 4), idx):
        assert np.array_equal(np.asarray(store[key]), whole[key])
    assert not list(tmp_path.glob("*.tmp"))


def test_workers_decode_the_same_cache_smaller_than_raw_arrays(tmp_path, tiny_synth):
    ann, videos = tiny_synth / "annotations.json", tiny_synth / "videos"
    one = prepare_cache(ann, videos, tmp_path / "one", 8.0, (48, 48), fmt="jpeg", workers=1)
    two = prepare_cache(ann, videos, tmp_path / "two", 8.0, (48, 48), fmt="jpeg", workers=2)
    raw = prepare_cache(ann, videos, tmp_path / "raw", 8.0, (48, 48), fmt="npy")
    assert one.decoded == two.decoded == raw.decoded and one.frames == two.frames == raw.frames
    a, b, c = (FrameCache(tmp_path / d) for d in ("one", "two", "raw"))
    for vid in one.decoded:
        assert np.array_equal(np.asarray(a.frames(vid)), np.asarray(b.frames(vid)))
        assert np.abs(np.asarray(a.frames(vid)).astype(int) - c.frames(vid)).mean() < 4
    assert one.bytes == two.bytes and one.bytes * 3 < raw.bytes
    assert json.loads((tmp_path / "one" / "index.json").read_text())["format"] == "jpeg"


@pytest.mark.parametrize("fmt", ["jpeg", "npy"])
def test_loader_workers_return_what_one_process_reads(tmp_path, tiny_synth, monkeypatch, fmt):
    from lofi.trainer import frame_cache

    monkeypatch.setattr(frame_cache, "PROCESS_MIN_FRAMES", 1)  # worker processes for JPEG
    ann, videos = tiny_synth / "annotations.json", tiny_synth / "videos"
    prepare_cache(ann, videos, tmp_path, 8.0, (32, 32), fmt=fmt)
    serial, parallel = FrameCache(tmp_path, workers=1), FrameCache(tmp_path, workers=2)
    rng = np.random.default_rng(0)
    requests = [
        (vid, rng.integers(0, len(serial.frames(vid)), size=5))
        for vid in list(serial.index["videos"]) * 3
    ]
    got = parallel.read(requests)
    assert (parallel._decoders is not None) == (fmt == "jpeg")
    for (vid, idx), want, frames in zip(requests, serial.read(requests), got):
        assert np.array_equal(frames, want) and np.array_equal(want, serial.frames(vid)[idx])


def test_other_formats_old_indexes_and_damaged_files(tmp_path, tiny_synth):
    ann, videos = tiny_synth / "annotations.json", tiny_synth / "videos"
    out = tmp_path / "c"
    prepare_cache(ann, videos, out, 8.0, (16, 16), fmt="npy")
    with pytest.raises(LofiError, match="16x16, npy; asked for 8 fps, 16x16, jpeg"):
        prepare_cache(ann, videos, out, 8.0, (16, 16), fmt="jpeg")
    index = json.loads((out / "index.json").read_text())
    del index["format"]  # caches written before the format was recorded hold arrays
    (out / "index.json").write_text(json.dumps(index))
    assert FrameCache(out).format == "npy"

    out = tmp_path / "j"
    report = prepare_cache(ann, videos, out, 8.0, (16, 16), fmt="jpeg")
    vid = report.decoded[0]
    Path(out / f"{vid}.jpgs").write_bytes(b"\x00" * 40)
    with pytest.raises(LofiError, match=f"cannot read video '{vid}'.*prepare again"):
        FrameCache(out).frames(vid)


def test_prepare_takes_only_the_subsets_asked_for(tmp_path, tiny_synth):
    ann, videos = tiny_synth / "annotations.json", tiny_synth / "videos"
    report = prepare_cache(ann, videos, tmp_path, 8.0, (16, 16), subsets=("validation",))
    assert sorted(report.decoded) == ["synth_val_0000", "synth_val_0001"]
    with pytest.raises(LofiError, match="no subset testing \\(it has training, validation\\)"):
        prepare_cache(ann, videos, tmp_path, 8.0, (16, 16), subsets=("testing",))
