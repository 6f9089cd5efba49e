"""mAP against hand-worked cases (ActivityNet protocol), each chosen so that a departure from
the official evaluation code (thresholds, tIoU arithmetic, matching, interpolation) changes it."""

import json

import numpy as np
import pytest
from lofi.runtime.annotations import GroundTruth, Segment, VideoInfo, parse_results
from lofi.runtime.errors import LofiError
from lofi.runtime.evaluation import (
    TIOU_PRESETS,
    MapReport,
    average_precision,
    evaluate,
    interpolated_ap,
    parse_tiou,
    segment_iou,
)


def gt_of(*segs: Segment, extra_videos=()) -> GroundTruth:
    videos = {}
    for s in segs:
        videos.setdefault(s.video, VideoInfo("validation", 100.0)).segments.append(s)
    for v in extra_videos:
        videos[v] = VideoInfo("validation", 100.0)
    labels = list(dict.fromkeys(s.label for s in segs))
    return GroundTruth(videos, labels)


def test_perfect_single_match():
    gt = gt_of(Segment("v", "a", 10, 20))
    r = evaluate(gt, [Segment("v", "a", 10, 20, 0.9)], [0.5, 0.95])
    assert r.mAP == [1.0, 1.0]


def test_duplicate_detection_is_a_false_positive():
    # ranks: TP (p=1), FP (p=1/2) -> recall reaches 1 at rank 1 -> AP 1.0
    gt = gt_of(Segment("v", "a", 10, 20))
    preds = [Segment("v", "a", 10, 20, 0.9), Segment("v", "a", 10, 20, 0.8)]
    assert evaluate(gt, preds, [0.5]).mAP == [1.0]
    # whichever duplicate ranks first takes the ground truth; the other is a false positive
    preds = [Segment("v", "a", 10, 20, 0.8), Segment("v", "a", 11, 20, 0.9)]
    assert evaluate(gt, preds, [0.5]).mAP == [1.0]


def test_false_positive_first_halves_precision():
    gt = gt_of(Segment("v", "a", 10, 20))
    preds = [Segment("v", "a", 50, 60, 0.9), Segment("v", "a", 10, 20, 0.5)]
    assert evaluate(gt, preds, [0.5]).mAP == [0.5]


def test_two_ground_truths_one_found():
    gt = gt_of(Segment("v", "a", 10, 20), Segment("v", "a", 40, 50))
    r = evaluate(gt, [Segment("v", "a", 10, 20, 0.9)], [0.5])
    assert r.mAP == [0.5]


def test_tiou_ties_take_the_first_unmatched_ground_truth():
    # prediction [10, 30] has tIoU 0.5 with both [10, 20] and [20, 30]; the first takes it,
    # the second prediction then matches the other one.
    gt = gt_of(Segment("v", "a", 10, 20), Segment("v", "a", 20, 30))
    preds = [Segment("v", "a", 10, 30, 0.9), Segment("v", "a", 10, 30, 0.8)]
    assert evaluate(gt, preds, [0.5]).mAP == [1.0]
    assert evaluate(gt, preds, [0.51]).mAP == [0.0]


def test_prediction_on_video_without_ground_truth_is_false_positive():
    gt = gt_of(Segment("v", "a", 10, 20), extra_videos=["empty"])
    preds = [Segment("empty", "a", 10, 20, 0.95), Segment("v", "a", 10, 20, 0.9)]
    assert evaluate(gt, preds, [0.5]).mAP == [0.5]


def test_class_without_predictions_scores_zero():
    gt = gt_of(Segment("v", "a", 10, 20), Segment("v", "b", 30, 40))
    r = evaluate(gt, [Segment("v", "a", 10, 20, 0.9)], [0.5])
    assert r.per_class == {"a": [1.0], "b": [0.0]}
    assert r.mAP == [0.5]


