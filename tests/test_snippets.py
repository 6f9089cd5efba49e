import numpy as np
from lofi.runtime.snippets import SnippetGrid, resize_grid


def test_snippet_frames_and_times():
    g = SnippetGrid(fps=8.0, k=4, frame_stride=2, hop=4)
    assert g.span == 8
    assert g.count(8) == 1 and g.count(9) == 2 and g.count(20) == 4 and g.count(3) == 1
    idx = g.frame_indices(0, 3, 14)
    assert idx.tolist() == [[0, 2, 4, 6], [4, 6, 8, 10], [8, 10, 12, 13]]
    assert g.time(0) == 0.5  # centre of frames [0, 8) at 8 fps
    assert np.isclose(g.index(g.time(7.25)), 7.25)


def test_resize_grid_spreads_over_whole_video():
    g = resize_grid(8.0, 4, 1, 104, 26)
    idx = g.frame_indices(0, 26, 104)
    assert idx[0, 0] == 0 and idx[-1, -1] == 103
