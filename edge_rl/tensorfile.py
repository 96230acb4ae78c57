"""Strict reader and writer for the safetensors format, in numpy alone.

Why not the `safetensors` package: the device side keeps to numpy plus pure Python, and a
loader that refuses anything odd (overlapping or gapped offsets, trailing bytes, unknown dtypes,
a header that is not a JSON object) is easier to audit when it is forty lines we own. The byte
layout is the public one (8-byte little-endian header length, JSON header, raw little-endian
data), so files interoperate with `safetensors.numpy` both ways; a test checks that.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from edge_rl.atomic import write_atomic
from edge_rl.errors import BadInput

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_CODES = {dt: code for code, dt in _DTYPES.items()}
_MAX_HEADER = 16 * 1024 * 1024


class TensorFileError(BadInput):
    """A tensor file is malformed; the message says what is wrong."""


def save_tensors(path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` atomically (temp file + rename), in sorted name order."""
    write_atomic(path, tensor_bytes(tensors, metadata))


def tensor_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors encoding of `tensors`, in sorted name order."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        if dtype not in _CODES:
            raise TensorFileError(f"tensor {name!r}: dtype {arr.dtype} is not storable")
        data = arr.astype(dtype, copy=False).tobytes()
        header[name] = {"dtype": _CODES[dtype], "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # align the data section, as the reference writer does
    return b"".join([struct.pack("<Q", len(head)), head, *blobs])


def load_tensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file, refusing anything that is not exactly well formed."""
    return parse_tensors(Path(path).read_bytes(), str(path))


def parse_tensors(raw: bytes, path: str = "<bytes>") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse safetensors bytes (`path` names them in errors), with the checks of `load_tensors`."""
    if len(raw) < 8:
        raise TensorFileError(f"{path}: truncated (no header length)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > _MAX_HEADER or 8 + n > len(raw):
        raise TensorFileError(f"{path}: header length {n} exceeds the file")
    try:
        header = json.loads(raw[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TensorFileError(f"{path}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise TensorFileError(f"{path}: header is not a JSON object")
    metadata = header.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise TensorFileError(f"{path}: __metadata__ must map strings to strings")
    data = memoryview(raw)[8 + n :]
    spans, out = [], {}
    for name, info in header.items():
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            start, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise TensorFileError(f"{path}: tensor {name!r} has a malformed entry") from None
        if any(d < 0 for d in shape) or end - start != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
            raise TensorFileError(f"{path}: tensor {name!r} size does not match its shape and dtype")
        if start < 0 or end > len(data):
            raise TensorFileError(f"{path}: tensor {name!r} lies outside the file (truncated?)")
        spans.append((start, end, name))
        out[name] = np.frombuffer(data[start:end], dtype=dtype).reshape(shape).copy()
    position = 0
    for start, end, name in sorted(spans):
        if start != position:
            raise TensorFileError(f"{path}: tensor {name!r} overlaps or leaves a gap in the data")
        position = end
    if position != len(data):
        raise TensorFileError(f"{path}: {len(data) - position} bytes of data are unaccounted for (truncated or padded)")
    return out, metadata
