"""Head outputs -> scored segments -> NMS / soft-NMS; also the streaming finaliser.

Offline and streaming use the same decoding and the same NMS. NMS never lets two segments that
do not overlap interact, so NMS over all candidates equals NMS run separately on each connected
group of overlapping candidates; the streaming finaliser runs it on a group as soon as no future
candidate can overlap the group (its latest end lies before the stream frontier minus the reach).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from lofi.runtime.annotations import Segment
from lofi.runtime.evaluation import segment_iou
from lofi.runtime.snippets import SnippetGrid

if TYPE_CHECKING:  # the bundle module imports this one
    from lofi.runtime.bundle import Manifest

# per pyramid level: (cls logits (C, n), regression (2, n))
LevelOutputs = list[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class PostConfig:
    score_threshold: float = 0.05
    nms: str = "soft"  # "soft" (Gaussian soft-NMS) or "hard"
    iou_threshold: float = 0.5
    sigma: float = 0.5
    min_score: float = 0.001
    max_segments: int = 100

    @classmethod
    def from_dict(cls, d: dict) -> PostConfig:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class Candidates:
    """Segments in seconds with class index and score (parallel arrays)."""

    start: np.ndarray
    end: np.ndarray
    score: np.ndarray
    label: np.ndarray

    @classmethod
    def empty(cls) -> Candidates:
        z = np.zeros(0)
        return cls(z, z.copy(), z.copy(), np.zeros(0, dtype=np.int64))

    @classmethod
    def concat(cls, parts: list[Candidates]) -> Candidates:
        if not parts:
            return cls.empty()
        return cls(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("start", "end", "score", "label")
            )
        )

    def take(self, mask: np.ndarray) -> Candidates:
        return Candidates(self.start[mask], self.end[mask], self.score[mask], self.label[mask])

    def __len__(self) -> int:
        return len(self.score)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def decode_level(
    cls_logits: np.ndarray,
    reg: np.ndarray,
    stride: int,
    first_position: int,
    grid: SnippetGrid,
    max_reach: float,
    cfg: PostConfig,
) -> Candidates:
    """One pyramid level: cls (C, n) logits and reg (2, n) distances in units of `stride`, for
    positions first_position..; position j stands for snippets [j*stride, (j+1)*stride)."""
    scores = sigmoid(cls_logits)
    cls_idx, pos = np.nonzero(scores > cfg.score_threshold)
    if len(pos) == 0:
        return Candidates.empty()
    centre = (first_position + pos) * stride + (stride - 1) / 2.0
    dist = np.minimum(np.maximum(reg[:, pos].astype(np.float64), 0.0) * stride, max_reach)
    start = grid.time(centre - dist[0])
    end = grid.time(centre + dist[1])
    return Candidates(np.maximum(start, 0.0), end, scores[cls_idx, pos], cls_idx.astype(np.int64))


def _order(c: Candidates) -> np.ndarray:
    """Canonical ranking (score desc, then start, end, label) so ties never depend on arrival."""
    return np.lexsort((c.label, c.end, c.start, -c.score))


def nms(c: Candidates, cfg: PostConfig) -> Candidates:
    """Per-class hard NMS or Gaussian soft-NMS; returns survivors (scores decayed for soft).
    Hard NMS removes a segment whose tIoU with a kept one exceeds `iou_threshold` (one exactly at
    it stays); soft-NMS scales a score by exp(-tIoU^2 / sigma) and drops it below `min_score`.
    Segments must have positive length (`finalize` drops the rest first)."""
    keep_parts = []
    for lab in np.unique(c.label):
        g = c.take(c.label == lab)
        g = g.take(_order(g))
        start, end, score = g.start.copy(), g.end.copy(), g.score.copy()
        out_s, out_e, out_p = [], [], []
        alive = np.ones(len(score), dtype=bool)
        while alive.any():
            idx = np.flatnonzero(alive)
            best = idx[np.lexsort((end[idx], start[idx], -score[idx]))[0]]
            alive[best] = False
            out_s.append(start[best])
            out_e.append(end[best])
            out_p.append(score[best])
            rest = np.flatnonzero(alive)
            if len(rest) == 0:
                break
            iou = segment_iou(
                np.array([start[best], end[best]]), np.stack([start[rest], end[rest]], 1)
            )
            if cfg.nms == "hard":  # suppressed only past the threshold, as torchvision and mmcv
                alive[rest[iou > cfg.iou_threshold]] = False
            else:
                score[rest] *= np.exp(-(iou**2) / cfg.sigma)
                alive[rest[score[rest] < cfg.min_score]] = False
        keep_parts.append(
            Candidates(np.array(out_s), np.array(out_e), np.array(out_p), np.full(len(out_p), lab))
        )
    return Candidates.concat(keep_parts)


def finalize(c: Candidates, duration: float, cfg: PostConfig, cap: bool = True) -> Candidates:
    """Clip to the video, drop empty segments, NMS, and keep the top `max_segments`."""
    c = Candidates(np.clip(c.start, 0, duration), np.clip(c.end, 0, duration), c.score, c.label)
    c = nms(c.take(c.end - c.start > 1e-6), cfg)
    c = c.take(_order(c))
    return c.take(np.arange(len(c)) < cfg.max_segments) if cap else c


class StreamingFinalizer:
    """Holds candidates until no future same-class candidate can overlap their group, then
    NMS-es them.

    `max_pending` bounds memory on pathological streams: past it the oldest group is closed
    early (the one place streaming may then differ from offline besides the per-video cap).
    """

    def __init__(self, cfg: PostConfig, max_pending: int = 20000) -> None:
        self.cfg = cfg
        self.max_pending = max_pending
        self.pending = Candidates.empty()

    def push(self, c: Candidates, safe_before: float, duration: float | None = None) -> Candidates:
        """Add candidates; return those final now. `safe_before`: no future candidate starts
        earlier (seconds); pass `duration` (and safe_before=inf) when the stream has ended."""
        self.pending = Candidates.concat([self.pending, c])
        if len(self.pending) == 0:
            return Candidates.empty()
        # NMS is per class, so only same-class overlaps interact: groups are formed per class
        p = self.pending.take(np.lexsort((self.pending.start, self.pending.label)))
        group = np.zeros(len(p), dtype=np.int64)
        first = 0
        for lab in np.unique(p.label):
            idx = np.flatnonzero(p.label == lab)
            reach = np.maximum.accumulate(p.end[idx])
            # a new group starts where a candidate begins at or after everything before it ended
            group[idx[1:]] = first + np.cumsum(p.start[idx[1:]] >= reach[:-1])
            group[idx[0]] = first
            first = group[idx[-1]] + 1
        group_end = np.zeros(first)
        np.maximum.at(group_end, group, p.end)
        closed = group_end[group] <= safe_before
        if len(p) - closed.sum() > self.max_pending:  # close the group that started first
            waiting = np.flatnonzero(~closed)
            closed |= group == group[waiting[np.argmin(p.start[waiting])]]
        self.pending = p.take(~closed)
        done = p.take(closed)
        if len(done) == 0:
            return done
        limit = duration if duration is not None else float(np.max(done.end))
        return finalize(done, limit, self.cfg, cap=False)


@dataclass(frozen=True)
class HeadGeometry:
    """What decoding needs from a manifest, for callers (the trainer) that have no bundle."""

    labels: list[str]
    grid: SnippetGrid
    strides: list[int]
    max_reach: float
    post: PostConfig


def to_segments(c: Candidates, video: str, labels: list[str]) -> list[Segment]:
    return [
        Segment(video, labels[int(lab)], float(s), float(e), float(p))
        for s, e, p, lab in zip(c.start, c.end, c.score, c.label)
    ]


def decode_outputs(
    outputs: LevelOutputs, m: Manifest | HeadGeometry, first: int, last: int, n_snippets: int
) -> tuple[Candidates, LevelOutputs]:
    """Candidates of positions whose first snippet lies in [first, last) and before n_snippets;
    `outputs` start at snippet `first` on every level. Also returns the kept outputs."""
    parts, kept = [], []
    for (cls, reg), stride in zip(outputs, m.strides):
        lo = first // stride
        n = max(0, min((min(last, n_snippets) + stride - 1) // stride - lo, cls.shape[1]))
        cls, reg = cls[:, :n], reg[:, :n]
        kept.append((cls, reg))
        parts.append(decode_level(cls, reg, stride, lo, m.grid, m.max_reach, m.post))
    return Candidates.concat(parts), kept


def final_segments(
    cands: Candidates, m: Manifest | HeadGeometry, duration: float, video: str
) -> list[Segment]:
    """Clipping, NMS and the per-video cap: what offline inference keeps."""
    return to_segments(finalize(cands, duration, m.post), video, m.labels)


def detect(
    outputs: LevelOutputs, m: Manifest | HeadGeometry, n_snippets: int, duration: float, video: str
) -> list[Segment]:
    """Whole-video head outputs (from snippet 0) -> final segments, as offline inference keeps."""
    cands, _ = decode_outputs(outputs, m, 0, n_snippets, n_snippets)
    return final_segments(cands, m, duration, video)
