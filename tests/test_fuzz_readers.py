"""Property tests for every reader of user files: any input either parses into finite, typed
values or raises LofiError (one line); never another exception, never a NaN let through.

The example budget is fixed and the search derandomized, so CI runs the same cases in seconds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lofi.runtime.annotations import (
    load_ground_truth,
    load_results,
    parse_ground_truth,
    parse_results,
)
from lofi.runtime.bounds import DURATION, SCORE, TIMESTAMP
from lofi.runtime.bundle import Manifest
from lofi.runtime.errors import LofiError
from lofi.runtime.postprocess import PostConfig
from lofi.runtime.snippets import SnippetGrid

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

HOSTILE = [1e300, -1e300, 1e-300, 5e-324, 10**5000, -(10**30), "9" * 5000]


def hostile(i: int):
    """One of HOSTILE (hypothesis cannot print a 5000-digit integer in a strategy's repr)."""
    return HOSTILE[i]


# values a hand-edited or machine-broken file holds where a number or a name should be
ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "1.5", "nan", "-inf", "1e999", "abc", "\x00", "1e300"]),
    st.integers(0, len(HOSTILE) - 1).map(hostile),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


def maybe(value: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly a well-formed value, sometimes an odd one: reaches the checks deep in a file."""
    return st.one_of(value, value, value, ODD)


SEGMENT = maybe(st.lists(maybe(st.floats(0, 100)), min_size=0, max_size=3))
ANNOTATION = maybe(
    st.fixed_dictionaries(
        {"segment": SEGMENT, "label": maybe(st.sampled_from(["a", "b"]))},
        optional={"extra": ODD},
    )
)
VIDEO = maybe(
    st.fixed_dictionaries(
        {
            "subset": maybe(st.sampled_from(["training", "validation"])),
            "duration": maybe(st.floats(0.1, 500)),
            "annotations": maybe(st.lists(ANNOTATION, max_size=3)),
        },
        optional={"path": ODD, "fps": ODD},
    )
)
GROUND_TRUTH = st.one_of(
    JSON, st.fixed_dictionaries({"database": maybe(st.dictionaries(st.text(max_size=4), VIDEO))})
)
PREDICTION = maybe(
    st.fixed_dictionaries(
        {
            "label": maybe(st.sampled_from(["a", "b"])),
            "score": maybe(st.floats(0, 1)),
            "segment": SEGMENT,
        }
    )
)
RESULTS = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {
            "results": maybe(
                st.dictionaries(st.text(max_size=4), maybe(st.lists(PREDICTION, max_size=3)))
            )
        }
    ),
)


def finite_segments(segments, empty_ok: bool = False) -> bool:
    # predictions may be empty (end == start: a false positive, as the official evaluation has it)
    # times and scores within their physical bounds (finite is a part of that)
    return all(
        TIMESTAMP.holds(s.start)
        and TIMESTAMP.holds(s.end)
        and SCORE.holds(s.score)
        and (s.end > s.start or (empty_ok and s.end == s.start))
        for s in segments
    )


@FUZZ
@given(GROUND_TRUTH)
def test_ground_truth_parses_finite_or_refuses_in_one_line(data):
    try:
        gt = parse_ground_truth(data, "gt.json")
    except LofiError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("gt.json")
        return
    assert finite_segments(gt.segments())
    assert all(DURATION.holds(v.duration) for v in gt.videos.values())
    assert all(isinstance(v.subset, str) for v in gt.videos.values())
    assert all(isinstance(s.label, str) for s in gt.segments())


@FUZZ
@given(RESULTS)
def test_results_parse_finite_or_refuse_in_one_line(data):
    try:
        preds = parse_results(data, "r.json")
    except LofiError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("r.json")
        return
    assert finite_segments(preds, empty_ok=True) and all(isinstance(p.label, str) for p in preds)


TEXT = st.one_of(
    st.binary(max_size=64),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.sampled_from(
        [
            b"\xff\xfe{}",
            b'{"database": {"v": {"subset": "validation", "duration": NaN, "annotations": []}}}',
            b'{"results": {"v": [{"label": "a", "score": Infinity, "segment": [1, 2]}]}}',
            b'{"results": {"v": [], "v": []}}',
            b'{"database": {"v": {"subset": "a", "duration": 1e400, "annotations": []}}}',
            b'{"results": {"v": [{"label": "a", "score": '
            + b"9" * 5000
            + b', "segment": [1, 2]}]}}',
            b"[" * 5000 + b"]" * 5000,
            b"",
        ]
    ),
)


@pytest.mark.parametrize("reader", [load_ground_truth, load_results])
def test_files_of_any_bytes_read_or_refuse_in_one_line(tmp_path, reader):
    path = tmp_path / "f.json"

    @FUZZ
    @given(TEXT)
    def check(raw: bytes) -> None:
        path.write_bytes(raw)
        try:
            reader(path)
        except LofiError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)

    check()


def good_manifest() -> dict:
    m = Manifest(
        labels=["a", "b"],
        grid=SnippetGrid(8.0, 4, 1, 4),
        height=32,
        width=32,
        mean=[0.45] * 3,
        std=[0.225] * 3,
        feature_dim=16,
        post=PostConfig(),
        precision="fp32",
        files={"encoder.onnx": "0" * 64, "head.onnx": "0" * 64},
        engines=[],
        strides=[1, 2],
        window=16,
        context=8,
        max_reach=16.0,
    )
    return m.to_json()


def _paths(node, prefix=()):
    """Every (path to a leaf or container) of a JSON tree."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


MANIFEST_PATHS = [p for p in _paths(good_manifest()) if p]


# a manifest is only read through runtime/documents.py, which refuses integers of more than 30
# digits; Python cannot even print one of more than 4300 (bundle.py's messages would raise)
MANIFEST_ODD = ODD.filter(lambda v: not (isinstance(v, int) and v.bit_length() > 14_000))


@st.composite
def broken_manifest(draw) -> dict:
    """A valid manifest with one to three fields replaced by odd values or removed."""
    data = good_manifest()
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(MANIFEST_PATHS))
        node = data
        try:
            for key in path[:-1]:
                node = node[key]
            if draw(st.booleans()) and isinstance(node, dict):
                node.pop(path[-1], None)
            else:
                node[path[-1]] = draw(MANIFEST_ODD)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier change removed or replaced this path's parent
    return data


