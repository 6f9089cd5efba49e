"""The runtime's own reader of ONNX external-data references agrees with the onnx package, and
bytes that are not a model (random, truncated, nested too deeply) are one LofiError, never
another exception: a hostile bundle can list a hostile graph with a matching hash."""

from __future__ import annotations

import random

import numpy as np
import onnx
import pytest
from lofi.runtime.errors import LofiError
from lofi.runtime.onnx_file import MAX_NESTING, external_data
from onnx import TensorProto, helper, numpy_helper


def _model(tmp_path, threshold: int) -> bytes:
    weights = [numpy_helper.from_array(np.ones(n, np.float32), f"w{n}") for n in (4, 400)]
    sub = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones(300)))],
        "then",
        [],
        [helper.make_tensor_value_info("c", TensorProto.DOUBLE, [300])],
    )
    node = helper.make_node("If", ["cond"], ["c"], then_branch=sub, else_branch=sub)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("c", TensorProto.DOUBLE, [300])],
        weights,
    )
    path = tmp_path / "m.onnx"
    onnx.save_model(
        helper.make_model(graph),
        str(path),
        save_as_external_data=True,
        location="m.data",
        size_threshold=threshold,
        all_tensors_to_one_file=True,
    )
    return path.read_bytes()


def test_the_references_agree_with_the_onnx_package(tmp_path):
    model = onnx.load_from_string(_model(tmp_path, 1024))
    for branch in ("then_branch", "else_branch"):  # tensors inside subgraphs' attributes too
        graph = next(a.g for a in model.graph.node[0].attribute if a.name == branch)
        tensor = graph.node[0].attribute[0].t
        tensor.name = branch
        onnx.external_data_helper.set_external_data(tensor, "m.data", offset=8, length=2400)
        tensor.ClearField("raw_data")
    raw = model.SerializeToString()
    want = set()
    for t in onnx.external_data_helper._get_all_tensors(model):
        if t.data_location == TensorProto.EXTERNAL:
            info = onnx.external_data_helper.ExternalDataInfo(t)
            want.add((t.name, info.location, info.offset or 0, info.length))
    got = {(r.tensor, r.location, r.offset, r.length) for r in external_data(raw, "m.onnx")}
    assert got == want and len(got) == 3  # the 400-float initializer and both branches' constants


def test_a_model_without_external_data_has_no_references(tmp_path):
    assert external_data(_model(tmp_path, 1 << 30), "m.onnx") == []


def test_any_bytes_are_references_or_one_line(tmp_path):
    raw = _model(tmp_path, 1024)
    rng = random.Random(0)
    cases = [raw[:n] for n in range(0, len(raw), 7)]
    cases += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))) for _ in range(300)]
    for _ in range(300):
        flipped = bytearray(raw)
        flipped[rng.randrange(len(raw))] = rng.randrange(256)
        cases.append(bytes(flipped))
    for data in cases:
        try:
            refs = external_data(data, "m.onnx")
        except LofiError as exc:
            assert "\n" not in str(exc) and str(exc).startswith("m.onnx")
        else:
            assert all(isinstance(r.location, str) and r.offset >= 0 for r in refs)


def _nested(depth: int) -> bytes:
    """A graph whose node's attribute holds a graph whose node's attribute ... `depth` deep."""
    graph = b""
    for _ in range(depth):
        attribute = b"\x32" + _len(graph) + graph  # AttributeProto.g (6)
        node = b"\x2a" + _len(attribute) + attribute  # NodeProto.attribute (5)
        graph = b"\x0a" + _len(node) + node  # GraphProto.node (1)
    return b"\x3a" + _len(graph) + graph  # ModelProto.graph (7)


def _len(b: bytes) -> bytes:
    n, out = len(b), bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def test_nesting_is_bounded():
    assert external_data(_nested(10), "m.onnx") == []
    with pytest.raises(LofiError, match="nested more than"):
        external_data(_nested(MAX_NESTING), "m.onnx")


@pytest.mark.parametrize(
    "entries, reason",
    [
        ({"offset": "0"}, "names no location"),
        ({"location": "d", "offset": "-1"}, "offset must be a decimal integer"),
        ({"location": "d", "length": "1e3"}, "length must be a decimal integer"),
    ],
)
def test_bad_external_entries_are_one_line(entries, reason):
    t = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in entries.items():
        t.external_data.add(key=k, value=v)
    model = helper.make_model(helper.make_graph([], "g", [], [], [t]))
    with pytest.raises(LofiError, match=reason):
        external_data(model.SerializeToString(), "m.onnx")
