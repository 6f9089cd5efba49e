"""One time convention for training targets and decoding (DESIGN.md): snippet i covers frames
[i*hop, i*hop + k*frame_stride) and stands for the centre of that span; pyramid position j of
stride s stands for snippets [j*s, (j+1)*s), whose centre is j*s + (s - 1)/2.

The targets the trainer builds (trainer/data.py windows, trainer/losses.py assign) fed as a
perfect head's outputs to the runtime's decoding (runtime/postprocess.py decode_level) must give
back the annotated seconds. With k*frame_stride (8) unlike the hop (4), half a snippet, half a
span and half a hop are different shifts, so moving either side by any of them fails here."""

from __future__ import annotations

import numpy as np
import pytest
from lofi.runtime.annotations import GroundTruth, Segment, VideoInfo
from lofi.runtime.postprocess import PostConfig, decode_level
from lofi.runtime.snippets import SnippetGrid
from lofi.trainer.data import SnippetSpec, video_windows, window_targets

from tests.test_windows import Cache

FPS = 8.0
STRIDES = [1, 2, 4]
SPEC = SnippetSpec(k=4, frame_stride=2, hop=4, window=32)
# (start, end) seconds, one label each, so every decoded candidate names its segment; short
# ones land on level 0, long ones on the coarser levels
SEGMENTS = {"a": (3.3, 4.1), "b": (7.15, 9.9), "c": (12.2, 19.45), "d": (22.6, 30.3)}


@pytest.mark.parametrize("hop, k, stride", [(4, 4, 2), (4, 4, 1), (2, 3, 1)])
def test_a_snippet_covers_its_frames_and_stands_for_their_centre(hop, k, stride):
    grid = SnippetGrid(FPS, k, stride, hop)
    idx = grid.frame_indices(0, 10, 10_000)
    for i, frames in enumerate(idx):
        assert frames.tolist() == list(range(i * hop, i * hop + k * stride, stride))
        # the span [first, last + stride) in frames, its centre in seconds
        assert grid.time(i) == pytest.approx((frames[0] + frames[-1] + stride) / 2 / FPS)
        assert grid.index(grid.time(i)) == pytest.approx(i)


def test_targets_decode_back_to_the_annotated_seconds():
    labels = list(SEGMENTS)
    n_frames = 8 * 36  # 36 s, 71 snippets: windows at 0, 16, 32 and 39 (off every stride)
    gt = GroundTruth(
        {"v": VideoInfo("training", 36.0, [Segment("v", c, *SEGMENTS[c]) for c in labels])},
        labels,
    )
    windows = video_windows(gt, Cache({"v": n_frames}), SPEC, 1, labels)
    assert [w.first for w in windows] == [0, 16, 32, 39]
    targets = window_targets(windows, STRIDES, len(labels))
    post = PostConfig(score_threshold=0.5)
    decoded = levels = 0
    for w, (cls_t, reg_t) in zip(windows, targets):
        offset = w.first * w.grid.hop / FPS  # the window's snippet 0 is the video's `first`
        at = 0
        for s in STRIDES:
            n = w.length // s
            cls, reg = cls_t[at : at + n].T.numpy(), reg_t[at : at + n].T.numpy()
            at += n
            got = decode_level(np.where(cls > 0, 30.0, -30.0), reg, s, 0, w.grid, 1e9, post)
            levels += len(got.start) > 0
            for start, end, label in zip(got.start, got.end, got.label):
                a, b = SEGMENTS[labels[label]]
                # decoding clamps a start before time 0: here the window's first second
                want = (max(a, offset), b)
                assert (start + offset, end + offset) == pytest.approx(want, abs=1e-5)
                decoded += 1
        assert at == len(cls_t)
    assert decoded > 20 and levels >= 4  # positives on every level, in several windows