def test_interpolation_is_all_point():
    # precision 1, 0.5, 2/3 at recall 0.5, 0.5, 1.0 -> 0.5*1 + 0.5*2/3
    ap = interpolated_ap(np.array([1.0, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0]))
    assert ap == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_hand_worked_mixed_ranking():
    # GT: 3 instances. Ranked: TP, FP, TP, FP, TP -> P = 1, .5, .667, .5, .6 ; R = 1/3, 1/3, 2/3, 2/3, 1
    # interpolated: 1*(1/3) + .667*(1/3) + .6*(1/3)
    gt = gt_of(Segment("v", "a", 0, 10), Segment("v", "a", 20, 30), Segment("w", "a", 0, 10))
    preds = [
        Segment("v", "a", 0, 10, 0.9),
        Segment("v", "a", 50, 60, 0.8),
        Segment("v", "a", 20, 30, 0.7),
        Segment("w", "a", 50, 60, 0.6),
        Segment("w", "a", 1, 10, 0.5),
    ]
    assert evaluate(gt, preds, [0.5]).mAP[0] == pytest.approx((1 + 2 / 3 + 0.6) / 3)


def test_unknown_label_is_an_error():
    gt = gt_of(Segment("v", "a", 10, 20))
    with pytest.raises(LofiError, match="unknown"):
        evaluate(gt, [Segment("v", "zzz", 10, 20, 0.9)], [0.5])


def test_class_absent_from_the_subset_is_not_scored():
    # "b" is in the annotation file (training) but has no validation instance: predicting it is
    # not an error, and mAP averages over the validation classes only
    videos = {
        "t": VideoInfo("training", 100.0, [Segment("t", "b", 0, 10)]),
        "v": VideoInfo("validation", 100.0, [Segment("v", "a", 10, 20)]),
    }
    val = GroundTruth(videos, ["a", "b"]).subset("validation")
    assert val.labels == ["a", "b"]
    r = evaluate(val, [Segment("v", "a", 10, 20, 0.9), Segment("v", "b", 10, 20, 0.95)], [0.5])
    assert r.per_class == {"a": [1.0]} and r.mAP == [1.0]


def test_tiou_presets_and_lists():
    # the official code's floats: np.linspace, not rounded decimals
    assert parse_tiou("anet") == [
        0.5,
        0.55,
        0.6,
        0.65,
        0.7,
        0.75,
        0.8,
        0.85,
        0.8999999999999999,
        0.95,
    ]
    assert parse_tiou("thumos") == [0.3, 0.39999999999999997, 0.5, 0.6, 0.7]
    assert parse_tiou("anet")[8] != 0.9 and parse_tiou("thumos")[1] != 0.4
    assert parse_tiou("0.3,0.5") == [0.3, 0.5]
    assert parse_tiou("1") == [1.0]  # the upper bound is a valid threshold
    for bad in ("1.5", "0", "-0.5", "nan", "", "0.3,x", "0.5,1.5"):
        with pytest.raises(LofiError, match="--tiou|tIoU"):
            parse_tiou(bad)


# ---- the official code's exact arithmetic


def test_a_tiou_on_the_ninth_activitynet_threshold_is_a_match():
    # [0.1, 1.9] against [0, 2]: 1.7999999999999998 / 2.0 = 0.8999999999999999, which the official
    # ninth threshold (np.linspace) accepts and a rounded 0.9 would not
    iou = segment_iou(np.array([0.1, 1.9]), np.array([[0.0, 2.0]]))
    assert iou[0] == 0.8999999999999999
    r = evaluate(
        gt_of(Segment("v", "a", 0.0, 2.0)), [Segment("v", "a", 0.1, 1.9, 0.9)], TIOU_PRESETS["anet"]
    )
    assert r.mAP == [1.0] * 9 + [0.0]
    assert r.average_mAP == pytest.approx(0.9)


