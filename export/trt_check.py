"""Static TensorRT-readiness check of an ONNX graph against onnx-tensorrt's documented support.

TensorRT is not installed where models are exported and tested, so a graph TensorRT's parser
would reject (an unsupported op, attribute or tensor type) must be caught here, at export, and
not on the edge device. The rules come from `trt_ops` (its source is named there).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import onnx
from lofi.export.trt_ops import OPSET_MAX, OPSET_MIN, SOURCE, SUPPORTED, TENSOR_TYPES
from lofi.runtime.errors import LofiError

# the tensor whose type the table's "Supported Types" column constrains, when not input 0
_TYPED_BY_OUTPUT = {"Constant", "ConstantOfShape", "RandomNormal", "RandomUniform"}
_TYPED_INPUT = {"Where": 1}
# "`axes` must be an initializer" (or a constant), by input position at opset 13+
_CONSTANT_INPUTS = {
    **{
        f"Reduce{r}": 1
        for r in [
            "L1",
            "L2",
            "LogSum",
            "LogSumExp",
            "Max",
            "Mean",
            "Min",
            "Prod",
            "Sum",
            "SumSquare",
        ]
    },
    "Slice": 3,
    "Squeeze": 1,
    "Unsqueeze": 1,
    "Pad": 3,
    "CumSum": 1,
    "OneHot": 1,
}
_RESIZE_TRANSFORMS = {
    "half_pixel",
    "pytorch_half_pixel",
    "tf_half_pixel_for_nn",
    "asymmetric",
    "align_corners",
}
_RESIZE_NEAREST = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}


def _type_name(elem_type: int) -> str:
    return onnx.TensorProto.DataType.Name(elem_type)


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _decode(value) -> object:
    return value.decode() if isinstance(value, bytes) else value


def _attribute_problems(node: onnx.NodeProto, constants: set[str]) -> Iterator[str]:
    """The restrictions column of the operators table, for the ops that carry one."""
    op, a = node.op_type, _attrs(node)
    if op == "Constant" and {"sparse_value", "value_string", "value_strings"} & set(a):
        yield "a sparse or string Constant"
    if op in ("AveragePool", "MaxPool", "LpPool"):
        if any(d != 1 for d in a.get("dilations", [])):
            yield f"{op} dilations other than 1"
        # the table says 2D or 3D; the same branch's importer (importerUtils.cpp, poolingHelper)
        # unsqueezes 1D pooling to 2D, so 1D is accepted too
        if op != "LpPool" and len(a.get("kernel_shape", [])) not in (1, 2, 3):
            yield f"{op} that is not 1D, 2D or 3D"
        if op == "MaxPool" and len(node.output) > 1 and node.output[1]:
            yield "MaxPool's Indices output"
    if op == "Resize":
        if a.get("antialias", 0):
            yield "Resize with antialias"
        mode = _decode(a.get("coordinate_transformation_mode", b"half_pixel"))
        if mode not in _RESIZE_TRANSFORMS:
            yield f"Resize coordinate_transformation_mode {mode!r}"
        if _decode(a.get("mode", b"nearest")) not in ("nearest", "linear"):
            yield f"Resize mode {_decode(a['mode'])!r}"
        if _decode(a.get("nearest_mode", b"round_prefer_floor")) not in _RESIZE_NEAREST:
            yield f"Resize nearest_mode {_decode(a['nearest_mode'])!r}"
        if _decode(a.get("keep_aspect_ratio_policy", b"stretch")) != "stretch":
            yield "Resize keep_aspect_ratio_policy other than 'stretch'"
    if op == "TopK" and a.get("sorted", 1) != 1:
        yield "TopK with sorted=0"
    if op == "ScatterND" and _decode(a.get("reduction", b"none")) != "none":
        yield "ScatterND with a reduction"
    if op == "LayerNormalization" and any(node.output[1:]):
        yield "LayerNormalization's Mean/InvStdDev outputs"
    if op == "LSTM" and (a.get("input_forget", 0) or a.get("layout", 0)):
        yield "LSTM with input_forget or layout set"
    if op == "Dropout" and len(node.input) > 2 and node.input[2] and node.input[2] not in constants:
        yield "Dropout whose training_mode is not a constant"
    i = _CONSTANT_INPUTS.get(op)
    if i is not None and len(node.input) > i and node.input[i] and node.input[i] not in constants:
        yield f"{op} input {node.input[i]!r} that is not an initializer or Constant"


def _graph_problems(graph: onnx.GraphProto, types: dict[str, str]) -> Iterator[str]:
    constants = {t.name for t in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    for node in graph.node:
        label = f"node {node.name or node.output[0]!r} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            yield f"{label}: custom domain {node.domain!r}"
            continue
        allowed = SUPPORTED.get(node.op_type)
        if allowed is None:
            yield f"{label}: operator not supported"
            continue
        if node.op_type in _TYPED_BY_OUTPUT:
            checked = [node.output[0]]
        elif node.op_type in ("Cast", "CastLike"):
            checked = [node.input[0], node.output[0]]
        else:
            checked = [node.input[_TYPED_INPUT.get(node.op_type, 0)]] if node.input else []
        for name in checked:
            t = types.get(name)
            if t is None:
                yield f"{label}: tensor {name!r} has no known type"
            elif t not in allowed and t != "UINT8":  # UINT8: one message, below
                yield f"{label}: {t} tensor {name!r} (supported: {', '.join(sorted(allowed))})"
        if node.op_type not in ("Cast", "CastLike"):
            for name in [*node.input, *node.output]:
                if name and types.get(name) == "UINT8":
                    yield (
                        f"{label}: UINT8 tensor {name!r} (UINT8 is supported only at network "
                        "inputs/outputs and in Cast: cast first)"
                    )
                    break
        for a in _attribute_problems(node, constants):
            yield f"{label}: {a}"
        for attr in node.attribute:  # If/Loop/Scan bodies
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _graph_problems(sub, types)


def tensorrt_problems(model: onnx.ModelProto) -> list[str]:
    """Every reason onnx-tensorrt (TensorRT 10.x) would not parse this model; empty if none."""
    problems = []
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and not OPSET_MIN <= imp.version <= OPSET_MAX:
            problems.append(f"opset {imp.version} outside {OPSET_MIN}..{OPSET_MAX}")
        elif imp.domain not in ("", "ai.onnx"):
            problems.append(f"custom opset domain {imp.domain!r}")
    if model.functions:
        problems.append(f"model-local functions ({', '.join(f.name for f in model.functions)})")
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types: dict[str, str] = {}
    for v in [*g.input, *g.output, *g.value_info]:
        if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type:
            types[v.name] = _type_name(v.type.tensor_type.elem_type)
    for t in g.initializer:
        types[t.name] = _type_name(t.data_type)
    for v in [*g.input, *g.output]:
        t = types.get(v.name)
        if t not in TENSOR_TYPES:
            problems.append(f"network tensor {v.name!r} has type {t}")
    problems += list(_graph_problems(g, types))
    return problems


def check_tensorrt_ready(path: Path) -> None:
    """Raise a one-line LofiError naming the file and its first problem (and how many more)."""
    problems = tensorrt_problems(onnx.load(str(path), load_external_data=False))
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise LofiError(
            f"{path.name} would not build with TensorRT 10.x ({SOURCE}): {problems[0]}{more}"
        )
