"""Evaluation as the field reports it: THUMOS14's ambiguous spans (unmatched detections there are
ignored, as the official evaluation does), and the THUMOS14 / ActivityNet tables."""

from __future__ import annotations

import pytest
from lofi.runtime.annotations import Segment, ground_truth_json, parse_ground_truth
from lofi.runtime.errors import LofiError
from lofi.runtime.evaluation import TIOU_PRESETS, evaluate


def gt(ambiguous: list | None = None) -> dict:
    v = {
        "subset": "validation",
        "duration": 100.0,
        "annotations": [{"segment": [10, 20], "label": "a"}, {"segment": [28, 33], "label": "b"}],
    }
    w = {"subset": "validation", "duration": 100.0, "annotations": []}
    if ambiguous is not None:
        v["ambiguous"], w["ambiguous"] = ambiguous, [[0, 5]]
    return {"database": {"v": v, "w": w}}


PREDS = [
    Segment("v", "a", 35, 45, 0.95),  # overlaps the ambiguous span, matches nothing
    Segment("v", "a", 10, 20, 0.9),  # true positive
    Segment("v", "b", 28, 33, 0.8),  # true positive inside the ambiguous span
    Segment("w", "b", 1, 3, 0.99),  # a video with no instance, inside its ambiguous span
    Segment("v", "b", 50, 60, 0.7),  # a plain false positive after the true one
]


def test_unmatched_detections_on_ambiguous_spans_are_ignored():
    plain = evaluate(parse_ground_truth(gt()), PREDS, [0.5])
    # without ambiguous spans: a's false positive ranks first (AP 1/2), b's too (AP 1/2)
    assert plain.per_class == {"a": [0.5], "b": [0.5]}
    amb = evaluate(parse_ground_truth(gt([[30, 40]])), PREDS, [0.5])
    # the spans remove exactly the detections overlapping them that match nothing
    assert amb.per_class == {"a": [1.0], "b": [1.0]}
    # every span counts, not only the first
    later = [Segment("v", "a", 62, 65, 0.95), Segment("v", "a", 10, 20, 0.9)]
    assert evaluate(parse_ground_truth(gt([[30, 40], [60, 70]])), later, [0.5]).per_class["a"] == [
        1.0
    ]
    # touching the span's end is no overlap
    edge = [Segment("v", "a", 40, 45, 0.95), Segment("v", "a", 10, 20, 0.9)]
    assert evaluate(parse_ground_truth(gt([[30, 40]])), edge, [0.5]).per_class["a"] == [0.5]


def test_ambiguous_spans_are_read_checked_and_written_back():
    g = parse_ground_truth(gt([[30, 40]]))
    assert g.videos["v"].ambiguous == [(30.0, 40.0)] and "ambiguous" not in g.videos["v"].extra
    assert ground_truth_json(g)["database"]["v"]["ambiguous"] == [[30, 40]]
    with pytest.raises(LofiError, match="video 'v' ambiguous span 0: segment end 30.0 <= start"):
        parse_ground_truth(gt([[40, 30]]))
    with pytest.raises(LofiError, match="video 'v': 'ambiguous' must be a list"):
        parse_ground_truth(gt("30-40"))  # type: ignore[arg-type]


def test_tables_show_the_fields_columns_and_every_class():
    g = parse_ground_truth(gt())
    thumos = evaluate(g, PREDS, TIOU_PRESETS["thumos"]).table()
    assert thumos.splitlines()[0].split() == ["mAP@", "0.30", "0.40", "0.50", "0.60", "0.70", "avg"]
    anet = evaluate(g, PREDS, TIOU_PRESETS["anet"])
    assert anet.table().splitlines()[0].split() == ["mAP@", "0.50", "0.75", "0.95", "avg"]
    rows = anet.class_table().splitlines()
    assert rows[0].split()[:2] == ["class", "0.50"] and len(rows[0].split()) == 12
    assert [r.split()[0] for r in rows[1:]] == ["a", "b"]
    assert rows[1].split()[-1] == f"{100 * sum(anet.per_class['a']) / 10:.2f}"


def test_results_named_after_activitynet_files_count_for_their_ids():
    g = parse_ground_truth({"database": {"abc": {"subset": "validation", "duration": 50.0,
        "annotations": [{"segment": [10, 20], "label": "a"}]}}})  # fmt: skip
    named = [Segment("v_abc", "a", 10, 20, 0.9), Segment("v_zzz", "a", 10, 20, 0.95)]
    assert evaluate(g, named, [0.5]).per_class == {"a": [0.5]}  # v_zzz: no such video, wrong
