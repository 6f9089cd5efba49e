"""Synth-TAL is deterministic from its seed."""

import json
from dataclasses import replace

import numpy as np
from lofi.runtime.decode import read_video
from lofi.trainer.synth import generate

from tests.conftest import TINY


def test_same_seed_same_annotations_and_frames(tmp_path, tiny_synth):
    cfg = replace(TINY, val_videos=1, clips_per_class=1)
    generate(tmp_path / "a", cfg)
    a = json.loads((tmp_path / "a" / "annotations.json").read_text())
    ref = json.loads((tiny_synth / "annotations.json").read_text())
    for vid in a["database"]:
        assert a["database"][vid] == ref["database"][vid]
        fa = read_video(tmp_path / "a" / "videos" / f"{vid}.mp4", 8.0)
        fb = read_video(tiny_synth / "videos" / f"{vid}.mp4", 8.0)
        assert np.array_equal(fa, fb)


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
