"""Which external-data files an ONNX model makes ONNX Runtime read, without the onnx package.

A model over 2 GB, or one saved with `save_as_external_data`, keeps tensors in other files named
by each tensor's `external_data` `location`, relative to the model's folder. ONNX Runtime opens
them as it loads; the bundle check needs their names to hold them to the manifest. The daemon
does not install `onnx` (the export does), so this reads just enough of the protobuf wire format:
the graphs (main, node attributes' subgraphs, training graphs), their initializers and sparse
initializers, and tensor-valued node attributes (Constant). Weight payloads are skipped unread.
"""

from __future__ import annotations

import mmap
from pathlib import Path

# Field numbers from onnx.proto (stable since IR version 3).
_MODEL_GRAPH, _MODEL_TRAINING_INFO, _MODEL_FUNCTIONS = 7, 20, 25
_TRAINING_GRAPHS = (1, 2)  # initialization, algorithm
_FUNCTION_NODE = 7
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_NODE_ATTRIBUTE = 5
_ATTR_TENSORS = (5, 10)  # t, tensors
_ATTR_GRAPHS = (6, 11)  # g, graphs
_ATTR_SPARSE = (22, 23)  # sparse_tensor, sparse_tensors
_SPARSE_TENSORS = (1, 2)  # values, indices
_TENSOR_EXTERNAL_DATA, _TENSOR_NAME = 13, 8
_ENTRY_KEY, _ENTRY_VALUE = 1, 2


class OnnxFormatError(ValueError):
    """The file is not a protobuf message this reader can walk."""


def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise OnnxFormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise OnnxFormatError("varint too long")


def _fields(buf, start: int, end: int):
    """(field number, start, end) of each length-delimited field of the message in buf[start:end];
    other wire types are skipped."""
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise OnnxFormatError(f"field {field} runs past the end of its message")
            yield field, pos, pos + n
            pos += n
        else:
            raise OnnxFormatError(f"unsupported wire type {wire} (field {field})")
    if pos != end:
        raise OnnxFormatError("a field runs past the end of its message")


def _tensor(buf, start: int, end: int, out: list[tuple[str, str]]) -> None:
    name, location = "", None
    for field, a, b in _fields(buf, start, end):
        if field == _TENSOR_NAME:
            name = bytes(buf[a:b]).decode("utf-8", "replace")
        elif field == _TENSOR_EXTERNAL_DATA:
            key = value = None
            for f, x, y in _fields(buf, a, b):
                if f == _ENTRY_KEY:
                    key = bytes(buf[x:y]).decode("utf-8", "replace")
                elif f == _ENTRY_VALUE:
                    value = bytes(buf[x:y]).decode("utf-8", "replace")
            if key == "location" and value is not None:
                location = value
    if location is not None:
        out.append((name, location))


def _sparse(buf, start: int, end: int, out: list) -> None:
    for field, a, b in _fields(buf, start, end):
        if field in _SPARSE_TENSORS:
            _tensor(buf, a, b, out)


def _nodes_attribute(buf, start: int, end: int, out: list) -> None:
    for field, a, b in _fields(buf, start, end):
        if field != _NODE_ATTRIBUTE:
            continue
        for f, x, y in _fields(buf, a, b):
            if f in _ATTR_TENSORS:
                _tensor(buf, x, y, out)
            elif f in _ATTR_GRAPHS:
                _graph(buf, x, y, out)
            elif f in _ATTR_SPARSE:
                _sparse(buf, x, y, out)


def _graph(buf, start: int, end: int, out: list) -> None:
    for field, a, b in _fields(buf, start, end):
        if field == _GRAPH_INITIALIZER:
            _tensor(buf, a, b, out)
        elif field == _GRAPH_SPARSE_INITIALIZER:
            _sparse(buf, a, b, out)
        elif field == _GRAPH_NODE:
            _nodes_attribute(buf, a, b, out)


def external_data_locations(path: Path) -> list[tuple[str, str]]:
    """(tensor name, location) for every tensor of the model stored in another file; location
    is as written in the model, relative to the model's folder."""
    out: list[tuple[str, str]] = []
    with open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            raise OnnxFormatError("empty file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            buf = memoryview(mm)
            try:
                for field, a, b in _fields(buf, 0, len(buf)):
                    if field == _MODEL_GRAPH:
                        _graph(buf, a, b, out)
                    elif field == _MODEL_TRAINING_INFO:
                        for f2, x, y in _fields(buf, a, b):
                            if f2 in _TRAINING_GRAPHS:
                                _graph(buf, x, y, out)
                    elif field == _MODEL_FUNCTIONS:
                        for f2, x, y in _fields(buf, a, b):
                            if f2 == _FUNCTION_NODE:
                                _nodes_attribute(buf, x, y, out)
            finally:
                buf.release()
    return out
