"""Training windows (trainer/data.py video_windows) cover every snippet of every video, the last
one included, whatever the video's length against the window stride; each window carries the
segments that overlap it, in its own snippet coordinates."""

from __future__ import annotations

import numpy as np
import pytest
from lofi.runtime.annotations import GroundTruth, Segment, VideoInfo
from lofi.trainer.data import SnippetSpec, video_windows

FPS = 8.0
SPEC = SnippetSpec(k=4, frame_stride=2, hop=4, window=16)


class Cache:
    """What video_windows reads of a frame cache: its fps and each video's frame count."""

    fps = FPS

    def __init__(self, frames: dict[str, int]):
        self.n = frames

    def frames(self, vid: str) -> np.ndarray:
        return np.zeros((self.n[vid], 1), np.uint8)


def windows_of(n_frames: int, r_t: int = 1, spec: SnippetSpec = SPEC, segments=()):
    segs = [Segment("v", "a", s, e) for s, e in segments]
    gt = GroundTruth({"v": VideoInfo("training", n_frames / FPS, segs)}, ["a"])
    return video_windows(gt, Cache({"v": n_frames}), spec, r_t, ["a"])


@pytest.mark.parametrize("r_t", [1, 2])
@pytest.mark.parametrize("n_frames", [7, 64, 65, 71, 100, 151, 173])
def test_windows_cover_every_snippet_and_frame_to_the_last(n_frames, r_t):
    # lengths on and off the window stride (8 snippets of hop 4 at r_t 1)
    ws = windows_of(n_frames, r_t)
    grid, length = SPEC.grid(FPS, n_frames, r_t)
    total = grid.count(n_frames)
    assert all(w.n_snippets == total and w.length == length for w in ws)
    covered = {w.first + i for w in ws for i in range(w.length)}
    assert set(range(total)) <= covered  # the last snippet, total - 1, included
    firsts = [w.first for w in ws]
    assert firsts == sorted(set(firsts)) and firsts[0] == 0  # no window twice
    assert max(firsts) == max(total - length, 0)  # the last ends at the video's last snippet
    # every frame a snippet takes is read by some window, and the last snippet's span,
    # [start, start + k * frame_stride), reaches the video's end
    read = np.unique(np.concatenate([w.frame_index().ravel() for w in ws]))
    assert {f for f in range(n_frames) if grid.uses(f)} <= set(read.tolist())
    last = ws[-1].frame_index()[total - 1 - ws[-1].first]
    assert last[0] + SPEC.k * SPEC.frame_stride >= n_frames > last[0]
    # padding is marked: a window's valid snippets are the video's, no more
    assert all(int(w.valid().sum()) == min(total - w.first, length) for w in ws)


def test_window_starts_step_by_half_a_window_then_end_on_the_last_snippet():
    # 151 frames: 37 snippets of hop 4 (the last runs past the end); windows of 16, step 8
    assert [w.first for w in windows_of(151)] == [0, 8, 16, 21]
    assert [w.first for w in windows_of(68)] == [0]  # 16 snippets: one window exactly
    assert [w.first for w in windows_of(164)] == [0, 8, 16, 24]  # 40 snippets = 24 + 16
    two = SnippetSpec(k=4, frame_stride=2, hop=4, window=2)  # steps of one snippet
    assert [w.first for w in windows_of(20, spec=two)] == [0, 1, 2]  # 4 snippets


def test_a_video_shorter_than_a_window_is_one_padded_window():
    (w,) = windows_of(20)
    assert (w.first, w.length, w.n_snippets) == (0, 16, 4)
    assert w.valid().tolist() == [True] * 4 + [False] * 12
    # however short the window (a step of one snippet), and the video (one snippet)
    (w,) = windows_of(8, spec=SnippetSpec(k=4, frame_stride=2, hop=4, window=2))
    assert (w.first, w.length, w.n_snippets) == (0, 2, 1)


def test_resize_mode_spreads_one_window_over_the_whole_video():
    spec = SnippetSpec(k=4, frame_stride=2, hop=4, window=16, mode="resize")
    for n in (50, 173):
        (w,) = windows_of(n, 2, spec)
        assert (w.first, w.length, w.n_snippets) == (0, 8, 8)
        assert w.frame_index()[-1, 0] + spec.k * spec.frame_stride >= n  # to the end


def test_each_window_gets_the_segments_that_overlap_it_in_its_own_coordinates():
    # 151 frames, windows at 0, 8, 16, 21 (16 snippets each); segments in snippet indices:
    # one inside, one to the video's end, and three on window edges (touching is not overlap)
    grid, _ = SPEC.grid(FPS, 151, 1)
    spans = [(10.0, 14.5), (30.0, 36.0), (2.0, 8.0), (7.0, 8.5), (24.0, 26.0)]
    ws = windows_of(151, segments=[(float(grid.time(a)), float(grid.time(b))) for a, b in spans])
    got = {
        w.first: [tuple(round(x, 6) for x in row[:2]) for row in w.segments.tolist()] for w in ws
    }
    assert got == {
        0: [(10.0, 14.5), (2.0, 8.0), (7.0, 8.5)],
        8: [(2.0, 6.5), (-1.0, 0.5)],  # (2, 8) ends where this window starts: not in it
        16: [(14.0, 20.0), (8.0, 10.0)],
        21: [(9.0, 15.0), (3.0, 5.0)],
    }  # (24, 26) starts where window 8 ends: not in it


def test_valid_marks_positions_past_the_videos_last_snippet_as_padding():
    import torch
    from lofi.trainer.data import Window

    grid, _ = SPEC.grid(FPS, 40, 1)
    w = Window("v", 4, 8, grid, 40, 10, torch.zeros(0, 3))
    assert w.valid().tolist() == [True] * 6 + [False] * 2
