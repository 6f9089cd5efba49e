"""Synth-TAL is deterministic from its seed."""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
from lofi.runtime.decode import read_video
from lofi.trainer.synth import generate

from tests.conftest import TINY


def synth_cli(out, seed):
    """`lofi-data synth` in a fresh process, as a user runs it."""
    code = "import sys; from lofi.trainer.cli import data_cli; sys.argv = sys.argv[1:]; data_cli()"
    args = [
        "lofi-data",
        "synth",
        str(out),
        "--train-videos",
        "2",
        "--val-videos",
        "1",
        "--classes",
        "4",
        "--clip-classes",
        "2",
        "--clips-per-class",
        "1",
        "--size",
        "32x32",
        "--duration",
        "8:12",
        "--seed",
        str(seed),
    ]
    subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, timeout=300
    )
    return json.loads((out / "annotations.json").read_text())["database"]


def test_same_seed_same_annotations_and_frames(tmp_path):
    a, b = synth_cli(tmp_path / "a", 5), synth_cli(tmp_path / "b", 5)
    assert a == b
    for vid in a:
        fa = read_video(tmp_path / "a" / "videos" / f"{vid}.mp4", 8.0)
        fb = read_video(tmp_path / "b" / "videos" / f"{vid}.mp4", 8.0)
        assert np.array_equal(fa, fb)
    c = synth_cli(tmp_path / "c", 6)
    assert c != a


def test_other_seed_differs(tmp_path, tiny_synth):
    cfg = replace(TINY, seed=TINY.seed + 1, train_videos=1, val_videos=1, clips_per_class=1)
    generate(tmp_path / "b", cfg)
    b = json.loads((tmp_path / "b" / "annotations.json").read_text())["database"]
    ref = json.loads((tiny_synth / "annotations.json").read_text())["database"]
    assert b["synth_train_0000"] != ref["synth_train_0000"]
    fb = read_video(tmp_path / "b" / "videos" / "synth_train_0000.mp4", 8.0)
    fr = read_video(tiny_synth / "videos" / "synth_train_0000.mp4", 8.0)
    assert fb.shape != fr.shape or not np.array_equal(fb, fr)


def test_annotations_are_valid_and_classes_come_in_direction_pairs(tiny_synth):
    from lofi.runtime.annotations import load_ground_truth

    gt = load_ground_truth(tiny_synth / "annotations.json")
    assert {i.subset for i in gt.videos.values()} == {"training", "validation"}
    for info in gt.videos.values():
        for s in info.segments:
            assert 0 <= s.start < s.end <= info.duration + 1e-6
    clips = load_ground_truth(tiny_synth / "clips.json")
    assert not set(clips.labels) & set(gt.labels)


def test_videos_are_lossless_so_decoding_cannot_vary(tmp_path):
    # libx264's lossy output varied with memory layout between runs; lossless it cannot: the
    # decoded YUV planes are exactly the converted input frames
    import av
    from lofi.trainer.synth import CLIP_MOTIONS, render_clip, write_mp4

    frames = render_clip(TINY, 0, CLIP_MOTIONS[0])
    write_mp4(tmp_path / "c.mp4", frames, TINY.fps)
    with av.open(str(tmp_path / "c.mp4")) as c:
        decoded = [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]
    sent = [
        av.VideoFrame.from_ndarray(img, format="rgb24").to_ndarray(format="yuv420p")
        for img in frames
    ]
    assert len(decoded) == len(sent) == len(frames)
    assert all(np.array_equal(a, b) for a, b in zip(decoded, sent))
