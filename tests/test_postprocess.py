"""NMS, decoding and the streaming finaliser against offline post-processing, with inputs whose
hand-worked answers tell the right convention from its neighbours."""

import numpy as np
import pytest
from lofi.runtime.postprocess import (
    Candidates,
    HeadGeometry,
    PostConfig,
    StreamingFinalizer,
    decode_level,
    decode_outputs,
    detect,
    finalize,
    nms,
)
from lofi.runtime.snippets import SnippetGrid


def cands(rows):
    a = np.array(rows, dtype=float).reshape(-1, 4)
    return Candidates(a[:, 0], a[:, 1], a[:, 2], a[:, 3].astype(np.int64))


def test_hard_nms_suppresses_overlaps_of_same_class_only():
    c = cands([[0, 10, 0.9, 0], [1, 10, 0.8, 0], [1, 10, 0.7, 1], [20, 30, 0.6, 0]])
    out = nms(c, PostConfig(nms="hard", iou_threshold=0.5))
    kept = sorted(zip(out.start, out.label))
    assert kept == [(0, 0), (1, 1), (20, 0)]


def test_hard_nms_keeps_a_segment_exactly_at_the_threshold():
    # [0, 5] has tIoU 5/10 = 0.5 with [0, 10]: kept at 0.5 (suppression is tIoU > threshold, as
    # torchvision's and mmcv's NMS), removed just below it
    c = cands(
        [[0, 10, 0.9, 0], [0, 5, 0.8, 0], [6, 16, 0.7, 0]]
    )  # the last: tIoU 4/16 with the first
    kept = nms(c, PostConfig(nms="hard", iou_threshold=0.5))
    assert sorted(zip(kept.start, kept.end)) == [(0, 5), (0, 10), (6, 16)]
    kept = nms(c, PostConfig(nms="hard", iou_threshold=0.4999))
    assert sorted(zip(kept.start, kept.end)) == [(0, 10), (6, 16)]
    kept = nms(c, PostConfig(nms="hard", iou_threshold=0.25))
    assert sorted(zip(kept.start, kept.end)) == [(0, 10), (6, 16)]  # 0.25 is not past 0.25
    kept = nms(c, PostConfig(nms="hard", iou_threshold=0.2))
    assert sorted(zip(kept.start, kept.end)) == [(0, 10)]


def test_hard_nms_suppresses_from_the_kept_ones_only():
    # [4, 14] is suppressed by [0, 10] (tIoU 6/14); [10, 20] overlaps [4, 14] (4/16) but not the
    # kept [0, 10]: a suppressed segment suppresses nothing, so [10, 20] stays
    c = cands([[0, 10, 0.9, 0], [4, 14, 0.8, 0], [10, 20, 0.7, 0]])
    kept = nms(c, PostConfig(nms="hard", iou_threshold=0.2))
    assert list(zip(kept.start, kept.end, kept.score)) == [(0, 10, 0.9), (10, 20, 0.7)]


def test_soft_nms_decays_instead_of_removing():
    c = cands([[0, 10, 0.9, 0], [0, 10, 0.8, 0]])
    out = nms(c, PostConfig(nms="soft", sigma=0.5))
    assert len(out) == 2
    assert np.isclose(sorted(out.score)[0], 0.8 * np.exp(-1 / 0.5))


def test_soft_nms_decays_partial_overlaps_by_the_gaussian():
    # [0, 10] 0.9 is kept first; [5, 15] (tIoU 1/3) and [0, 5] (tIoU 1/2) decay by
    # exp(-tIoU^2 / sigma); [5, 15] then ranks above [0, 5] and does not touch it (tIoU 0)
    c = cands([[0, 10, 0.9, 0], [5, 15, 0.8, 0], [0, 5, 0.7, 0]])
    out = nms(c, PostConfig(nms="soft", sigma=0.5, min_score=0.001))
    got = {(a, b): p for a, b, p in zip(out.start, out.end, out.score)}
    assert got == {
        (0, 10): 0.9,
        (5, 15): pytest.approx(0.8 * np.exp(-(1 / 9) / 0.5), rel=1e-12),
        (0, 5): pytest.approx(0.7 * np.exp(-0.25 / 0.5), rel=1e-12),
    }
    # decays compound and re-rank: after [0, 10], [2, 12] (tIoU 8/12) falls below [4, 14]
    # (tIoU 6/14), which is taken next and decays [2, 12] again (tIoU 8/12)
    c = cands([[0, 10, 0.9, 0], [2, 12, 0.85, 0], [4, 14, 0.8, 0]])
    out = nms(c, PostConfig(nms="soft", sigma=0.3, min_score=0.001))
    second = 0.8 * np.exp(-((6 / 14) ** 2) / 0.3)
    third = 0.85 * np.exp(-((8 / 12) ** 2) / 0.3) ** 2
    assert list(out.start) == [0, 4, 2]
    assert list(out.score) == pytest.approx([0.9, second, third], rel=1e-12)


