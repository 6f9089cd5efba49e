"""The static TensorRT-10.x checker: today's exported graphs pass, graphs TensorRT's ONNX parser
would reject fail, and every export runs it."""

from __future__ import annotations

import onnx
import pytest
from lofi.export.trt_check import check_tensorrt_ready, tensorrt_problems
from lofi.export.trt_ops import SUPPORTED
from lofi.runtime.errors import LofiError
from onnx import TensorProto, helper


def _model(nodes, inputs, outputs, inits=(), opset=18, domain_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    opsets = [helper.make_opsetid("", opset), *domain_opsets]
    return helper.make_model(graph, opset_imports=opsets)


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


U8, F32 = TensorProto.UINT8, TensorProto.FLOAT


def _cast_then_transpose(first: str) -> onnx.ModelProto:
    """uint8 frames -> (Cast, Transpose) in either order -> float."""
    perm = helper.make_attribute("perm", [0, 3, 1, 2])
    if first == "cast":
        nodes = [
            helper.make_node("Cast", ["x"], ["c"], to=F32),
            helper.make_node("Transpose", ["c"], ["y"]),
        ]
    else:
        nodes = [
            helper.make_node("Transpose", ["x"], ["t"]),
            helper.make_node("Cast", ["t"], ["y"], to=F32),
        ]
    nodes[int(first == "cast")].attribute.append(perm)
    return _model(nodes, [_vi("x", U8, [1, 4, 4, 3])], [_vi("y", F32, [1, 3, 4, 4])])


def test_cast_first_passes_and_a_uint8_transpose_fails():
    assert tensorrt_problems(_cast_then_transpose("cast")) == []
    problems = tensorrt_problems(_cast_then_transpose("transpose"))
    assert len(problems) == 1 and "UINT8 tensor 'x'" in problems[0] and "Transpose" in problems[0]


def _unary(op: str, elem=F32, **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    return _model([node], [_vi("x", elem, [1, 2, 4, 4])], [_vi("y", elem, None)])


@pytest.mark.parametrize(
    "model, reason",
    [
        (_unary("Relu", TensorProto.DOUBLE), "network tensor 'x' has type DOUBLE"),
        (_unary("Not", TensorProto.BOOL), None),
        (_unary("Relu", TensorProto.BOOL), "BOOL tensor 'x'"),
        (_unary("Det"), "operator not supported"),
        (_unary("Relu"), None),
        (_unary("MaxPool", kernel_shape=[2, 2], dilations=[2, 2]), "dilations"),
        (_unary("MaxPool", kernel_shape=[2, 2, 2, 2]), "not 1D, 2D or 3D"),
        (_unary("Relu", TensorProto.INT8), "network tensor 'x' has type INT8"),
    ],
)
def test_ops_types_and_attributes(model, reason):
    problems = tensorrt_problems(model)
    if reason is None:
        assert problems == []
    else:
        assert any(reason in p for p in problems), problems


def test_opset_domain_and_constant_axes():
    relu = helper.make_node("Relu", ["x"], ["y"])
    io = ([_vi("x", F32, [2])], [_vi("y", F32, [2])])
    assert "opset 21 outside 9..20" in tensorrt_problems(_model([relu], *io, opset=21))
    custom = helper.make_node("Foo", ["x"], ["y"], domain="com.example")
    problems = tensorrt_problems(
        _model([custom], *io, domain_opsets=[helper.make_opsetid("com.example", 1)])
    )
    assert any("custom domain 'com.example'" in p for p in problems)
    # ReduceMean's axes: an initializer passes, a graph input fails
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
    mean = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=1)
    x = _vi("x", F32, [2, 3])
    y = _vi("y", F32, [1, 3])
    assert tensorrt_problems(_model([mean], [x], [y], inits=[axes])) == []
    dyn = _model([mean], [x, _vi("axes", TensorProto.INT64, [1])], [y])
    assert any("not an initializer or Constant" in p for p in tensorrt_problems(dyn))


def test_resize_modes():
    def resize(**attrs):
        scales = helper.make_tensor("s", F32, [4], [1, 1, 2, 2])
        node = helper.make_node("Resize", ["x", "", "s"], ["y"], **attrs)
        return _model([node], [_vi("x", F32, [1, 1, 2, 2])], [_vi("y", F32, None)], [scales])

    assert tensorrt_problems(resize(mode="linear")) == []
    assert any("antialias" in p for p in tensorrt_problems(resize(mode="linear", antialias=1)))
    assert any("'cubic'" in p for p in tensorrt_problems(resize(mode="cubic")))
    bad = resize(coordinate_transformation_mode="tf_crop_and_resize")
    assert any("tf_crop_and_resize" in p for p in tensorrt_problems(bad))


def test_the_table_is_the_documented_one():
    # a few rows as onnx-tensorrt documents them for TensorRT 10.x
    assert SUPPORTED["Cast"] >= {"UINT8", "FLOAT", "FLOAT16"}
    assert "UINT8" not in SUPPORTED["Transpose"] and "UINT8" not in SUPPORTED["Conv"]
    assert SUPPORTED["Conv"] == {"FLOAT", "FLOAT16", "BFLOAT16"}
    assert "Det" not in SUPPORTED and "Unique" not in SUPPORTED and len(SUPPORTED) == 150


def test_exported_bundles_pass_and_the_old_permute_first_encoder_fails(tmp_path, tiny_bundle):
    import torch
    from lofi.trainer.checkpoint import build_encoder
    from lofi.trainer.encoder import ExportableEncoder

    from tests.conftest import tiny_config

    for name in ("encoder.onnx", "head.onnx"):
        check_tensorrt_ready(tiny_bundle / name)
        assert tensorrt_problems(onnx.load(str(tiny_bundle / name))) == []
    first = onnx.load(str(tiny_bundle / "encoder.onnx")).graph.node[0]
    assert first.op_type == "Cast" and first.input[0] == "frames"

    # the graph exports used to write: transpose the uint8 frames, then cast
    cfg = tiny_config()
    cfg.data.k = 2
    old = ExportableEncoder(build_encoder(cfg), [0.5] * 3, [0.25] * 3).eval()
    path = tmp_path / "old.onnx"
    frames = torch.randint(0, 256, (2, 2, 32, 32, 3), dtype=torch.uint8)
    torch.onnx.export(
        old, (frames,), str(path), input_names=["frames"], dynamo=True, opset_version=18
    )
    with pytest.raises(LofiError, match=r"old.onnx would not build with TensorRT 10.x.*UINT8"):
        check_tensorrt_ready(path)
