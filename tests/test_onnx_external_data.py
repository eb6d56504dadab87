"""The daemon's own reading of ONNX external-data locations (it does not install `onnx`), held
to what the onnx package itself says on models that keep tensors in every place one can."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_gesture.onnx_external_data import OnnxFormatError, external_data_locations

onnx = pytest.importorskip("onnx", reason="building test models needs onnx (the export extra)")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.external_data_helper import _get_all_tensors, uses_external_data  # noqa: E402


def _model_with_tensors_everywhere() -> onnx.ModelProto:
    """An initializer, a Constant node's tensor attribute, a sparse initializer, and an If
    whose branches hold their own initializers: every place ONNX Runtime reads tensors from."""
    w = numpy_helper.from_array(np.arange(64, dtype=np.float32).reshape(8, 8), "w")
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(
        np.ones((8, 8), np.float32), "c_value"))

    def branch(name: str, k: float) -> onnx.GraphProto:
        t = numpy_helper.from_array(np.full((8, 8), k, np.float32), f"{name}_t")
        return helper.make_graph([helper.make_node("Add", ["x", f"{name}_t"], [f"{name}_out"])],
                                 name, [], [helper.make_tensor_value_info(f"{name}_out",
                                                                          TensorProto.FLOAT, [8, 8])],
                                 initializer=[t])

    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.arange(32, dtype=np.float32), "s"),
        numpy_helper.from_array(np.arange(32, dtype=np.int64), "s_indices"), [8, 8])
    nodes = [
        const,
        helper.make_node("Add", ["w", "c"], ["wc"]),
        helper.make_node("Add", ["wc", "s"], ["x"]),
        helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
        helper.make_node("Greater", ["total", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", 1.0),
                         else_branch=branch("else", 2.0)),
    ]
    graph = helper.make_graph(
        nodes, "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 8])],
        initializer=[w, numpy_helper.from_array(np.zeros((), np.float32), "zero")],
        sparse_initializer=[sparse])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_every_external_tensor_is_found_as_onnx_sees_it(tmp_path: Path) -> None:
    model = _model_with_tensors_everywhere()
    path = tmp_path / "m.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=False,
                    size_threshold=0, convert_attribute=True)
    expected = {}
    for t in _get_all_tensors(onnx.load(str(path), load_external_data=False)):
        if uses_external_data(t):
            expected[t.name] = {e.key: e.value for e in t.external_data}["location"]
    # Every kind of place is covered: main graph, Constant attribute, If branches.
    assert {"w", "c_value", "then_t", "else_t"} <= set(expected)
    assert dict(external_data_locations(path)) == expected
    for location in expected.values():
        assert (tmp_path / location).is_file()


def test_a_model_in_one_file_names_none(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save_model(_model_with_tensors_everywhere(), str(path))
    assert external_data_locations(path) == []


def test_a_cut_or_empty_file_is_an_error_not_a_clean_bill(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save_model(_model_with_tensors_everywhere(), str(path), save_as_external_data=True,
                    location="data.bin", size_threshold=0)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 20])
    with pytest.raises(OnnxFormatError):
        external_data_locations(path)
    path.write_bytes(b"")
    with pytest.raises(OnnxFormatError, match="empty"):
        external_data_locations(path)