def test_a_tiou_on_the_second_thumos_threshold_is_a_match():
    # [0.2, 0.6] against [0, 1]: 0.39999999999999997, ActionFormer's np.linspace(0.3, 0.7, 5)[1]
    assert segment_iou(np.array([0.2, 0.6]), np.array([[0.0, 1.0]]))[0] == 0.39999999999999997
    r = evaluate(
        gt_of(Segment("v", "a", 0.0, 1.0)),
        [Segment("v", "a", 0.2, 0.6, 0.9)],
        TIOU_PRESETS["thumos"],
    )
    assert r.mAP == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_segment_iou_has_no_floor_on_the_union():
    # segments shorter than any floor keep their true tIoU (a 1e-12 floor made this 0.1)
    tiny = segment_iou(np.array([0.0, 1e-13]), np.array([[0.0, 1e-13], [0.5e-13, 1.5e-13]]))
    assert tiny[0] == 1.0 and tiny[1] == pytest.approx(1 / 3, rel=1e-9)
    # hand-worked: contained, partial, touching, disjoint, zero-length prediction
    got = segment_iou(
        np.array([2.0, 6.0]), np.array([[0.0, 10.0], [4.0, 8.0], [6.0, 9.0], [7.0, 9.0]])
    )
    assert list(got) == [0.4, 2 / 6, 0.0, 0.0]
    assert list(segment_iou(np.array([3.0, 3.0]), np.array([[0.0, 10.0]]))) == [0.0]


def test_a_zero_length_prediction_is_a_false_positive():
    # ranked first, it halves precision: AP 1/2, not a refused file
    gt = gt_of(Segment("v", "a", 10, 20))
    preds = [Segment("v", "a", 15, 15, 0.95), Segment("v", "a", 10, 20, 0.9)]
    assert evaluate(gt, preds, [0.5]).mAP == [0.5]
    # and a results file may hold it, while an end before the start is still refused
    doc = {"results": {"v": [{"label": "a", "score": 0.95, "segment": [15, 15]}]}}
    assert parse_results(json.loads(json.dumps(doc)), "r.json") == [
        Segment("v", "a", 15.0, 15.0, 0.95)
    ]
    doc["results"]["v"][0]["segment"] = [15, 14.5]
    with pytest.raises(
        LofiError, match="r.json: video 'v' prediction 0: segment end 14.5 <= start 15"
    ):
        parse_results(doc, "r.json")
    with pytest.raises(LofiError, match="ends before it starts"):
        evaluate(gt, [Segment("v", "a", 15, 14.5, 0.9)], [0.5])


def test_a_subset_without_ground_truth_is_an_error_not_a_zero():
    videos = {"t1": VideoInfo("testing", 50.0), "t2": VideoInfo("testing", 60.0)}
    unannotated = GroundTruth(videos, ["a"])
    with pytest.raises(LofiError, match=r"no segment .* 2 video\(s\) \(subset 'testing'\)"):
        evaluate(unannotated, [Segment("t1", "a", 1, 2, 0.9)], [0.5])
    with pytest.raises(LofiError, match="no mAP"):
        evaluate(unannotated, [], [0.5])


def test_lofi_eval_on_an_unannotated_subset_says_so_in_one_line(tmp_path):
    from click.testing import CliRunner
    from lofi.runtime.cli import eval_cli

    gt = {"database": {"t": {"subset": "testing", "duration": 9, "annotations": []},
                       "v": {"subset": "validation", "duration": 9,
                             "annotations": [{"segment": [1, 2], "label": "a"}]}}}  # fmt: skip
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    pred = {"results": {"t": [{"label": "a", "score": 0.9, "segment": [1, 2]}]}}
    (tmp_path / "p.json").write_text(json.dumps(pred))
    args = ["--ground-truth", str(tmp_path / "gt.json"), "--predictions", str(tmp_path / "p.json")]
    res = CliRunner().invoke(eval_cli, [*args, "--subset", "testing"])
    assert res.exit_code == 1 and "mAP@" not in res.output
    assert res.output.count("\n") == 1 and "no segment to evaluate" in res.output
    ok = CliRunner().invoke(eval_cli, args)  # validation has ground truth: a table
    assert ok.exit_code == 0 and "mAP@" in ok.output


