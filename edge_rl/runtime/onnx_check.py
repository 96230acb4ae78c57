"""Refuse an ONNX model that reaches outside its own bytes, before ONNX Runtime parses it.

An ONNX tensor may keep its data in an external file (`data_location = EXTERNAL`, with a
path in `external_data`); ONNX Runtime then opens that path relative to the working directory.
A bundle's model must be self-contained, so this walks the protobuf wire format itself (no
`onnx` package on a device) through every place a tensor can sit: graph initializers, sparse
initializers, attribute tensors, subgraphs of control-flow nodes, functions and training graphs.
Malformed bytes are refused here too, with one line instead of a runtime's traceback.
"""

from __future__ import annotations

from edge_rl.errors import ModelError

# message -> {field number: message type of that (length-delimited) field}; only the paths to tensors
SCHEMA: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node", 11: "attribute"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}
TENSOR_EXTERNAL_DATA, TENSOR_DATA_LOCATION, EXTERNAL = 13, 14, 1
MAX_DEPTH = 64  # subgraphs nest; a hostile file could nest them until the stack breaks


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ModelError("model.onnx is not a valid ONNX protobuf (bad varint)")


def _walk(data: bytes, start: int, end: int, message: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ModelError("model.onnx nests subgraphs deeper than 64 levels")
    children, pos = SCHEMA[message], start
    while pos < end:
        key, pos = _varint(data, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise ModelError("model.onnx is not a valid ONNX protobuf (field number 0)")
        if wire == 0:
            value, pos = _varint(data, pos, end)
            if message == "tensor" and field == TENSOR_DATA_LOCATION and value == EXTERNAL:
                raise ModelError(
                    "model.onnx keeps tensor data in an external file; bundles carry self-contained models"
                )
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            length, pos = _varint(data, pos, end)
            if pos + length > end:
                raise ModelError("model.onnx is not a valid ONNX protobuf (a field runs past its end)")
            if message == "tensor" and field == TENSOR_EXTERNAL_DATA:
                raise ModelError("model.onnx refers to external data; bundles carry self-contained models")
            if field in children:
                _walk(data, pos, pos + length, children[field], depth + 1)
            pos += length
        else:
            raise ModelError(f"model.onnx is not a valid ONNX protobuf (wire type {wire})")
    if pos != end:
        raise ModelError("model.onnx is not a valid ONNX protobuf (truncated field)")


def check_self_contained(model: bytes) -> None:
    """Raise ModelError unless `model` is well-formed protobuf whose tensors all live inside it."""
    if not model:
        raise ModelError("model.onnx is empty")
    _walk(model, 0, len(model), "model", 0)
