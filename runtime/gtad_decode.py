"""G-TAD head outputs of one video -> labelled segments in seconds (torch-free).

The one definition of the proposal map lives here (`proposal_map`), so the trainer's head
(SGAlign sampling), its targets and this decoder cannot disagree on what an entry means:
entry (d, s) of a (D, T) map is the segment from snippet s to snippet s + d + 1, in snippet
coordinates of the `resize` grid (position i is snippet i's centre, `SnippetGrid.time(i)`).
"""

from __future__ import annotations

import numpy as np
from lofi.runtime.annotations import Segment
from lofi.runtime.postprocess import Candidates, PostConfig, finalize
from lofi.runtime.snippets import SnippetGrid


def proposal_map(length: int, max_duration: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(D, T) start and end positions of every map entry, and whether it lies in the video
    (end <= T - 1); durations run 1..D snippets."""
    start = np.broadcast_to(np.arange(length, dtype=np.float64), (max_duration, length))
    end = start + np.arange(1, max_duration + 1, dtype=np.float64)[:, None]
    return start, end, end <= length - 1


def boundary_candidates(prob: np.ndarray, always: int) -> np.ndarray:
    """BMN/G-TAD boundary selection: local peaks, anything above half the maximum, and the
    video's own edge (`always`: 0 for starts, -1 for ends), which a peak test cannot see."""
    keep = prob > 0.5 * prob.max()
    keep[1:-1] |= (prob[1:-1] > prob[:-2]) & (prob[1:-1] > prob[2:])
    keep[always] = True
    return keep


def gtad_candidates(
    start: np.ndarray,
    end: np.ndarray,
    confidence: np.ndarray,
    class_probs: np.ndarray,
    grid: SnippetGrid,
    score_threshold: float,
) -> Candidates:
    """start/end (T,), confidence (2, D, T) [regression, classification], class_probs (K, T)
    per-snippet class distribution -> scored, labelled proposals in seconds.

    score = start * end * conf_reg * conf_cls * p(label): G-TAD's proposal score times the
    class probability, as G-TAD on ActivityNet multiplies by its video-level classifier's
    score; here p is the mean of the per-snippet class distribution over the proposal."""
    length = len(start)
    s_pos, e_pos, valid = proposal_map(length, confidence.shape[1])
    s_idx, e_idx = s_pos.astype(np.int64), e_pos.astype(np.int64)
    ok = valid & boundary_candidates(start, 0)[s_idx]
    ok &= boundary_candidates(end, -1)[np.minimum(e_idx, length - 1)]
    d, s = np.nonzero(ok)
    e = e_idx[d, s]
    score = start[s] * end[e] * confidence[0, d, s] * confidence[1, d, s]
    cum = np.concatenate([np.zeros((len(class_probs), 1)), np.cumsum(class_probs, 1)], 1)
    mean = (cum[:, e + 1] - cum[:, s]) / (e - s + 1)  # snippets s..e inclusive
    label = np.argmax(mean, 0)
    score = score * mean[label, np.arange(len(label))]
    c = Candidates(
        np.asarray(grid.time(s), dtype=np.float64),
        np.asarray(grid.time(e), dtype=np.float64),
        score.astype(np.float64),
        label.astype(np.int64),
    )
    return c.take(c.score > score_threshold)


def gtad_detect(
    outputs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    grid: SnippetGrid,
    duration: float,
    labels: list[str],
    post: PostConfig,
    video: str,
) -> list[Segment]:
    """One video's head outputs (start, end, confidence, class_probs: the exported head's four
    outputs without the batch axis) -> the runtime's soft-NMS and top `post.max_segments`."""
    c = gtad_candidates(*outputs, grid, post.score_threshold)
    c = finalize(c, duration, post)
    return [
        Segment(video, labels[int(lab)], float(a), float(b), float(p))
        for a, b, p, lab in zip(c.start, c.end, c.score, c.label)
    ]