# ---- matching and AP: promises a plain case cannot tell apart


def test_a_duplicate_ranked_before_a_later_true_positive_is_a_false_positive():
    # TP, duplicate, TP over 2 instances: P = 1, 1/2, 2/3 at R = 1/2, 1/2, 1 -> 1/2 + 1/2 * 2/3.
    # Counting the duplicate as a match, or skipping it, would give 1.0
    gt = gt_of(Segment("v", "a", 10, 20), Segment("v", "a", 40, 50))
    preds = [
        Segment("v", "a", 10, 20, 0.9),
        Segment("v", "a", 10, 19, 0.8),
        Segment("v", "a", 40, 50, 0.7),
    ]
    assert evaluate(gt, preds, [0.5]).mAP[0] == pytest.approx(5 / 6, abs=1e-15)


def test_precision_rising_after_a_recall_step_lifts_the_earlier_steps():
    # TP, FP, FP, TP, TP over 3 instances: P = 1, 1/2, 1/3, 1/2, 3/5 at R = 1/3, 1/3, 1/3, 2/3, 1.
    # The envelope takes 3/5 at recall 2/3 (raw precision there is 1/2): (1 + 3/5 + 3/5) / 3
    gt = gt_of(Segment("v", "a", 0, 10), Segment("v", "a", 20, 30), Segment("v", "a", 40, 50))
    preds = [
        Segment("v", "a", 0, 10, 0.9),
        Segment("v", "a", 60, 70, 0.8),
        Segment("v", "a", 80, 90, 0.7),
        Segment("v", "a", 20, 30, 0.6),
        Segment("v", "a", 40, 50, 0.5),
    ]
    assert evaluate(gt, preds, [0.5]).mAP[0] == pytest.approx(11 / 15, abs=1e-15)
    # directly: precision 1/2 then 1 at recall 1/2 then 1 -> the envelope makes both 1
    assert interpolated_ap(np.array([0.5, 1.0]), np.array([0.5, 1.0])) == 1.0
    # recall that never reaches 1 adds nothing past its last step
    assert interpolated_ap(np.array([1.0, 0.5]), np.array([0.25, 0.25])) == 0.25


def test_a_prediction_takes_its_best_ground_truth_then_the_next_unmatched_one():
    # GT A = [0, 10], B = [5, 15]. The first prediction is B exactly; the second, [3, 13], has
    # tIoU 8/12 with B (taken) and 7/13 with A: it takes A. Both true positives: AP 1
    gt = gt_of(Segment("v", "a", 0, 10), Segment("v", "a", 5, 15))
    preds = [Segment("v", "a", 5, 15, 0.9), Segment("v", "a", 3, 13, 0.8)]
    assert evaluate(gt, preds, [0.5]).mAP == [1.0]
    assert evaluate(gt, preds, [0.6]).mAP == [0.5]  # 7/13 < 0.6: a false positive there
    # a prediction overlapping A barely (1/14) and B well (10/11) is a match, whatever the order
    gt = gt_of(Segment("v", "a", 0, 5), Segment("v", "a", 4, 15))
    assert evaluate(gt, [Segment("v", "a", 4, 14, 0.9)], [0.5]).mAP == [0.5]


def test_each_threshold_keeps_its_own_matches():
    # at 0.5 the first prediction (tIoU 0.6) takes the instance, at 0.7 only the second (tIoU 1)
    gt = gt_of(Segment("v", "a", 0, 10))
    preds = [Segment("v", "a", 0, 6, 0.9), Segment("v", "a", 0, 10, 0.8)]
    r = evaluate(gt, preds, [0.5, 0.7])
    assert r.mAP == [1.0, 0.5] and r.average_mAP == 0.75
    assert r.per_class == {"a": [1.0, 0.5]}


