"""NMS, decoding and the streaming finaliser against offline post-processing."""

import numpy as np
from lofi.runtime.postprocess import Candidates, PostConfig, StreamingFinalizer, finalize, nms


def cands(rows):
    a = np.array(rows, dtype=float).reshape(-1, 4)
    return Candidates(a[:, 0], a[:, 1], a[:, 2], a[:, 3].astype(np.int64))


def test_hard_nms_suppresses_overlaps_of_same_class_only():
    c = cands([[0, 10, 0.9, 0], [1, 10, 0.8, 0], [1, 10, 0.7, 1], [20, 30, 0.6, 0]])
    out = nms(c, PostConfig(nms="hard", iou_threshold=0.5))
    kept = sorted(zip(out.start, out.label))
    assert kept == [(0, 0), (1, 1), (20, 0)]


def test_soft_nms_decays_instead_of_removing():
    c = cands([[0, 10, 0.9, 0], [0, 10, 0.8, 0]])
    out = nms(c, PostConfig(nms="soft", sigma=0.5))
    assert len(out) == 2
    assert np.isclose(sorted(out.score)[0], 0.8 * np.exp(-1 / 0.5))


def test_streaming_finaliser_equals_offline():
    rng = np.random.default_rng(0)
    cfg = PostConfig(nms="soft", max_segments=10_000)
    starts = np.sort(rng.uniform(0, 200, 400))
    rows = np.stack(
        [
            starts,
            starts + rng.uniform(0.5, 8, 400),
            rng.uniform(0.05, 1, 400),
            rng.integers(0, 3, 400),
        ],
        1,
    )
    all_c = cands(rows)
    offline = finalize(all_c, 210.0, cfg)
    fin = StreamingFinalizer(cfg)
    got = []
    # candidates arrive in 10 s slices of start time, so later ones never start before t + 10
    for t in np.arange(0, 200, 10.0):
        sel = (rows[:, 0] >= t) & (rows[:, 0] < t + 10)
        got.append(fin.push(cands(rows[sel]), safe_before=t + 10))
    got.append(fin.push(Candidates.empty(), float("inf"), duration=210.0))
    streamed = Candidates.concat(got)
    key = lambda c: sorted(
        zip(np.round(c.start, 9), np.round(c.end, 9), np.round(c.score, 12), c.label)
    )
    assert key(streamed) == key(offline)


def test_a_group_closes_without_waiting_for_other_classes():
    # NMS is per class, so a long class-1 candidate overlapping a class-0 one must not hold it
    fin = StreamingFinalizer(PostConfig(nms="hard"))
    out = fin.push(cands([[0, 10, 0.9, 0], [5, 40, 0.8, 1]]), safe_before=12.0)
    assert list(zip(out.start, out.label)) == [(0, 0)]
    out = fin.push(Candidates.empty(), float("inf"), duration=50.0)
    assert list(zip(out.start, out.label)) == [(5, 1)]


def test_memory_bound_closes_the_group_that_started_first():
    fin = StreamingFinalizer(PostConfig(nms="hard"), max_pending=1)
    out = fin.push(cands([[30, 60, 0.9, 0], [10, 50, 0.8, 1]]), safe_before=0.0)
    assert list(zip(out.start, out.label)) == [(10, 1)]