@FUZZ
@given(st.one_of(JSON, broken_manifest()))
def test_manifest_parses_or_refuses_in_one_line(data):
    try:
        m = Manifest.from_json(data)
    except LofiError as exc:
        assert "\n" not in str(exc)
        return
    numbers = [m.grid.fps, m.grid.hop, m.max_reach, *m.mean, *m.std]
    assert all(isinstance(x, float) and math.isfinite(x) for x in numbers), numbers
    assert m.grid.fps > 0 and m.grid.k > 0 and m.height > 0 and m.width > 0


def test_the_good_manifest_parses():
    # the fuzzed manifests start from this one; were it refused, every case above would be
    assert Manifest.from_json(good_manifest()).labels == ["a", "b"]


def test_readers_name_the_file(tmp_path: Path):
    path = tmp_path / "preds.json"
    path.write_text('{"results": {"v7": [{"label": "a", "score": NaN, "segment": [1, 2]}]}}')
    with pytest.raises(LofiError) as err:
        load_results(path)
    assert str(err.value) == (
        f"{path}: video 'v7' prediction 0: 'score' must be a finite number, got nan"
    )


def test_evaluate_refuses_non_finite_predictions_from_the_api():
    # the trainer's validation hands predictions to evaluate() without a file: a diverged model's
    # NaN score must not move its class's AP silently either
    from lofi.runtime.annotations import Segment, parse_ground_truth
    from lofi.runtime.evaluation import evaluate

    gt = parse_ground_truth(
        {
            "database": {
                "v": {
                    "subset": "validation",
                    "duration": 9,
                    "annotations": [{"segment": [1, 2], "label": "a"}],
                }
            }
        }
    )
    with pytest.raises(LofiError, match="video 'v' .* non-finite score"):
        evaluate(gt, [Segment("v", "a", 1.0, 2.0, float("nan"))], [0.5])


# every number of an annotation or results file has a physical bound, named in the one line


