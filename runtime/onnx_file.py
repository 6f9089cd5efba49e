"""The external-data references of an ONNX model, read from its protobuf bytes.

The runtime is torch-free and does not depend on the `onnx` package, yet it must know every file
ONNX Runtime would open for a graph (tensors stored outside the .onnx file, named by their
`location`) so that each one is hashed and stays inside the bundle. Only the few message fields
that can hold a tensor are walked: graphs (initializers, sparse initializers, nodes), node
attributes (tensors and subgraphs), functions and training graphs. Everything else is skipped by
its length, so a 100 MB model is read without copying its weights."""

from __future__ import annotations

from dataclasses import dataclass

from lofi.runtime.errors import LofiError

# message kind -> {field number: kind of the embedded message}
_SCHEMA: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}
_TENSOR_NAME, _TENSOR_EXTERNAL, _TENSOR_LOCATION = 8, 13, 14
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
MAX_NESTING = 64  # subgraphs inside attributes inside subgraphs ...


@dataclass(frozen=True)
class ExternalData:
    """One tensor's bytes stored outside the model: `location` relative to the model's folder,
    `offset` and `length` (None: to the end of the file) as the model states them."""

    tensor: str
    location: str
    offset: int
    length: int | None


def _varint(buf: memoryview, pos: int, where: str) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise LofiError(f"{where} is not an ONNX model (bad protobuf varint)")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview, where: str):
    """(field number, wire type, value) of one protobuf message: an int for varints, the bytes
    for length-delimited fields, None for fixed-width numbers."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, where)
        number, wire = key >> 3, key & 7
        value: int | memoryview | None = None
        if wire == 0:
            value, pos = _varint(buf, pos, where)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(buf, pos, where)
            value = buf[pos : pos + size]
            pos += size
        else:
            raise LofiError(f"{where} is not an ONNX model (protobuf wire type {wire})")
        if pos > len(buf):
            raise LofiError(f"{where} is not an ONNX model (truncated protobuf)")
        yield number, wire, value


def _text(value: memoryview, where: str) -> str:
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise LofiError(f"{where}: a tensor's name or external-data entry is not UTF-8") from None


def _count(text: str, key: str, tensor: str, where: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise LofiError(
            f"{where}: tensor {tensor!r} external-data {key} must be a decimal integer >= 0, "
            f"got {text[:30]!r}"
        )
    return int(text)


def _tensor(buf: memoryview, where: str) -> ExternalData | None:
    name, location, entries = "", 0, {}
    for number, wire, value in _fields(buf, where):
        if number == _TENSOR_NAME and wire == 2:
            name = _text(value, where)
        elif number == _TENSOR_LOCATION and wire == 0:
            location = value
        elif number == _TENSOR_EXTERNAL and wire == 2:
            key = val = ""
            for n, w, v in _fields(value, where):
                if w == 2 and n in (1, 2):
                    key, val = (_text(v, where), val) if n == 1 else (key, _text(v, where))
            entries[key] = val
    if location != _EXTERNAL and not entries:
        return None
    if "location" not in entries:
        raise LofiError(f"{where}: tensor {name!r} is stored externally but names no location")
    offset = _count(entries.get("offset", "0"), "offset", name, where)
    length = entries.get("length")
    size = None if length is None else _count(length, "length", name, where)
    return ExternalData(name, entries["location"], offset, size)


def external_data(model: bytes, where: str) -> list[ExternalData]:
    """Every tensor of the model whose bytes live in another file; `where`
    names the model in error lines. Bytes that are not a protobuf are refused in one line."""
    found: list[ExternalData] = []
    stack: list[tuple[memoryview, str, int]] = [(memoryview(model), "model", 0)]
    while stack:
        buf, kind, depth = stack.pop()
        if depth > MAX_NESTING:
            raise LofiError(f"{where}: graphs nested more than {MAX_NESTING} levels deep")
        if kind == "tensor":
            ref = _tensor(buf, where)
            if ref is not None:
                found.append(ref)
            continue
        inner = _SCHEMA[kind]
        for number, wire, value in _fields(buf, where):
            if number in inner:
                if wire != 2:
                    raise LofiError(f"{where} is not an ONNX model (field {number} of a {kind})")
                stack.append((value, inner[number], depth + 1))
    return found
