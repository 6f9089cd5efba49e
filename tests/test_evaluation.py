"""mAP against hand-worked cases (ActivityNet protocol)."""

import pytest
from lofi.runtime.annotations import GroundTruth, Segment, VideoInfo
from lofi.runtime.errors import LofiError
from lofi.runtime.evaluation import evaluate, interpolated_ap, parse_tiou


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
    import numpy as np

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
    assert parse_tiou("anet")[0] == 0.5 and len(parse_tiou("anet")) == 10
    assert parse_tiou("thumos") == [0.3, 0.4, 0.5, 0.6, 0.7]
    assert parse_tiou("0.3,0.5") == [0.3, 0.5]
    with pytest.raises(LofiError):
        parse_tiou("1.5")
