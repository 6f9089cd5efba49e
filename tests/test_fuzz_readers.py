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

# values a hand-edited or machine-broken file holds where a number or a name should be
ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "1.5", "nan", "-inf", "1e999", "abc", "\x00"]),
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
    return all(
        math.isfinite(s.start)
        and math.isfinite(s.end)
        and math.isfinite(s.score)
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
    assert all(math.isfinite(v.duration) and v.duration > 0 for v in gt.videos.values())
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
                node[path[-1]] = draw(ODD)
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