def gt_with(duration=50.0, segment=(1.0, 5.0), vid="v") -> dict:
    return {
        "database": {
            vid: {
                "subset": "validation",
                "duration": duration,
                "annotations": [{"segment": list(segment), "label": "a"}],
            }
        }
    }


def results_with(score=0.5, segment=(1.0, 5.0), vid="v") -> dict:
    return {"results": {vid: [{"label": "a", "score": score, "segment": list(segment)}]}}


@pytest.mark.parametrize(
    "data, expected",
    [
        (gt_with(duration=1e300), "'duration' must be a number >= 0.001 and <= 604800, got 1e+300"),
        (
            gt_with(duration=1e-300),
            "'duration' must be a number >= 0.001 and <= 604800, got 1e-300",
        ),
        (gt_with(duration=0), "'duration' must be a number >= 0.001"),
        (gt_with(duration=-5), "'duration' must be a number >= 0.001"),
        (
            gt_with(duration="1e300"),
            "'duration' must be a number >= 0.001 and <= 604800, got '1e300'",
        ),
        (gt_with(segment=(1, 1e300)), "'segment end' must be a number >= -604800 and <= 604800"),
        (gt_with(segment=(-1e300, 1)), "'segment start' must be a number >= -604800"),
        (gt_with(duration=10**5000), "'duration' must be a number, got <integer of about 5000"),
        (results_with(score=1e300), "'score' must be a number >= -1000000 and <= 1000000"),
        (results_with(segment=(0, 10**400)), "'segment end' must be a number"),
    ],
)
def test_numbers_out_of_bounds_are_one_line(data, expected):
    parse = parse_ground_truth if "database" in data else parse_results
    with pytest.raises(LofiError) as err:
        parse(data, "f.json")
    assert str(err.value).startswith("f.json: video 'v'") and "\n" not in str(err.value)
    assert expected in str(err.value), str(err.value)


def test_values_at_the_bounds_are_read():
    gt = parse_ground_truth(gt_with(duration=604800, segment=(-604800, 604800)))
    assert gt.videos["v"].duration == 604800 and gt.segments()[0].start == -604800
    assert parse_ground_truth(gt_with(duration=0.001)).videos["v"].duration == 0.001
    assert parse_results(results_with(score=-1e6))[0].score == -1e6
    assert parse_results(results_with(score=1e6))[0].score == 1e6


def test_offending_values_and_ids_are_shown_short_and_escaped():
    vid = "\x1b[2J" + "x" * 10_000
    with pytest.raises(LofiError) as err:
        parse_results(results_with(score="\x1b[31m" * 1000, vid=vid), "r.json")
    line = str(err.value)
    assert "\x1b" not in line and len(line) < 300 and line.startswith("r.json: video '\\x1b[2J")
    with pytest.raises(LofiError) as err:
        parse_ground_truth(gt_with(vid=vid, duration=-1), "g.json")
    assert "\x1b" not in str(err.value) and len(str(err.value)) < 300
    with pytest.raises(LofiError) as err:
        parse_results({"results": {"v": [{"label": 10**5000, "score": 1, "segment": [1, 2]}]}})
    assert "'label' must be a string, got <integer of about 5000 digits>" in str(err.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"database": {"v": {}, "v": {}}}', "key 'v' is given twice"),
        (
            '{"database": {"v": {"subset": "a", "duration": 5, "duration": 9, "annotations": []}}}',
            "key 'duration' is given twice",
        ),
        ('{"database": {"v": {"subset": "a", "duration": ' + "9" * 5000 + "}}}", "5000 digits"),
        ("[" * 100 + "]" * 100, "nested too deeply"),
    ],
)
@pytest.mark.parametrize("reader", [load_ground_truth, load_results])
def test_files_go_through_the_one_json_reader(tmp_path, text, expected, reader):
    # annotations and results read through runtime/documents.py: a key given twice, an integer
    # of thousands of digits, deep nesting are one line naming the file, not the last key winning
    path = tmp_path / "f.json"
    path.write_text(text)
    with pytest.raises(LofiError) as err:
        reader(path)
    assert str(path) in str(err.value) and expected in str(err.value)
