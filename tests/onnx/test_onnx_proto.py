"""caffeport's own ONNX encoding (`caffeport.onnx.proto`): the field numbers are onnx's, and the bytes are what
onnx's own serializer writes for the same messages, so a file caffeport streams without importing onnx is the
file onnx would have written."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import caffeport
from caffeport.onnx.export import IR_VERSIONS, build, newest_opset
from caffeport.onnx.proto import FIELDS, Attribute, Tensor, ValueInfo, make_node, to_model_proto
from caffeport.onnx.stream import fill
from tests.onnx.test_onnx_export import SHARED, _files

_CLASSES = {"ModelProto": onnx.ModelProto, "OperatorSetIdProto": onnx.OperatorSetIdProto,
            "StringStringEntryProto": onnx.StringStringEntryProto, "GraphProto": onnx.GraphProto,
            "NodeProto": onnx.NodeProto, "AttributeProto": onnx.AttributeProto, "TensorProto": onnx.TensorProto,
            "ValueInfoProto": onnx.ValueInfoProto, "TypeProto": onnx.TypeProto,
            "TypeProto.Tensor": onnx.TypeProto.Tensor, "TensorShapeProto": onnx.TensorShapeProto,
            "TensorShapeProto.Dimension": onnx.TensorShapeProto.Dimension}


def test_every_field_number_is_onnxs() -> None:
    assert set(FIELDS) == set(_CLASSES)
    for message, fields in FIELDS.items():
        descriptor = _CLASSES[message].DESCRIPTOR
        for name, number in fields.items():
            assert descriptor.fields_by_name[name].number == number, f"{message}.{name}"


def test_the_ir_version_table_is_onnxs() -> None:
    """The opset -> IR version pairs (and the release that brought each opset) are onnx.helper.VERSION_TABLE's."""
    first: dict[int, tuple[tuple[int, int], int]] = {}
    for release, ir_version, opset, *_ in helper.VERSION_TABLE:
        major, minor = (int(part) for part in release.split(".")[:2])
        if opset >= min(IR_VERSIONS):
            first.setdefault(opset, ((major, minor), ir_version))
    assert {k: v for k, v in first.items() if k in IR_VERSIONS} == IR_VERSIONS
    assert newest_opset() == min(max(IR_VERSIONS), onnx.defs.onnx_opset_version())


@pytest.mark.parametrize("value", [3, -2, True, 0.25, -1.5, "NOTSET", b"\x00\x01", [1, -2, 3], [0.5, 2.0],
                                   ["a", "bc"], []])
def test_attributes_encode_as_onnx_helper_makes_them(value: object) -> None:
    kind = {"attr_type": onnx.AttributeProto.INTS} if value == [] else {}
    want = helper.make_attribute("x", value, **kind)
    assert Attribute("x", value).encode() == want.SerializeToString()


def test_tensors_value_infos_and_nodes_encode_as_onnx_makes_them() -> None:
    for array in (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([-1, 5], np.int64), np.float32(2.5),
                  np.zeros((0, 3), np.float32), np.array([True, False]), np.array([7], np.int32)):
        assert Tensor.from_array(array, "t").encode() == numpy_helper.from_array(array, "t").SerializeToString()
    for shape in ([1, 3, 224, 224], ["N", 3, None], [], None):
        want = helper.make_tensor_value_info("v", onnx.TensorProto.FLOAT, shape)
        assert ValueInfo("v", 1, shape).encode() == want.SerializeToString()
    value = Tensor.from_array(np.array([1.5], np.float32), "value")
    node = make_node("ConstantOfShape", ["s"], ["y"], name="n", value=value)
    want = helper.make_node("ConstantOfShape", ["s"], ["y"], name="n",
                            value=numpy_helper.from_array(np.array([1.5], np.float32), "value"))
    assert node.encode() == want.SerializeToString()
    node = make_node("Conv", ["x", "w", ""], ["y"], name="conv", pads=[1, 1, 1, 1], group=2, strides=[2, 2])
    want = helper.make_node("Conv", ["x", "w", ""], ["y"], name="conv", pads=[1, 1, 1, 1], group=2, strides=[2, 2])
    assert node.encode() == want.SerializeToString()


@pytest.mark.parametrize("name", sorted(SHARED))
def test_a_whole_model_is_the_bytes_onnx_serializes(name: str) -> None:
    """Every shared model: caffeport's bytes parse with onnx and serialize back to the very same bytes."""
    net = caffeport.read(*_files(name))
    model, lazy = build(net)
    fill(model, lazy)
    ours = model.encode()
    proto = to_model_proto(model)
    assert proto.SerializeToString() == ours
    assert len(proto.graph.node) == len(model.graph.node) > 0
    onnx.checker.check_model(proto, full_check=True)