def test_average_precision_without_ground_truth_or_predictions_is_zero():
    preds = [Segment("v", "a", 0, 10, 0.9)]
    assert list(average_precision([], preds, [0.5, 0.7])) == [0.0, 0.0]
    assert list(average_precision([Segment("v", "a", 0, 10)], [], [0.5])) == [0.0]


def test_non_finite_predictions_are_refused_field_by_field():
    gt = gt_of(Segment("v", "a", 10, 20))
    for bad in (
        Segment("v", "a", 10, 20, float("nan")),
        Segment("v", "a", 10, float("inf"), 0.9),
        Segment("v", "a", float("-inf"), 20, 0.9),
    ):
        with pytest.raises(
            LofiError, match="video 'v' \\('a'\\) has a non-finite score or segment"
        ):
            evaluate(gt, [bad], [0.5])


def test_only_a_v_prefix_maps_to_an_annotated_id():
    # 'v_x' counts for 'x'; 'zzx' (no 'v_' prefix) is no alias of 'x', nor is 'v_y' of anything
    gt = gt_of(Segment("x", "a", 10, 20))
    assert evaluate(gt, [Segment("v_x", "a", 10, 20, 0.9)], [0.5]).mAP == [1.0]
    assert evaluate(gt, [Segment("zzx", "a", 10, 20, 0.9)], [0.5]).mAP == [0.0]
    # when 'v_x' itself is annotated, it stays itself
    gt = gt_of(Segment("x", "a", 10, 20), Segment("v_x", "a", 50, 60))
    assert evaluate(gt, [Segment("v_x", "a", 50, 60, 0.9)], [0.5]).mAP == [0.5]


def test_tables_to_the_character():
    r = MapReport(
        tiou=TIOU_PRESETS["anet"],
        mAP=[0.5 + 0.01 * i for i in range(10)],
        average_mAP=0.545,
        per_class={"ab": [0.25] * 10, "long_name": [1.0] * 10},
    )
    assert r.table("val").splitlines() == [
        "            mAP@   0.50    0.75    0.95     avg",
        "val               50.00   55.00   59.00   54.50",
    ]
    rows = r.class_table().splitlines()
    assert rows[0].startswith("class        0.50    0.55") and rows[0].endswith(
        "0.90    0.95     avg"
    )
    assert rows[1] == "ab       " + "   25.00" * 11  # names padded to the longest
    assert rows[2] == "long_name" + "  100.00" * 11
    thumos = MapReport([0.3, 0.5], [0.125, 0.25], 0.1875, {"a": [0.125, 0.25]})
    assert thumos.table() == "mAP@   0.30    0.50     avg\n      12.50   25.00   18.75"
    assert thumos.class_table().splitlines()[1] == "a       12.50   25.00   18.75"


def test_score_ties_rank_as_the_official_code_ranks_them():
    """Two predictions of one score: the official `argsort()[::-1]` ranks the later one in the
    file first, here a false positive, so AP is 0.5 (a stable sort would give 1.0)."""
    gts = [Segment("v", "a", 0.0, 10.0)]
    preds = [Segment("v", "a", 1.0, 9.0, 0.9), Segment("v", "a", 50.0, 60.0, 0.9)]
    assert average_precision(gts, preds, [0.5]).tolist() == [0.5]


def test_tiou_ties_pick_the_ground_truth_the_official_code_picks():
    """A prediction with equal tIoU to two ground truths takes the later one (reversed argsort),
    so a second prediction that only fits that one is a false positive: AP 0.5, not 1.0."""
    gts = [Segment("v", "a", 0.0, 10.0), Segment("v", "a", 10.0, 20.0)]
    preds = [Segment("v", "a", 5.0, 15.0, 0.9), Segment("v", "a", 10.0, 20.0, 0.8)]
    assert average_precision(gts, preds, [0.3]).tolist() == [0.5]