def test_soft_nms_drops_below_min_score_and_keeps_it_exactly():
    # [0, 9] decays to 0.002 * exp(-0.81 / 0.5) < 0.001: dropped; [20, 30] at exactly min_score
    # (no overlap, no decay) stays
    c = cands([[0, 10, 0.9, 0], [0, 9, 0.002, 0], [20, 30, 0.001, 0]])
    out = nms(c, PostConfig(nms="soft", sigma=0.5, min_score=0.001))
    assert sorted(zip(out.start, out.score)) == [(0, 0.9), (20, 0.001)]


def test_finalize_clips_drops_empty_ranks_and_caps():
    c = cands(
        [
            [-2, 4, 0.5, 0],  # clipped to [0, 4]
            [95, 120, 0.7, 1],  # clipped to [95, 100]
            [100, 130, 0.99, 0],  # clipped to [100, 100]: empty, dropped
            [30, 30.0000005, 0.98, 0],  # shorter than 1e-6: dropped
            [50, 60, 0.6, 0],
            [70, 80, 0.6, 1],  # ties on score rank by start
            [-5, -1, 0.97, 1],  # wholly before the video: clipped to [0, 0], dropped
            [0, 1e-6, 0.96, 1],  # 1e-6 long: empty, dropped
        ]
    )
    out = finalize(c, 100.0, PostConfig(nms="hard"))
    assert list(zip(out.start, out.end, out.score, out.label)) == [
        (95, 100, 0.7, 1),
        (50, 60, 0.6, 0),
        (70, 80, 0.6, 1),
        (0, 4, 0.5, 0),
    ]
    kept = finalize(cands([[0, 0.5, 0.9, 0], [40, 40 + 1.5e-6, 0.8, 1]]), 100.0, PostConfig())
    assert list(zip(kept.start, kept.end)) == [(0, 0.5), (40, 40 + 1.5e-6)]  # short, not empty
    top2 = finalize(c, 100.0, PostConfig(nms="hard", max_segments=2))
    assert list(top2.score) == [0.7, 0.6] and list(top2.start) == [95, 50]
    assert len(finalize(c, 100.0, PostConfig(nms="hard", max_segments=2), cap=False)) == 4


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


def test_a_group_ending_exactly_at_the_frontier_is_final_now():
    # a later candidate starts at safe_before or after: touching is no overlap, so a group that
    # ends there is final at once; one that ends a hair later waits
    fin = StreamingFinalizer(PostConfig(nms="hard"))
    out = fin.push(cands([[0, 10, 0.9, 0], [20, 30.001, 0.8, 0]]), safe_before=30.0)
    assert list(out.start) == [0]
    out = fin.push(cands([[30, 40, 0.7, 0]]), safe_before=30.0)
    assert len(out) == 0 and len(fin.pending) == 2  # [30, 40] overlaps [20, 30.001]
    out = fin.push(Candidates.empty(), float("inf"), duration=50.0)
    assert sorted(zip(out.start, out.label)) == [(20, 0), (30, 0)]


def test_a_group_is_every_candidate_chained_by_overlap():
    # [0, 10], [9, 20], [19, 25] chain into one group ending at 25, although [0, 10] alone ended
    # long ago; a candidate starting exactly where the chain's reach ends starts a new group
    fin = StreamingFinalizer(PostConfig(nms="hard"))
    out = fin.push(
        cands([[0, 10, 0.9, 0], [9, 20, 0.8, 0], [19, 25, 0.7, 0], [25, 26, 0.6, 0]]), 24.0
    )
    assert len(out) == 0 and len(fin.pending) == 4
    out = fin.push(Candidates.empty(), 25.0)
    assert sorted(out.start) == [0, 9, 19]
    # a long candidate keeps a group open past later short ones that end early
    fin = StreamingFinalizer(PostConfig(nms="hard"))
    out = fin.push(cands([[0, 50, 0.9, 0], [10, 12, 0.8, 0], [20, 22, 0.7, 0]]), 30.0)
    assert len(out) == 0


def test_the_memory_bound_closes_only_past_it():
    # two pending groups with max_pending=2: nothing closes early; three: the first group closes
    rows = [[10, 50, 0.8, 0], [30, 60, 0.9, 1]]
    fin = StreamingFinalizer(PostConfig(nms="hard"), max_pending=2)
    assert len(fin.push(cands(rows), safe_before=0.0)) == 0
    fin = StreamingFinalizer(PostConfig(nms="hard"), max_pending=2)
    out = fin.push(cands(rows + [[40, 70, 0.7, 2]]), safe_before=0.0)
    assert list(zip(out.start, out.label)) == [(10, 0)] and len(fin.pending) == 2


def test_streamed_events_are_clipped_to_the_duration_only_at_the_end():
    fin = StreamingFinalizer(PostConfig(nms="hard"))
    out = fin.push(cands([[-1, 10, 0.9, 0]]), safe_before=20.0)
    assert list(zip(out.start, out.end)) == [(0, 10)]  # start clipped at 0, end kept
    out = fin.push(cands([[40, 70, 0.9, 0]]), float("inf"), duration=60.0)
    assert list(zip(out.start, out.end)) == [(40, 60)]


# ---- decoding: the snippet-centre convention and the reach


GRID = SnippetGrid(fps=10.0, k=4, frame_stride=1, hop=2.0)  # time(i) = (2 i + 2) / 10


def test_decode_level_by_hand():
    # stride 2 from position 3: position j's centre is (3 + j) * 2 + 0.5 snippets
    cls = np.array([[0.0, -10.0], [-10.0, 2.0]])  # sigmoid: 0.5 (class 0, j 0), 0.88 (class 1, j 1)
    reg = np.array([[1.5, 10.0], [0.5, -1.0]])  # distances in strides; negative ones are 0
    out = decode_level(cls, reg, 2, 3, GRID, 8.0, PostConfig(score_threshold=0.05))
    assert list(out.label) == [0, 1]
    # j 0: centre 6.5, [6.5 - 3, 6.5 + 1] -> [0.9, 1.7] s; j 1: centre 8.5, reach cut to 8 -> [0.5, 8.5]
    assert list(out.start) == pytest.approx([0.9, 0.3], abs=1e-12)
    assert list(out.end) == pytest.approx([1.7, 1.9], abs=1e-12)
    assert list(out.score) == pytest.approx([0.5, 1 / (1 + np.exp(-2.0))], abs=1e-15)
    # the score threshold is strict: a score of exactly 0.5 does not pass a threshold of 0.5
    out = decode_level(cls, reg, 2, 3, GRID, 8.0, PostConfig(score_threshold=0.5))
    assert list(out.label) == [1]
    # a start before the video's first second is clipped to 0
    out = decode_level(np.array([[3.0]]), np.array([[9.0], [1.0]]), 1, 0, GRID, 20.0, PostConfig())
    assert out.start[0] == 0.0 and out.end[0] == pytest.approx(GRID.time(1.0))
    assert (
        len(decode_level(np.full((2, 3), -9.0), np.ones((2, 3)), 1, 0, GRID, 4.0, PostConfig()))
        == 0
    )


def test_decode_outputs_keeps_positions_from_first_to_the_video_end():
    geo = HeadGeometry(["a"], GRID, [1, 4], 64.0, PostConfig(score_threshold=0.05))
    fire = lambda n: (np.zeros((1, n)), np.ones((2, n)))  # noqa: E731
    # 10 snippets from snippet 8 (window [8, 16)) of a 13-snippet video: stride 1 keeps the
    # positions 8..12, stride 4 positions 2 and 3 (their first snippets 8 and 12 lie before 13)
    cands, kept = decode_outputs([fire(10), fire(3)], geo, 8, 16, 13)
    assert [c.shape[1] for c, _ in kept] == [5, 2]
    assert len(cands) == 7
    centres = sorted(GRID.index((cands.start + cands.end) / 2))
    assert centres == pytest.approx([8, 9, 9.5, 10, 11, 12, 13.5])
    # a window past the end keeps nothing
    cands, kept = decode_outputs([fire(4), fire(1)], geo, 16, 20, 13)
    assert len(cands) == 0 and [c.shape[1] for c, _ in kept] == [0, 0]
    segs = detect([fire(8), fire(2)], geo, 8, 100.0, "v")
    assert {s.label for s in segs} == {"a"} and len(segs) == 10


def test_defaults_agree_with_the_trainers_and_from_dict_takes_known_keys():
    # a bundle or config that leaves a setting out gets the same value on both sides
    from lofi.trainer.schema import PostprocessConfig

    assert PostprocessConfig().runtime() == PostConfig()
    assert PostConfig() == PostConfig(0.05, "soft", 0.5, 0.5, 0.001, 100)
    got = PostConfig.from_dict({"nms": "hard", "iou_threshold": 0.3, "unknown": 1})
    assert got == PostConfig(nms="hard", iou_threshold=0.3)
    # shared by every stream of a bundle: nobody may change it under the others
    with pytest.raises(AttributeError):
        got.nms = "soft"  # type: ignore[misc]


def test_the_memory_bound_counts_only_what_stays_pending():
    # one group final now and two waiting, max_pending 2: the two waiting are within the bound
    fin = StreamingFinalizer(PostConfig(nms="hard"), max_pending=2)
    out = fin.push(cands([[0, 5, 0.5, 0], [10, 50, 0.8, 0], [30, 60, 0.9, 1]]), safe_before=6.0)
    assert list(out.start) == [0] and len(fin.pending) == 2


def test_the_finaliser_never_applies_the_per_video_cap():
    # the cap is per video (the localizer keeps the top ones for the results file); events final
    # together are all emitted, however many
    fin = StreamingFinalizer(PostConfig(nms="hard", max_segments=3))
    rows = [[10 * i, 10 * i + 5, 0.5 + 0.01 * i, 0] for i in range(8)]
    assert len(fin.push(cands(rows), safe_before=100.0)) == 8


def test_head_geometry_is_frozen():
    geo = HeadGeometry(["a"], GRID, [1], 4.0, PostConfig())
    with pytest.raises(AttributeError):
        geo.max_reach = 8.0  # type: ignore[misc]
